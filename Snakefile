# TransMix reproduction pipeline: train -> evaluate -> collect -> notebooks.
# The experiment is in the config (workflow/config/), runtime settings in the profiles (workflow/profiles/).
#   snakemake --cores all                                   the embedded default study (CPU, minutes)
#   snakemake --cores all --configfile workflow/config/smoke.yaml
#   snakemake -n results/default/evaluate/vit_micro_patch4_28__transmix__s0.csv   one target, its jobs only
import shlex

from snakemake.utils import min_version, validate

min_version("9.0")

# Every job runs the package beside this Snakefile, not whichever copy of it is installed (an editable install
# points at one checkout): a study started from a second checkout, a worktree at a fixed revision, trains that
# checkout's code, the revision its rows' git_sha names. (Snakemake's own prefix is `set -euo pipefail;`.)
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")  # braces: Snakemake formats it


# A --configfile replaces the default study instead of being merged into it, so a study holds every key it uses.
if not workflow.config_settings.configfiles:

    configfile: "workflow/config/default.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/notebooks.smk"


onstart:
    from transmix.method.models import check_model  # torch: once before the first job, not at every parse

    STUDY.check_models(check_model)


rule all:
    input:
        notebook_targets(),
    default_target: True
