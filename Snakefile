# cntem: classification of airborne carbon nanomaterials in TEM images
# (Luo, Holm & Wang, Nanoscale Adv. 2021, 3, 206) as a Snakemake workflow.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# Used by every rule with `snakemake --sdm conda`; without it, the current environment is used.
conda: "envs/cntem.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/hypercolumns.smk"
include: "rules/learning.smk"
include: "rules/evaluation.smk"
include: "rules/model.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
