"""Rule nested_cv: each scheme's nested estimate of choosing the best method, and the plain winner that
model.method auto deploys."""
import json
from collections import defaultdict

from cntem import rule_log
from cntem.io import read_table, write_table
from cntem.selection import NESTED_COLUMNS, nested_row, nested_summary, plain_scores

log = rule_log(snakemake.log[0])
params = snakemake.params
outer = defaultdict(list)
for path in snakemake.input.splits:  # in split order per scheme
    with open(path) as fh:
        result = json.load(fh)
    outer[result["scheme"]].append(result)
comparison = read_table(snakemake.input.comparison)
summaries = {scheme: nested_summary(outer[scheme], plain_scores(comparison, scheme, params.balance, candidates),
                                    candidates, params.repeats)
             for scheme, candidates in params.candidates.items()}
with open(snakemake.output.json, "w") as fh:
    json.dump(summaries, fh, indent=1)
write_table(snakemake.output.table, [nested_row(s, summary) for s, summary in summaries.items()], NESTED_COLUMNS)
for scheme, summary in summaries.items():
    log.info("%s: nested accuracy %.3f +- %.3f over %d outer splits (choices %s); plain winner %s",
             scheme, summary["nested"]["accuracy"]["mean"], summary["nested"]["accuracy"]["std"],
             len(outer[scheme]), summary["nested"]["choice_counts"], summary["plain"]["winner"])
