"""Which experiment a results folder holds, so that no run writes another experiment's outputs into it.

An experiment is its data (folder, layout, labels CSV; the demo's settings when the demo makes the data)
and the config files that define it. A run whose data or config files differ from those recorded in
``results/experiment.json`` is refused when the workflow loads (run, dry run, --report, --unlock alike),
with a message naming both and the fix: the usual cause is a command given without the ``--configfile``
the experiment was started with, which loads the demo config and would write the demo over the user's
images table, manifest and shards. Edits inside the same config files, and ``--config`` settings, are
changes of the same experiment: Snakemake re-runs what they change.

Paths inside the working folder are recorded relative to it, so a copied or moved folder keeps its
experiment.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from . import ActionableError

RECORD = "results/experiment.json"


class OtherExperimentError(ActionableError):
    """results/ holds another experiment than the run's."""


def _where(path) -> str:
    """`path` relative to the working folder when inside it, else absolute."""
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(absolute)


def experiment_of(config: dict, configfiles) -> dict:
    """The experiment of a validated config (defaults filled in) loaded from `configfiles`, in load order."""
    data = config["data"]
    experiment = {"data": {"dir": _where(data["dir"]), "layout": data["layout"],
                           "labels_csv": data["labels_csv"] and _where(data["labels_csv"])},
                  "configfiles": [_where(f) for f in configfiles]}
    demo = config["demo"]
    if demo["enabled"]:
        experiment["demo"] = {"seed": demo["seed"], "size_range": demo["size_range"], "counts": demo.get("counts")}
    return experiment


def describe(experiment: dict) -> str:
    """One line naming an experiment's data and config files."""
    data = experiment["data"]
    labels = f", labels {data['labels_csv']}" if data["labels_csv"] else ""
    source = "the demo's data" if "demo" in experiment else "data"
    files = " ".join(experiment["configfiles"]) or "none (--config only)"
    return f"{source} {data['dir']} (layout {data['layout']}{labels}), config file(s) {files}"


def check_experiment(experiment: dict, record=RECORD) -> None:
    """Raise OtherExperimentError when `record` holds an experiment other than `experiment` (none recorded: fine)."""
    record = Path(record)
    if not record.is_file():
        return
    held = json.loads(record.read_text())
    if held == experiment:
        return
    add = " ".join(held["configfiles"])
    continue_it = (f"add --configfile {add} to the command (after any targets: it takes every name after it)" if add
                   else f"give the command the --config settings it was started with (data.dir={held['data']['dir']})")
    results = record.parent
    raise OtherExperimentError(
        f"{results}/ holds another experiment than this run's, and the run would write over it:\n"
        f"  {results}/ ({record}): {describe(held)}\n"
        f"  this run: {describe(experiment)}\n"
        f"To continue the experiment in {results}/, {continue_it}. To run this one instead, first move the other's "
        f"results away (mv {results} {results}-previous) or run it in another folder.")


def record_experiment(experiment: dict, record=RECORD) -> None:
    """Write `experiment` as the one `record`'s folder holds (when a run starts writing)."""
    record = Path(record)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps(experiment, indent=1) + "\n")
    os.replace(tmp, record)
