"""The smoke study through a real SLURM (slurmctld + slurmd + munge on loopback) with Snakemake's SLURM executor,
with one training job preempted by SIGTERM inside SLURM that resumes when the job is retried."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from transmix.records.results import read

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
           "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2",
           "--slurm-keep-successful-logs", *args]  # fmt: skip
    env = {**env, "XDG_CACHE_HOME": str(cwd / ".cache")}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def slurm_jobs(env: dict[str, str]) -> list[str]:
    out = subprocess.run(["scontrol", "show", "job", "-o"], env=env, capture_output=True, text=True, timeout=30)
    return [line for line in out.stdout.splitlines() if line.startswith("JobId=")]


def test_smoke_study_runs_through_slurm_and_a_preempted_job_resumes(slurm, pipeline) -> None:
    # One seed, up to notebook 01: 2 trainings, 2 evaluations and a notebook as SLURM jobs (the ablation grid, the
    # robustness suites and the other notebooks are covered by the local smoke run). Training is long enough (3 epochs
    # of 64 steps of 32 images) to preempt the TransMix job inside its second epoch, as SLURM preemption does: the
    # retried job must resume at that step.
    cwd = pipeline
    config = cwd / "workflow/config/smoke.yaml"
    text = config.read_text().split("ablations:")[0].replace("seeds: [0, 1] ", "seeds: [0] ")
    text = text.replace("train_subset: 512", "train_subset: 2048").replace("batch_size: 64", "batch_size: 32")
    config.write_text(text.replace("epochs: 1", "epochs: 3"))
    proc = snakemake_slurm(cwd, slurm, "results/smoke/notebooks/01_main_results.html", "--configfile", str(config))
    log = cwd / "results/smoke/logs/train/vit_micro_patch4_28__transmix__s0.log"
    deadline = time.monotonic() + 300
    while "epoch 2/3 step 16/64" not in (log.read_text() if log.exists() else ""):  # inside epoch 2
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:] if proc.stdout else ""
        time.sleep(0.2)
    running = [j for j in slurm_jobs(slurm) if "JobState=RUNNING" in j and "rule_train" in j and "transmix" in j]
    assert len(running) == 1, running
    job_id = running[0].split()[0].split("=")[1]
    subprocess.run(["scancel", "--signal=TERM", job_id], env=slurm, check=True, timeout=30)  # as preemption does
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]

    # the retried job's log (Snakemake starts each attempt with a fresh log): it resumed inside epoch 2, at the
    # step boundary where SIGTERM stopped the first attempt, not at an epoch boundary
    resumed = re.search(r"resuming \S+ at epoch (\d+), step (\d+) of 64", log.read_text())
    assert resumed and resumed.group(1) == "2" and int(resumed.group(2)) > 0, log.read_text()[-3000:]
    state = torch.load(log.parents[2] / "train/vit_micro_patch4_28__transmix__s0/final.pt", weights_only=True)
    assert state["epochs"] == 3

    table = read(cwd / "results/smoke/results.csv")
    assert len(table[(table.source == "ours") & (table.suite == "clean")]) == 8  # 2 runs x {raw, ema} x {top1, top5}
    assert "TransMix" in (cwd / "results/smoke/notebooks/01_main_results.html").read_text()
    # the plugin names each job's log after its SLURM job id: one per job (two for the preempted training job),
    # every rule but the local ones (all, collect, and data for Fashion-MNIST)
    logs = {d.name: sorted(p.stem for p in d.rglob("*.log")) for d in (cwd / ".snakemake/slurm_logs").iterdir()}
    assert {rule: len(ids) for rule, ids in logs.items()} == {"rule_train": 3, "rule_evaluate": 2, "rule_notebook": 1}
    ids = [int(i) for found in logs.values() for i in found]
    assert len(set(ids)) == 6 and job_id in logs["rule_train"]
