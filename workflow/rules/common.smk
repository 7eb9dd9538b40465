# Helpers only: paths and command-line arguments built from the config. No rules here.
import re
import shlex
from pathlib import Path

from transmix.config import TrainConfig, from_dict
from transmix.data import FILES

STUDY = config["study"]
OVERRIDES = config.get("overrides", {})  # {model: {key: value}}: per-model settings over `train`
RUN_ID = re.compile(r"^(?P<model>[A-Za-z0-9_.]+?)__(?P<method>[a-z]+)__s(?P<seed>\d+)$")
ROBUSTNESS = config.get("robustness")  # None: the study runs no robustness suites
NOTEBOOKS = ["01_main_results"] + (["02_robustness"] if ROBUSTNESS else [])


def check_train_settings():
    """Fail at parse time, naming the key, instead of in every training job; an override of a model that is not
    in `models` (a typo) would otherwise apply to nothing."""
    from_dict({**config["train"], "study": STUDY})
    unknown = sorted(set(OVERRIDES) - set(config["models"]))
    if unknown:
        raise ValueError(f"overrides name model(s) not in `models`: {unknown}; add them to `models` or fix the name")
    for model, values in OVERRIDES.items():
        from_dict({**config["train"], **values, "study": STUDY, "model": model})


check_train_settings()
if ROBUSTNESS:
    from transmix import robustness as _robustness

    _robustness.from_dict(ROBUSTNESS.get("protocol", {}))  # an unknown protocol key fails here, naming it


wildcard_constraints:
    study=re.escape(STUDY),
    run_id=r"[A-Za-z0-9_.]+__[a-z]+__s\d+",


def data_dir():
    return config["train"].get("data_dir", TrainConfig.data_dir)


def dataset():
    return config["train"].get("dataset", TrainConfig.dataset)


def data_files():
    """What the `data` job makes and every training job needs: Fashion-MNIST's files, or for an ImageFolder a
    marker written once every image decoded (the tree itself may be read-only and is too big to track)."""
    if dataset() == "imagefolder":
        return [f"results/{STUDY}/data/imagefolder.checked"]
    return [f"{data_dir()}/FashionMNIST/raw/{name}" for name in FILES]


def data_root(wildcards, output):
    """The dataset root, derived from the rule's outputs (<root>/FashionMNIST/raw/<file>)."""
    return str(Path(output[0]).parents[2])


def run_ids():
    return [f"{m}__{meth}__s{s}" for m in config["models"] for meth in config["methods"] for s in config["seeds"]]


def run_dir(wildcards):
    return f"results/{wildcards.study}/train/{wildcards.run_id}"


def resource(rule_name, key):
    defaults = {"gpus": 0}
    if rule_name == "robustness" and rule_name not in config["resources"]:
        rule_name = "evaluate"
    return config["resources"][rule_name].get(key, defaults.get(key))


def robustness_args(wildcards):
    """`--suite` and `--set key=value` for the study's robustness protocol, shell-quoted."""
    suites = [f"--suite {shlex.quote(s)}" for s in ROBUSTNESS.get("suites", [])]
    values = [f"--set {shlex.quote(f'{k}={_protocol_value(v)}')}" for k, v in ROBUSTNESS.get("protocol", {}).items()]
    return " ".join(suites + values)


def _protocol_value(value):
    return "[" + ",".join(str(v) for v in value) + "]" if isinstance(value, list) else str(value)


def data_resource(key):
    """The data rule's resources: the study's `resources: data:` (optional) over a one-core default."""
    return config["resources"].get("data", {}).get(key, {"threads": 1, "mem_mb": 1000, "runtime": 30}[key])


def threads_per_process(wildcards, threads, resources):
    """The job's threads shared among its torchrun processes (one per GPU), so they do not oversubscribe."""
    return max(1, threads // max(1, int(resources.gpu)))


def train_launcher(wildcards, resources):
    """`transmix` for one process; `torchrun` with one process per GPU when a job has more than one."""
    if resources.gpu > 1:
        return f"torchrun --standalone --nproc_per_node {int(resources.gpu)} -m transmix.cli"
    return "transmix"


def train_args(wildcards):
    """`--set key=value` for the study's train settings, the model's overrides, and this run's model, method and
    seed, shell-quoted."""
    match = RUN_ID.match(wildcards.run_id)
    if match is None:
        raise ValueError(f"run_id {wildcards.run_id!r} is not model__method__s<seed>")
    model_values = OVERRIDES.get(match["model"], {})
    values = {**config["train"], **model_values, "study": wildcards.study, **match.groupdict()}
    values["seed"] = int(values["seed"])
    from_dict(values)  # a bad model/method in a requested path is reported here, before the job starts
    return " ".join(f"--set {shlex.quote(f'{key}={value}')}" for key, value in values.items())


def evaluation_csvs(wildcards):
    stages = ["evaluate"] + (["robustness"] if ROBUSTNESS else [])
    return [f"results/{wildcards.study}/{stage}/{run}.csv" for stage in stages for run in run_ids()]


def notebook_targets():
    return [f"results/{STUDY}/notebooks/{name}.{ext}" for name in NOTEBOOKS for ext in ("ipynb", "html")]
