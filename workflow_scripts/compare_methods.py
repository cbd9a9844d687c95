"""Rule compare_methods: every cross-validated method of each scheme in one ranked table."""
from cntem import rule_log
from cntem.evaluate import COMPARISON_COLUMNS, comparison_rows
from cntem.io import read_table, write_table

log = rule_log(snakemake.log[0])
rows = comparison_rows(read_table(snakemake.input.metrics))
write_table(snakemake.output[0], rows, COMPARISON_COLUMNS)
log.info("%d methods compared (input modes %s)", len(rows), ", ".join(sorted({r["input_mode"] for r in rows})))
