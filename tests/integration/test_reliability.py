"""Faults a cluster run meets, each on the real trainer in a real process: kill -9, SIGTERM, a truncated
checkpoint, a crash while writing, a diverging loss. Deterministic CPU settings throughout."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from transmix.train import CHECKPOINT, FINAL, PREEMPTED_EXIT, PREVIOUS

pytestmark = pytest.mark.slow

# 1024 images / batch 32 = 32 steps an epoch; 3 epochs; a few seconds on one thread.
SETTINGS = ["train_subset=1024", "val_subset=128", "epochs=3", "batch_size=32", "warmup_epochs=1", "ema_decay=0.9",
            "method=transmix", "device=cpu"]  # fmt: skip


def command(root: Path, out: Path, *extra: str) -> list[str]:
    sets = [arg for s in [*SETTINGS, f"data_dir={root}", *extra] for arg in ("--set", s)]
    return [sys.executable, "-m", "transmix.cli", "train", "--out", str(out), "--threads", "1", *sets]


def run(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(root, out, *extra), capture_output=True, text=True, timeout=600)


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the trainer"
        time.sleep(0.02)


def epoch_of(path: Path) -> tuple[int, int]:
    state = torch.load(path, weights_only=True)
    return state["epoch"], state["step"]


def same_weights(a: Path, b: Path) -> None:
    wa, wb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for key in ("model", "ema"):
        for name, tensor in wa[key].items():
            assert torch.equal(tensor, wb[key][name]), f"{key}.{name} differs"


@pytest.fixture(scope="module")
def reference(fashion_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    result = run(fashion_root, out)
    assert result.returncode == 0, result.stderr
    return out


def test_kill_9_mid_epoch_then_rerun_is_bit_identical(fashion_root, reference, tmp_path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(command(fashion_root, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / CHECKPOINT).exists())  # epoch 1 is saved; epoch 2 is under way
    time.sleep(0.3)
    proc.kill()  # SIGKILL: nothing can be saved
    proc.wait()
    assert not (out / FINAL).exists() and epoch_of(out / CHECKPOINT) == (1, 0)
    result = run(fashion_root, out)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    same_weights(reference / FINAL, out / FINAL)


def test_sigterm_saves_mid_epoch_and_resumes_bit_identical(fashion_root, reference, tmp_path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(command(fashion_root, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / CHECKPOINT).exists())
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == PREEMPTED_EXIT, err
    assert "preempted" in err
    epoch, step = epoch_of(out / CHECKPOINT)
    assert epoch >= 1 and 0 < step < 32, "the checkpoint holds a step boundary inside an epoch"
    result = run(fashion_root, out)
    assert result.returncode == 0, result.stderr
    assert f"step {step} of 32" in result.stderr
    same_weights(reference / FINAL, out / FINAL)


def test_truncated_checkpoint_falls_back_to_the_previous_one(fashion_root, reference, tmp_path) -> None:
    out = tmp_path / "run"
    assert run(fashion_root, out).returncode == 0
    (out / FINAL).unlink()
    assert (out / PREVIOUS).exists() and epoch_of(out / PREVIOUS)[0] == 2
    data = (out / CHECKPOINT).read_bytes()
    (out / CHECKPOINT).write_bytes(data[: len(data) // 2])  # a copy cut short
    result = run(fashion_root, out)
    assert result.returncode == 0, result.stderr
    assert "does not load" in result.stderr and (out / "checkpoint.corrupt.pt").exists()
    same_weights(reference / FINAL, out / FINAL)


@pytest.mark.parametrize("name", [CHECKPOINT, "results.csv"])
def test_crash_while_writing_leaves_the_old_file(tmp_path, name) -> None:
    # Every file a later step trusts (checkpoints, history, results tables) is written through atomic_open.
    target = tmp_path / name
    target.write_bytes(b"old")
    script = (
        "import sys, time; from transmix.atomic import atomic_open\n"
        "with atomic_open(sys.argv[1], 'wb') as fh:\n"
        "    fh.write(b'half of the new file'); fh.flush(); print('writing', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    assert target.read_bytes() == b"old", "the file a later step reads is untouched"
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert all(p.name.startswith(f".{name}.") and p.name.endswith(".tmp") for p in leftovers)


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(fashion_root, tmp_path) -> None:
    # min_lr far above lr makes the cosine schedule climb until the loss is not finite (in epoch 4 here).
    out = tmp_path / "run"
    result = run(fashion_root, out, "epochs=20", "train_subset=256", "warmup_epochs=0", "min_lr=1000")
    assert result.returncode == 1
    assert "training diverged" in result.stderr and "Traceback" not in result.stderr
    assert not (out / FINAL).exists()
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["epoch"] >= 1 and all(torch.isfinite(t).all() for t in state["model"].values())
