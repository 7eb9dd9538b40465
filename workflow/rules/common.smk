# Helpers only: paths and command-line arguments built from the config. No rules here.
import re
import shlex
from pathlib import Path

from transmix.config import TrainConfig, from_dict
from transmix.data import FILES

STUDY = config["study"]
RUN_ID = re.compile(r"^(?P<model>[A-Za-z0-9_.]+?)__(?P<method>[a-z]+)__s(?P<seed>\d+)$")
NOTEBOOKS = ["01_main_results"]

# Fail at parse time, naming the key, instead of in every training job.
from_dict({**config["train"], "study": STUDY})


wildcard_constraints:
    study=re.escape(STUDY),
    run_id=r"[A-Za-z0-9_.]+__[a-z]+__s\d+",


def data_dir():
    return config["train"].get("data_dir", TrainConfig.data_dir)


def data_files():
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
    return config["resources"][rule_name].get(key, defaults.get(key))


def train_launcher(wildcards, resources):
    """`transmix` for one process; `torchrun` with one process per GPU when a job has more than one."""
    if resources.gpu > 1:
        return f"torchrun --standalone --nproc_per_node {int(resources.gpu)} -m transmix.cli"
    return "transmix"


def train_args(wildcards):
    """`--set key=value` for the study's train settings and this run's model, method and seed, shell-quoted."""
    match = RUN_ID.match(wildcards.run_id)
    if match is None:
        raise ValueError(f"run_id {wildcards.run_id!r} is not model__method__s<seed>")
    values = {**config["train"], "study": wildcards.study, **match.groupdict()}
    values["seed"] = int(values["seed"])
    from_dict(values)  # a bad model/method in a requested path is reported here, before the job starts
    return " ".join(f"--set {shlex.quote(f'{key}={value}')}" for key, value in values.items())


def evaluation_csvs(wildcards):
    return [f"results/{wildcards.study}/evaluate/{run}.csv" for run in run_ids()]


def notebook_targets():
    return [f"results/{STUDY}/notebooks/{name}.{ext}" for name in NOTEBOOKS for ext in ("ipynb", "html")]
