# cntem: classification of airborne carbon nanomaterials in TEM images
# (Luo, Holm & Wang, Nanoscale Adv. 2021, 3, 206) as a Snakemake workflow.
from snakemake.utils import min_version

min_version("9.0")


# An experiment's config (--configfile, or --config giving `data`) is taken exactly as written, on top
# of the schema's defaults, which are the paper's method. Only a run that names no data gets the
# synthetic demo: loading the demo config under every experiment would leak its settings into them.
if "data" not in config:

    configfile: f"{workflow.basedir}/config/demo.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/hypercolumns.smk"
include: "rules/learning.smk"
include: "rules/evaluation.smk"
include: "rules/selection.smk"
include: "rules/model.smk"
include: "rules/uncertainty_inputs.smk"
include: "rules/uncertainty.smk"


rule all:
    input:
        all_outputs(),
        uncertainty_outputs(),
    default_target: True
