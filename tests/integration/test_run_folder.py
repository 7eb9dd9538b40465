"""The run folder under a user's hands, each case on the real trainer in a real process: Ctrl-C, a finished run
never trained over, an unreadable final.pt, a second trainer in the same folder, a start that fails. (A module of
its own so that its runs train beside test_reliability's, not after them.)"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pytest
import test_reliability
from test_reliability import epoch_of, run, same_weights, start, wait_for_line

from transmix.training.checkpoint import CHECKPOINT, FINAL, PREEMPTED_EXIT, PREVIOUS, RESOLVED

pytestmark = pytest.mark.slow
reference = test_reliability.reference  # the same finished run to compare with (trained once per session)


def test_ctrl_c_saves_mid_epoch_like_sigterm(fashion_root, reference, tmp_path) -> None:
    out = tmp_path / "run"
    proc = start(fashion_root, out)
    wait_for_line(proc, "epoch 2/3 step 8/32")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == PREEMPTED_EXIT, err
    assert "stopped by SIGINT at epoch 2" in err and "Traceback" not in err and "run the same command again" in err
    epoch, step = epoch_of(out / CHECKPOINT)
    assert epoch == 1 and 8 <= step < 32
    result = run(fashion_root, out)
    assert result.returncode == 0 and f"step {step} of 32" in result.stderr, result.stderr
    same_weights(reference / FINAL, out / FINAL)
    record = (out / RESOLVED).read_bytes()
    again = run(fashion_root, out)  # a finished run says so, without first announcing a resume
    assert "already finished" in again.stderr and "resuming" not in again.stderr, again.stderr
    assert (out / RESOLVED).read_bytes() == record, "the record of what trained it is kept"


def test_a_finished_run_is_never_trained_over(fashion_root, reference, tmp_path) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    for name in (CHECKPOINT, PREVIOUS):  # final.pt alone, as results copied from elsewhere
        (out / name).unlink()
    final = (out / FINAL).read_bytes()
    result = run(fashion_root, out, "lr=0.01", "method=deit")
    assert result.returncode == 1 and "is a finished run of another config" in result.stderr, result.stderr
    assert "'lr': (0.001, 0.01)" in result.stderr and "'method': ('transmix', 'deit')" in result.stderr
    (out / RESOLVED).write_text("trained elsewhere\n")  # what a copy brings along: kept as it is
    result = run(fashion_root, out)
    assert result.returncode == 0 and "already finished" in result.stderr, result.stderr
    assert (out / FINAL).read_bytes() == final and not (out / CHECKPOINT).exists()
    assert (out / RESOLVED).read_text() == "trained elsewhere\n"


def test_a_truncated_final_is_named_then_written_again(fashion_root, reference, tmp_path) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    data = (out / FINAL).read_bytes()
    (out / FINAL).write_bytes(data[: len(data) // 2])
    evaluate = [sys.executable, "-m", "transmix.cli", "evaluate", "--run", str(out), "--out", str(tmp_path / "e.csv")]
    result = subprocess.run(evaluate, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and f"{out / FINAL} does not load" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    result = run(fashion_root, out)  # the checkpoint holds the last epoch: final.pt is written from it
    assert result.returncode == 0 and "already finished" not in result.stderr, result.stderr
    assert f"writing {FINAL} from the checkpoint" in result.stderr, result.stderr
    same_weights(reference / FINAL, out / FINAL)


def test_a_second_trainer_into_the_same_folder_is_refused(fashion_root, tmp_path) -> None:
    out = tmp_path / "run"
    first = start(fashion_root, out)
    wait_for_line(first, "epoch 2/3 step 8/32")  # epoch 1 is saved: the folder holds a checkpoint of its config
    first.send_signal(signal.SIGSTOP)  # holding the lock mid-run, however long the second takes to start
    second = run(fashion_root, out)
    assert second.returncode == 1 and f"is being trained by process {first.pid}" in second.stderr, second.stderr
    first.kill()  # the lock goes with the process that held it
    first.wait()
    again = start(fashion_root, out, "epochs=1", "warmup_epochs=0")
    _, err = again.communicate(timeout=300)
    assert "belongs to a run with another config" in err  # it got past the lock, to the config check


def test_a_run_that_fails_at_the_start_leaves_no_folder(tmp_path) -> None:
    out = tmp_path / "run"
    result = run(tmp_path / "nowhere", out)
    assert result.returncode == 1 and "is not prepared" in result.stderr, result.stderr
    assert not out.exists()
