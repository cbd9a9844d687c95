"""Rule provenance: the package versions and the effective config (defaults filled in) of the results."""
import platform
from importlib.metadata import PackageNotFoundError, version

import yaml

from cntem import rule_log
from cntem.io import write_table

log = rule_log(snakemake.log[0])
rows = [{"package": "python", "version": platform.python_version()}]
for name in ["cntem", "snakemake", "torch", "torchvision", "faiss-cpu", "faiss-gpu-cu12", "xgboost", "numpy",
             "h5py", "matplotlib", "scikit-learn", "scipy", "pillow", "tifffile"]:
    try:
        rows.append({"package": name, "version": version(name)})
    except PackageNotFoundError:
        continue
write_table(snakemake.output.versions, rows, ["package", "version"])
digest = snakemake.params.config_digest
with open(snakemake.output.config, "w") as fh:
    fh.write(f"# The effective config of these results: the experiment's config file(s) on top of the schema's\n"
             f"# defaults. Its digest, {digest}, is the `config` column of results/metrics.tsv.\n")
    yaml.safe_dump(dict(snakemake.params.config), fh, sort_keys=False)
log.info("config %s and %d package versions recorded", digest, len(rows))
