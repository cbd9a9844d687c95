"""Rule leakage_check: every run's leakage check (each done by its evaluate job) in one file."""
from cntem import rule_log

log = rule_log(snakemake.log[0])
lines = []
for path in snakemake.input.checks:
    with open(path) as fh:
        lines += fh.read().splitlines()
with open(snakemake.output[0], "w") as fh:
    fh.write(f"no leakage in {len(lines)} (run, fold) pairs\n" + "\n".join(lines) + "\n")
log.info("no leakage in %d (run, fold) pairs", len(lines))
