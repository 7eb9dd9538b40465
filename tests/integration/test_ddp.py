"""torchrun with 2 CPU processes (gloo) computes what one process computes with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transmix.training.checkpoint import FINAL, HISTORY, RESOLVED

pytestmark = pytest.mark.slow

# drop_path=0: stochastic depth draws per process from the global RNG, so with it on the runs differ by design.
SETTINGS = ["train_subset=512", "val_subset=256", "epochs=2", "warmup_epochs=1", "ema_decay=0.9", "drop_path=0",
            "method=transmix", "switch_prob=0.8", "device=cpu"]  # fmt: skip
TOLERANCE = 1e-4  # max abs difference of any weight after 16 AdamW steps: gradient all-reduce sums in another order

# Loaded by every Python process of the run: records each file opened for writing, per rank.
AUDIT = """
import os, sys
_log = os.path.join(os.environ["AUDIT_DIR"], "rank" + os.environ.get("RANK", "none") + ".log")
def _hook(event, args):
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1], args[2]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags & (os.O_WRONLY | os.O_RDWR))
        if writing and str(args[0]) != _log:
            with open(_log, "a") as fh:
                fh.write(os.path.abspath(str(args[0])) + "\\n")
sys.addaudithook(_hook)
"""


def train_cmd(root: Path, out: Path, batch: int) -> list[str]:
    sets = [a for s in [*SETTINGS, f"data_dir={root}", f"batch_size={batch}"] for a in ("--set", s)]
    return ["train", "--out", str(out), "--threads", "1", *sets]


def test_two_processes_match_one(fashion_root, tmp_path) -> None:
    if shutil.which("torchrun") is None:
        pytest.fail("torchrun is not on PATH (it comes with torch)")
    single = subprocess.run([sys.executable, "-m", "transmix.cli", *train_cmd(fashion_root, tmp_path / "one", 64)],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert single.returncode == 0, single.stderr

    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(AUDIT)
    path = f"{audit}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = {**os.environ, "AUDIT_DIR": str(audit), "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "transmix.cli",
         *train_cmd(fashion_root, tmp_path / "two", 32)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]

    a = torch.load(tmp_path / "one" / FINAL, weights_only=True)
    b = torch.load(tmp_path / "two" / FINAL, weights_only=True)
    worst = max((a[k][n] - b[k][n]).abs().max().item() for k in ("model", "ema") for n in a[k])
    assert worst < TOLERANCE, f"largest weight difference {worst:.2e}"
    h1 = [json.loads(x) for x in (tmp_path / "one" / HISTORY).read_text().splitlines()]
    h2 = [json.loads(x) for x in (tmp_path / "two" / HISTORY).read_text().splitlines()]
    assert [h["train_loss"] for h in h1] == pytest.approx([h["train_loss"] for h in h2], abs=1e-4)
    assert [h["cutmix_batches"] for h in h1] == [h["cutmix_batches"] for h in h2]
    resolved = (tmp_path / "two" / RESOLVED).read_text()
    assert "world_size: 2" in resolved and "global_batch_size: 64" in resolved

    run_dir = str((tmp_path / "two").resolve())
    written = {rank: (audit / f"rank{rank}.log").read_text().splitlines() for rank in ("0", "1")}
    assert any(p.startswith(run_dir) for p in written["0"]), "rank 0 wrote the run directory"
    assert not [p for p in written["1"] if p.startswith(run_dir)], "rank 1 wrote into the run directory"


def test_class_folders_with_rank_seeds_draw_per_process_and_resume_exactly(tmp_path) -> None:
    """The release's seeding (seed + rank) on the class-folder path: each process draws its own mixing, every
    process's random state is kept in the checkpoint, and a run resumed after an epoch equals the uninterrupted
    one bit for bit."""
    from transmix.data.synthetic import make_class_folders

    data = make_class_folders(tmp_path / "data", 3, (16, 4), 32)
    sets = ["dataset=imagefolder", f"data_dir={data}", "model=vit_micro_patch4_28", "img_size=32", "epochs=2",
            "batch_size=8", "warmup_epochs=0", "method=transmix", "switch_prob=0.5", "rank_seeds=true",
            "num_workers=0", "device=cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(out: Path, *extra: str) -> None:
        args = [a for s in sets for a in ("--set", s)]
        result = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "transmix.cli", "train",
                                 "--out", str(out), "--threads", "1", *args, *extra],
                                capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]

    torchrun(tmp_path / "whole")
    torchrun(tmp_path / "split", "--stop-after", "1")
    saved = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    ranks = saved["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["gen"], ranks[1]["gen"]), "each process draws its own"
    assert torch.equal(ranks[0]["gen"], saved["rng_gen"])
    torchrun(tmp_path / "split")
    whole = torch.load(tmp_path / "whole" / FINAL, weights_only=True)
    split = torch.load(tmp_path / "split" / FINAL, weights_only=True)
    for key in ("model", "ema"):
        assert all(torch.equal(t, split[key][n]) for n, t in whole[key].items()), key
