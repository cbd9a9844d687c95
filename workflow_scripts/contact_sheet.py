"""Rule contact_sheet: a few images of every class, for people to look at."""
from cntem import rule_log
from cntem.io import read_table
from cntem.plots import contact_sheet

log = rule_log(snakemake.log[0])
contact_sheet(read_table(snakemake.input.table), snakemake.output[0],
              per_class=snakemake.params.per_class, seed=snakemake.params.seed)
log.info("contact sheet of scheme %s written", snakemake.wildcards.scheme)
