"""Faults a cluster run meets, each on the real trainer in a real process: kill -9, SIGTERM, a truncated
checkpoint, a crash while writing, a diverging loss. Deterministic CPU settings throughout."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transmix.training.checkpoint import CHECKPOINT, FINAL, HISTORY, PREEMPTED_EXIT, PREVIOUS

pytestmark = pytest.mark.slow

# 512 images / batch 16 = 32 steps an epoch; 3 epochs; a few seconds on one thread.
SETTINGS = ["train_subset=512", "val_subset=128", "epochs=3", "batch_size=16", "warmup_epochs=1", "ema_decay=0.9",
            "method=transmix", "device=cpu"]  # fmt: skip


def command(root: Path, out: Path, *extra: str) -> list[str]:
    sets = [arg for s in [*SETTINGS, f"data_dir={root}", *extra] for arg in ("--set", s)]
    return [sys.executable, "-m", "transmix.cli", "train", "--out", str(out), "--threads", "1", *sets]


def run(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(root, out, *extra), capture_output=True, text=True, timeout=600)


def start(root: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(command(root, out, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, text: str) -> str:
    """Read the trainer's log until a line holds ``text`` (it logs every 8 steps); everything read so far."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"the trainer ended before logging {text!r}:\n{''.join(seen)[-3000:]}")


def epoch_of(path: Path) -> tuple[int, int]:
    state = torch.load(path, weights_only=True)
    return state["epoch"], state["step"]


def same_weights(a: Path, b: Path) -> None:
    wa, wb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for key in ("model", "ema"):
        for name, tensor in wa[key].items():
            assert torch.equal(tensor, wb[key][name]), f"{key}.{name} differs"


@pytest.fixture(scope="session")
def reference(fashion_root, shared_tmp) -> Path:
    """The uninterrupted run every interrupted one must equal: trained once for the session, by the first test
    worker that needs it (under a lock; test_run_folder's tests read it too)."""
    from filelock import FileLock

    out = shared_tmp / "reference-run" / "run"
    with FileLock(str(shared_tmp / "reference-run.lock")):
        if not (out / FINAL).exists():
            result = run(fashion_root, out)
            assert result.returncode == 0, result.stderr
    return out


def test_kill_9_mid_epoch_then_rerun_is_bit_identical(fashion_root, reference, tmp_path) -> None:
    out = tmp_path / "run"
    proc = start(fashion_root, out)
    wait_for_line(proc, "epoch 2/3 step 8/32")  # epoch 1 is saved; epoch 2 is under way
    proc.kill()  # SIGKILL: nothing can be saved
    proc.wait()
    assert not (out / FINAL).exists() and epoch_of(out / CHECKPOINT) == (1, 0)
    result = run(fashion_root, out)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    same_weights(reference / FINAL, out / FINAL)


def test_sigterm_saves_mid_epoch_and_resumes_bit_identical(fashion_root, reference, tmp_path) -> None:
    # With sync_every=8 the host reads the flag every 8 steps: the checkpoint holds a step boundary inside an epoch
    # that is a multiple of 8, and the run (whose sums are the same to the bit whatever sync_every is) ends with the
    # weights and the history of the reference run, which waited for the device every step. (SIGTERM with
    # sync_every=1: the SLURM and imagefolder tests.)
    out = tmp_path / "run"
    proc = start(fashion_root, out, "sync_every=8")
    wait_for_line(proc, "epoch 2/3 step 8/32")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == PREEMPTED_EXIT, err
    assert "preempted" in err
    epoch, step = epoch_of(out / CHECKPOINT)
    assert epoch >= 1 and step in (8, 16, 24), "a step boundary inside an epoch, at a sync step"
    result = run(fashion_root, out, "sync_every=8")
    assert result.returncode == 0 and f"step {step} of 32" in result.stderr, result.stderr
    same_weights(reference / FINAL, out / FINAL)
    timing = ("train_seconds", "images_per_second")
    history = [[{k: v for k, v in json.loads(line).items() if k not in timing}
                for line in (run_dir / HISTORY).read_text().splitlines()] for run_dir in (reference, out)]  # fmt: skip
    assert history[0] == history[1], "the epoch means are the same to the bit"


