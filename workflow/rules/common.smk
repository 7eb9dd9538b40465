# Helpers only: paths and command-line arguments built from the config. No rules here.
import json
import re
import shlex
from pathlib import Path

from transmix.config import TrainConfig, from_dict
from transmix.data import FILES

STUDY = config["study"]
OVERRIDES = config.get("overrides", {})  # {model: {key: value}}: per-model settings over `train`
RUN_ID = re.compile(r"^(?P<model>[A-Za-z0-9_.]+?)__(?P<method>[a-z]+)__s(?P<seed>\d+)(?:__(?P<ablation>[^_/]\S*))?$")
ROBUSTNESS = config.get("robustness")  # None: the study runs no robustness suites
ABLATIONS = config.get("ablations")  # None: the study runs no ablation grid
# Ablation axes that only change how TransMix reads the attention: those points train TransMix alone. Any other axis
# (switch_prob, cutmix_alpha, ...) changes what both methods see, so its points train every method of the study.
TRANSMIX_ONLY = ("area_weight", "attn_block", "attn_blocks", "attn_heads", "box_to_grid")
NOTEBOOKS = (
    ["01_main_results"]
    + (["02_robustness"] if ROBUSTNESS else [])
    + (["03_ablations"] if ABLATIONS else [])
    + (["04_attention_vs_area"] if "transmix" in config["methods"] else [])
    + ["05_training_dynamics"]
)


def ablation_points():
    """``{point: (key, value)}`` for every value of every axis of the study's ablation grid; a point is named
    ``key=value`` (``area_weight=0.25``), which is also the last part of its runs' run_ids."""
    if not ABLATIONS:
        return {}
    return {f"{key}={value}": (key, value) for key, values in ABLATIONS["axes"].items() for value in values}


def ablation_runs(point):
    """The run_ids of one ablation point: its models x methods x seeds."""
    key, _ = ablation_points()[point]
    methods = ["transmix"] if key in TRANSMIX_ONLY else config["methods"]
    models = ABLATIONS.get("models", config["models"])
    seeds = ABLATIONS.get("seeds", config["seeds"])
    return [f"{m}__{meth}__s{s}__{point}" for m in models for meth in methods for s in seeds]


def check_train_settings():
    """Fail at parse time, naming the key, instead of in every training job; an override of a model that is not
    in `models` (a typo) would otherwise apply to nothing."""
    from_dict({**config["train"], "study": STUDY})
    unknown = sorted(set(OVERRIDES) - set(config["models"]))
    if unknown:
        raise ValueError(f"overrides name model(s) not in `models`: {unknown}; add them to `models` or fix the name")
    for model, values in OVERRIDES.items():
        from_dict({**config["train"], **values, "study": STUDY, "model": model})
    if ABLATIONS:
        unknown = sorted(set(ABLATIONS.get("models", [])) - set(config["models"]))
        if unknown:
            raise ValueError(f"ablations name model(s) not in `models`: {unknown}")
        for point, (key, value) in ablation_points().items():
            if key in ("model", "method", "seed", "study", "ablation", "dataset", "data_dir"):
                raise ValueError(f"ablation axis {key!r} names the run or its data; ablate a training setting")
            if value == config["train"].get(key, getattr(TrainConfig, key, None)):
                raise ValueError(f"ablation point {point} is the study's own setting (its main runs); remove it")
            for run in ablation_runs(point):
                run_settings(run)  # a bad key or value of the grid fails here, naming it


wildcard_constraints:
    study=re.escape(STUDY),
    run_id=r"[A-Za-z0-9_.]+__[a-z]+__s\d+(__[a-z_]+=[A-Za-z0-9_.+-]+)?",
    point=r"[a-z_]+=[A-Za-z0-9_.+-]+",


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


def run_settings(run_id):
    """Every config key of one run: the study's train settings, the model's overrides, the ablation point's
    value, and the run's model, method and seed; checked (a bad path is reported before any job starts)."""
    match = RUN_ID.match(run_id)
    if match is None:
        raise ValueError(f"run_id {run_id!r} is not model__method__s<seed>[__key=value]")
    run = match.groupdict()
    values = {**config["train"], **OVERRIDES.get(run["model"], {}), "study": STUDY}
    if run["ablation"]:
        if run["ablation"] not in ablation_points():
            raise ValueError(f"{run['ablation']!r} is not a point of the study's ablation grid: {list(ablation_points())}")
        key, value = ablation_points()[run["ablation"]]
        values.update({key: value, "ablation": run["ablation"]})
    values.update(model=run["model"], method=run["method"], seed=int(run["seed"]))
    from_dict(values)
    return values


def train_args(wildcards):
    """`--set key=value` for every setting of the run (:func:`run_settings`), shell-quoted."""
    values = run_settings(wildcards.run_id)
    return " ".join(f"--set {shlex.quote(f'{key}={value}')}" for key, value in values.items())


def evaluation_csvs(wildcards):
    """Every table the study's results.csv is collected from: each main run's, and each ablation point's."""
    stages = ["evaluate"] + (["robustness"] if ROBUSTNESS else [])
    main = [f"results/{wildcards.study}/{stage}/{run}.csv" for stage in stages for run in run_ids()]
    return main + [f"results/{wildcards.study}/ablations/{point}.csv" for point in ablation_points()]


def ablation_csvs(wildcards):
    return [f"results/{wildcards.study}/evaluate/{run}.csv" for run in ablation_runs(wildcards.point)]


ON_RUNS = ("04_attention_vs_area", "05_training_dynamics")  # notebooks that read the runs' directories


def notebook_args(wildcards):
    """papermill parameters: the study's table, and the runs' directory for the notebooks that read it."""
    base = f"results/{wildcards.study}"
    args = f"-p results_csv {shlex.quote(f'{base}/results.csv')} -p study {shlex.quote(STUDY)}"
    args += f" -p figures_dir {shlex.quote(f'{base}/figures/{wildcards.name}')}"
    if wildcards.name in ON_RUNS:
        args += f" -p runs_dir {shlex.quote(f'{base}/train')}"
    if wildcards.name == "03_ablations":  # the study's own value of each axis: the reference point on every plot
        own = {key: config["train"].get(key, getattr(TrainConfig, key)) for key in ABLATIONS["axes"]}
        args += f" -y {shlex.quote(json.dumps({'axis_defaults': own}))}"
    return args


def notebook_inputs(wildcards):
    """What a notebook reads: the study's table; the notebooks on training read the main runs' directories."""
    inputs = [f"results/{wildcards.study}/results.csv", f"notebooks/{wildcards.name}.ipynb"]
    if wildcards.name in ON_RUNS:
        inputs += [f"results/{wildcards.study}/train/{run}/final.pt" for run in run_ids()]
    return inputs


def notebook_targets():
    return [f"results/{STUDY}/notebooks/{name}.{ext}" for name in NOTEBOOKS for ext in ("ipynb", "html")]


check_train_settings()
if ROBUSTNESS:
    from transmix import robustness as _robustness

    # An unknown protocol key, or a suite the study's data cannot run (natural on Fashion-MNIST, ood of an imagefolder
    # study without ood_dir), fails here, naming it.
    _robustness.applicable(
        dataset(),
        _robustness.from_dict(ROBUSTNESS.get("protocol", {})),
        ROBUSTNESS.get("suites"),
    )
