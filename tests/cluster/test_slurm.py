"""The smoke study through a real SLURM (slurmctld + slurmd + munge on loopback) with Snakemake's SLURM executor,
and a training job preempted by SIGTERM inside SLURM that resumes when the job is retried."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from transmix.results import read

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> dict[str, str]:
    """A running single-node cluster; the environment to reach it. Stopped (by pid) afterwards."""
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        if os.environ.get("TRANSMIX_REQUIRE_CLUSTER") == "1":
            pytest.fail("slurmctld/munged not installed: apt-get install slurm-wlm munge")
        pytest.skip("SLURM is not installed (apt-get install slurm-wlm munge)")
    base = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "BASE": str(base)}
    up = subprocess.run(["bash", str(HERE / "slurm_up.sh")], env=env, capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        subprocess.run(["bash", str(HERE / "slurm_down.sh")], env=env, capture_output=True, timeout=60)
        pytest.fail(f"SLURM did not come up:\n{up.stdout}\n{up.stderr}")
    yield {**os.environ, "SLURM_CONF": str(base / "etc/slurm.conf")}
    subprocess.run(["bash", str(HERE / "slurm_down.sh")], env=env, capture_output=True, timeout=120)


def snakemake_slurm(cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    # SIGINT (not TERM) on timeout: Snakemake then cancels its SLURM jobs before it exits.
    cmd = ["timeout", "-s", "INT", "900", "snakemake", "--workflow-profile", "workflow/profiles/slurm",
           "--jobs", "2", "--default-resources", "slurm_partition=debug", "--slurm-status-command", "squeue",
           "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs", *args]  # fmt: skip
    env = {**env, "XDG_CACHE_HOME": str(cwd / ".cache")}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def slurm_jobs(env: dict[str, str]) -> list[str]:
    out = subprocess.run(["scontrol", "show", "job", "-o"], env=env, capture_output=True, text=True, timeout=30)
    return [line for line in out.stdout.splitlines() if line.startswith("JobId=")]


def test_smoke_study_runs_through_slurm(slurm, pipeline) -> None:
    cwd = pipeline
    config = cwd / "workflow/config/smoke.yaml"  # one seed: the whole DAG, 9 SLURM jobs, fewer polling rounds
    # the ablation grid and the robustness suites (the sections after `ablations:`) are covered by the local smoke run
    text = config.read_text().split("ablations:")[0]
    config.write_text(text.replace("seeds: [0, 1, 2]", "seeds: [0]"))
    proc = snakemake_slurm(cwd, slurm, "--configfile", str(config))
    out, _ = proc.communicate()
    assert proc.returncode == 0, out[-4000:]
    table = read(cwd / "results/smoke/results.csv")
    assert len(table[(table.source == "ours") & (table.suite == "clean")]) == 8  # 2 runs x {raw, ema} x {top1, top5}
    for name in ("01_main_results", "04_attention_vs_area", "05_training_dynamics"):
        assert (cwd / f"results/smoke/notebooks/{name}.html").exists(), name
    # the plugin names each job's log after its SLURM job id: one per job, every rule but the local `all`
    logs = {d.name: sorted(p.stem for p in d.rglob("*.log")) for d in (cwd / ".snakemake/slurm_logs").iterdir()}
    assert {rule: len(ids) for rule, ids in logs.items()} == {
        "rule_data": 1, "rule_train": 2, "rule_evaluate": 2, "rule_collect": 1, "rule_notebook": 3
    }  # fmt: skip
    ids = [int(i) for found in logs.values() for i in found]
    assert len(set(ids)) == 9


def test_preempted_training_job_resumes_on_retry(slurm, pipeline) -> None:
    cwd = pipeline
    config = cwd / "workflow/config/smoke.yaml"
    config.write_text(
        config.read_text().replace("train_subset: 512", "train_subset: 4096").replace("epochs: 1", "epochs: 3")
    )
    target = "results/smoke/train/vit_micro_patch4_28__transmix__s0/final.pt"
    run_dir = cwd / target.rsplit("/", 1)[0]
    proc = snakemake_slurm(cwd, slurm, target, "--configfile", str(config))
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoint.pt").exists():  # epoch 1 done: the job is in epoch 2
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:] if proc.stdout else ""
        time.sleep(0.2)
    time.sleep(1.0)
    running = [j for j in slurm_jobs(slurm) if "JobState=RUNNING" in j and "rule_train" in j]
    assert len(running) == 1, running
    job_id = running[0].split()[0].split("=")[1]
    subprocess.run(["scancel", "--signal=TERM", job_id], env=slurm, check=True, timeout=30)  # as preemption does
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    log = (cwd / "results/smoke/logs/train/vit_micro_patch4_28__transmix__s0.log").read_text()
    # the retried job's log (Snakemake starts each attempt with a fresh log): it resumed inside epoch 2, at the
    # step boundary where SIGTERM stopped the first attempt, not at an epoch boundary
    resumed = re.search(r"resuming \S+ at epoch (\d+), step (\d+) of 64", log)
    assert resumed and int(resumed.group(2)) > 0, log[-3000:]
    state = torch.load(run_dir / "final.pt", weights_only=True)
    assert state["epochs"] == 3
