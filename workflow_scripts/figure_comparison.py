"""Rule figure_comparison: accuracy and macro-F1 of every cross-validated method of one scheme."""
from cntem import rule_log
from cntem.io import read_table
from cntem.plots import method_comparison

log = rule_log(snakemake.log[0])
method_comparison(read_table(snakemake.input.comparison), snakemake.output[0], snakemake.wildcards.scheme,
                  snakemake.params.density)
log.info("comparison of the methods of %s", snakemake.wildcards.scheme)