def test_truncated_checkpoint_falls_back_to_the_previous_one(fashion_root, reference, tmp_path) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)  # a finished run: checkpoint.pt after epoch 3, checkpoint.prev.pt after epoch 2
    (out / FINAL).unlink()
    assert (out / PREVIOUS).exists() and epoch_of(out / PREVIOUS)[0] == 2
    data = (out / CHECKPOINT).read_bytes()
    (out / CHECKPOINT).write_bytes(data[: len(data) // 2])  # a copy cut short
    result = run(fashion_root, out)
    assert result.returncode == 0, result.stderr
    assert "does not load" in result.stderr and (out / "checkpoint.corrupt.pt").exists()
    same_weights(reference / FINAL, out / FINAL)


# Each file a later step trusts goes through its real writer, stopped dead (SIGKILL) while the new contents are
# written but not yet renamed into place: at the fsync, which the writer calls just before the rename.
WRITERS = {
    CHECKPOINT: "from transmix.training.checkpoint import atomic_save\n"
    "atomic_save({'weights': list(range(1000))}, path)",
    "results.csv": "import pandas as pd\nfrom transmix.records.results import COLUMNS, write\n"
    "row = {c: 'x' for c in COLUMNS} | {'seed': 0, 'epochs': 1, 'level': 0.0, 'value': 1.0, 'n': 1, 'source': 'ours'}\n"
    "write(pd.DataFrame([row | {'run_id': f'r{i}'} for i in range(1000)]), path)",
    "history.jsonl": "from transmix.training.checkpoint import atomic_write_text\n"
    "atomic_write_text('{}\\n' * 1000, path)",
}
STALL = (
    "import os, sys, time\nfrom pathlib import Path\npath = Path(sys.argv[1])\n"
    "def stall(fd):\n    print('writing', flush=True)\n    time.sleep(600)\nos.fsync = stall\n"
)


@pytest.mark.parametrize("name", list(WRITERS))
def test_crash_while_writing_leaves_the_old_file(tmp_path, name) -> None:
    target = tmp_path / name
    target.write_bytes(b"old")
    proc = subprocess.Popen([sys.executable, "-c", STALL + WRITERS[name], str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
    proc.kill()
    proc.wait()
    assert target.read_bytes() == b"old", "the file a later step reads is untouched"
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{name}.") and leftovers[0].stat().st_size > 1000


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(fashion_root, tmp_path) -> None:
    # min_lr far above lr makes the cosine schedule climb until the loss is not finite (in epoch 4 here).
    out = tmp_path / "run"
    result = run(fashion_root, out, "epochs=20", "train_subset=256", "batch_size=32", "warmup_epochs=0", "min_lr=1000")
    assert result.returncode == 1
    assert "training diverged" in result.stderr and "Traceback" not in result.stderr
    assert not (out / FINAL).exists()
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["epoch"] >= 1 and all(torch.isfinite(t).all() for t in state["model"].values())


def test_a_full_disk_during_a_checkpoint_save_is_one_line_naming_the_file(fashion_root, tmp_path, monkeypatch,
                                                                          capsys) -> None:  # fmt: skip
    """The disk fills up part of the way into ``torch.save``: torch's archive writer raises its own error about
    positions, with the ``OSError`` only as its context. The command still says, in one line, which file it was."""
    import errno
    import os

    from transmix.cli import main
    from transmix.records import atomic

    class FillsUp:
        def __init__(self, fh, room: int):
            self.fh, self.room = fh, room

        def write(self, data) -> int:
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.room -= len(data)
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()

    fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode, **kw: FillsUp(fdopen(fd, mode, **kw), 2000)
                        if "b" in mode else fdopen(fd, mode, **kw))  # fmt: skip
    out = tmp_path / "run"
    sets = [arg for s in [*SETTINGS, "epochs=1", "warmup_epochs=0", f"data_dir={fashion_root}"] for arg in ("--set", s)]
    assert main(["train", "--out", str(out), "--threads", "1", "--progress", "log", *sets]) == 1
    err = capsys.readouterr().err
    assert f"transmix: error: no space left on the device writing {out / CHECKPOINT}" in err and "Traceback" not in err
    assert not list(out.glob(f".{CHECKPOINT}.*")), "no half-written checkpoint left"
