# Input functions and paths only; what a run is (run ids, ablation points, settings) lives in transmix.config.study.
import json
import re
import shlex
from pathlib import Path

from transmix.data.cifar import DONE as CIFAR_DONE
from transmix.data.prepare import FILES
from transmix.config.run_id import PATTERN as RUN_ID_PATTERN
from transmix.config.run_id import POINT_PATTERN
from transmix.config.study import Study

STUDY = Study(config)
STUDY.check()  # a bad key, value, override or grid point stops the workflow here, before any job starts


wildcard_constraints:
    study=re.escape(STUDY.name),
    run_id=RUN_ID_PATTERN,  # the grammar of transmix.config.run_id.RunId
    point=POINT_PATTERN,


def data_files():
    """What the `data` job makes and every training job needs: Fashion-MNIST's files, or for an ImageFolder a
    marker written once every image decoded (the tree itself may be read-only and is too big to track)."""
    if STUDY.dataset == "imagefolder":
        return [f"results/{STUDY.name}/data/imagefolder.checked"]
    if STUDY.dataset in ("cifar10", "cifar100"):
        return [f"{STUDY.data_dir}/{CIFAR_DONE}"]
    return [f"{STUDY.data_dir}/FashionMNIST/raw/{name}" for name in FILES]


def data_command(wildcards, output, threads):
    """The `data` job's command for the study's dataset, with where its output and messages go."""
    log = shlex.quote(f"results/{STUDY.name}/logs/data.log")
    root = shlex.quote(STUDY.data_dir)
    if STUDY.dataset == "imagefolder":  # what it found goes to the marker the training jobs wait for
        return f"transmix data --check --root {root} --workers {threads} > {shlex.quote(output[0])} 2> {log}"
    if STUDY.dataset in ("cifar10", "cifar100"):
        return f"transmix data --dataset {STUDY.dataset} --root {root} > {log} 2>&1"
    root = shlex.quote(str(Path(output[0]).parents[2]))  # <root>/FashionMNIST/raw/<file>
    return f"transmix data --root {root} > {log} 2>&1"


def teacher_final(wildcards):
    """A distillation student's teacher run: trained first, so that asking for one student trains its teacher too."""
    teacher = STUDY.teacher(wildcards.run_id)
    return [f"results/{wildcards.study}/train/{teacher}/final.pt"] if teacher else []


def run_dir(wildcards):
    return f"results/{wildcards.study}/train/{wildcards.run_id}"


def resource(rule_name, key):
    defaults = {"gpus": 0}
    if rule_name == "robustness" and rule_name not in config["resources"]:
        rule_name = "evaluate"
    return config["resources"][rule_name].get(key, defaults.get(key))


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
    """`--set key=value` for every setting of the run, shell-quoted."""
    values = STUDY.settings(wildcards.run_id)
    return " ".join(f"--set {shlex.quote(f'{key}={value}')}" for key, value in values.items())


def robustness_args(wildcards):
    """`--suite` and `--set key=value` for the study's robustness protocol, shell-quoted."""
    suites = [f"--suite {shlex.quote(s)}" for s in STUDY.robustness.get("suites", [])]
    values = [f"--set {shlex.quote(f'{k}={_protocol_value(v)}')}" for k, v in STUDY.robustness.get("protocol", {}).items()]
    return " ".join(suites + values)


def _protocol_value(value):
    return "[" + ",".join(str(v) for v in value) + "]" if isinstance(value, list) else str(value)


def evaluation_csvs(wildcards):
    """Every table the study's results.csv is collected from: each main run's, each ablation point's, and each
    distillation student's."""
    stages = ["evaluate"] + (["robustness"] if STUDY.robustness else [])
    main = [f"results/{wildcards.study}/{stage}/{run}.csv" for stage in stages for run in STUDY.run_ids()]
    students = [f"results/{wildcards.study}/evaluate/{run}.csv" for run in STUDY.students()]
    return main + [f"results/{wildcards.study}/ablations/{point}.csv" for point in STUDY.points] + students


def ablation_csvs(wildcards):
    return [f"results/{wildcards.study}/evaluate/{run}.csv" for run in STUDY.ablation_runs(wildcards.point)]


ON_RUNS = ("04_attention_vs_area", "05_training_dynamics")  # notebooks that read the runs' directories
PAIRED = ("01_main_results", "02_robustness")  # notebooks that pair every method against the study's baseline


def notebook_args(wildcards):
    """papermill parameters: the study's table and the runs' directory (each page's setup reads it)."""
    base = f"results/{wildcards.study}"
    args = f"-p results_csv {shlex.quote(f'{base}/results.csv')} -p study {shlex.quote(STUDY.name)}"
    args += f" -p figures_dir {shlex.quote(f'{base}/figures/{wildcards.name}')}"
    if wildcards.name in PAIRED:
        args += f" -p baseline {shlex.quote(STUDY.baseline)}"
    args += f" -p runs_dir {shlex.quote(f'{base}/train')}"  # every page's setup reads the runs' resolved configs
    if wildcards.name == "01_main_results" and config.get("ladder"):  # the other rungs of the scale ladder
        rungs = {name: f"workflow/config/{name}.yaml" for name in config["ladder"]}
        args += f" -y {shlex.quote(json.dumps({'rungs': rungs}))}"
    if wildcards.name == "03_ablations":  # the study's own value of each axis: the reference point on every plot
        own = {key: STUDY.default(key) for key in STUDY.ablations["axes"]}
        args += f" -y {shlex.quote(json.dumps({'axis_defaults': own}))}"
    return args


def notebook_inputs(wildcards):
    """What a notebook reads: the study's table; the notebooks on training read the main runs' directories."""
    inputs = [f"results/{wildcards.study}/results.csv", f"notebooks/{wildcards.name}.ipynb"]
    if wildcards.name in ON_RUNS:
        inputs += [f"results/{wildcards.study}/train/{run}/final.pt" for run in STUDY.run_ids()]
    if wildcards.name == "01_main_results":  # the other rungs of the scale ladder: committed tables and configs
        for name in config.get("ladder", []):
            inputs += [f"results/{name}/results.csv", f"workflow/config/{name}.yaml"]
    return inputs


def notebook_targets():
    return [f"results/{STUDY.name}/notebooks/{name}.{ext}" for name in STUDY.notebooks() for ext in ("ipynb", "html")]
