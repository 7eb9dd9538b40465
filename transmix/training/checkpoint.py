"""What a run directory holds and how it is written, so that an interrupted run resumes to the same result.

A run directory holds ``config.resolved.yaml`` (every hyperparameter as used, plus versions and git sha),
``history.jsonl`` (one JSON line per epoch), ``checkpoint.pt`` (a :class:`Checkpoint`: everything needed to
continue, every RNG state included; the one before it is kept as ``checkpoint.prev.pt``) and, when training
finished, ``final.pt`` (raw and EMA weights). Every file is written to a temporary name and renamed
(:mod:`transmix.records.atomic`), so a crash leaves the old file or the new one; a checkpoint that does not load is set
aside and the previous one used. Files are loaded with ``weights_only=True``: no code runs from a checkpoint.

SIGTERM (preemption) and Ctrl-C raise a flag (:func:`preemption_flag`) that the loop reads at step boundaries; it
then saves and raises :class:`Preempted`, and the command exits with :data:`PREEMPTED_EXIT` so that the job is
retried. While a run trains, ``train.lock`` keeps a second trainer out of its folder (:func:`run_lock`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from transmix import __version__
from transmix.errors import Failure, Stopped
from transmix.records.atomic import atomic_open
from transmix.records.layout import CHECKPOINT, CORRUPT, FINAL, HISTORY, LOCK, PREVIOUS, RESOLVED  # noqa: F401 - re-exported
from transmix.records.provenance import stack

log = logging.getLogger(__name__)

PREEMPTED_EXIT = Stopped.EXIT  # 128 + SIGTERM: the job did not finish and should be run again


class CheckpointError(Failure, RuntimeError):
    """No checkpoint of the run loads; the message says what to do."""


class Preempted(Stopped):
    """SIGTERM or Ctrl-C arrived; a checkpoint was written at a step boundary. Rerunning the same command resumes."""


@dataclass
class Progress:
    """Where a run stands: the epoch under way (0-based), the batches done in it, optimizer steps in all, the
    history rows of finished epochs, and the sums the current epoch's history row is made of."""

    epoch: int = 0
    step: int = 0
    updates: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """Everything a checkpoint saves. ``data`` is the training split's own state (:class:`TrainSplit`), ``rng``
    every random state the run draws from (torch's global RNG, the run's generator, CUDA's; under ``torchrun`` each
    process's, as ``ranks``)."""

    config: dict[str, Any]
    git_sha: str  # the code that started the run
    world_size: int
    progress: Progress
    data: dict[str, Any]
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]

    def to_state(self) -> dict[str, Any]:
        """The file's contents: one flat dict of tensors and plain values."""
        state = {k: v for k, v in vars(self).items() if k not in ("progress", "rng")}
        return {**state, **dataclasses.asdict(self.progress), **{f"rng_{k}": v for k, v in self.rng.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Checkpoint:
        progress = Progress(**{f.name: state[f.name] for f in dataclasses.fields(Progress) if f.name in state})
        data = state.get("data")
        if data is None:  # written before splits kept their own state: the in-memory order, if mid-epoch
            data = {"epoch": state["epoch"], "order": state["order"]} if state.get("order") is not None else {}
        rng = {k.removeprefix("rng_"): v for k, v in state.items() if k.startswith("rng_")}
        return cls(state["config"], state.get("git_sha", "unknown"), state.get("world_size", 1), progress, data,
                   state["model"], state["ema"], state["optimizer"], state["scheduler"], rng)  # fmt: skip


def capture_rng(gen: torch.Generator, device: torch.device, world: int = 1) -> dict[str, Any]:
    """This process's random states; under ``torchrun`` (a collective: every process calls it) also every
    process's, as ``ranks``, so that processes that draw differently (``rank_seeds``) each resume their own."""
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "gen": gen.get_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    if world > 1:
        everyone: list[Any] = [None] * world
        torch.distributed.all_gather_object(everyone, dict(rng))
        rng["ranks"] = everyone
    return rng


def restore_rng(rng: dict[str, Any], gen: torch.Generator, device: torch.device, rank: int = 0) -> None:
    """Put back this process's random states (``rank``'s own where the checkpoint kept every process's)."""
    rng = rng["ranks"][rank] if rng.get("ranks") else rng
    torch.set_rng_state(rng["torch"].cpu())  # a checkpoint loaded onto a GPU holds these states there too
    gen.set_state(rng["gen"].cpu())
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)


def atomic_save(obj: Any, path: Path, keep_previous: bool = False) -> None:
    """``torch.save`` atomically; with ``keep_previous`` the file it replaces stays as ``checkpoint.prev.pt``.

    A write that fails half-way (a full disk) reaches torch's archive writer, which raises its own error about
    positions in the archive and keeps the ``OSError`` only as context: that ``OSError`` is raised instead, naming
    ``path``, as every other write reports it."""
    try:
        with atomic_open(path, "wb") as fh:
            torch.save(obj, fh)
            if keep_previous and path.exists():
                os.replace(path, path.parent / PREVIOUS)
    except RuntimeError as err:
        if not isinstance(err.__context__, OSError):
            raise
        failed = err.__context__
        failed.filename = failed.filename or str(path)
        raise failed from None


def atomic_write_text(text: str, path: Path) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def save(checkpoint: Checkpoint, out: Path) -> None:
    atomic_save(checkpoint.to_state(), out / CHECKPOINT, keep_previous=True)


def load(out: Path, device: torch.device) -> Checkpoint | None:
    """The newest checkpoint that loads, or ``None`` in a fresh directory.

    A checkpoint that does not load (truncated by a full disk, a copy cut short) is moved aside as
    ``checkpoint.corrupt.pt`` and the previous one is used, so nothing good is overwritten later.

    Raises:
        CheckpointError: there are checkpoints, but none loads.
    """
    for name in (CHECKPOINT, PREVIOUS):
        path = out / name
        if not path.exists():
            continue
        try:
            return Checkpoint.from_state(torch.load(path, map_location=device, weights_only=True))
        except Exception as err:  # noqa: BLE001 - torch raises several types for a damaged file
            log.warning("%s does not load (%s); keeping it as %s", path, err, CORRUPT)
            if name == CHECKPOINT:
                os.replace(path, out / CORRUPT)
    if (out / CORRUPT).exists():
        raise CheckpointError(f"no loadable checkpoint in {out} (see {CORRUPT}); delete the directory to start over")
    return None


def save_final(out: Path, config: dict[str, Any], config_hash: str, git_sha: str, epochs: int,
               model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None) -> Path:  # fmt: skip
    """``final.pt``: the weights and what evaluation needs to know about the run that made them."""
    final = {"config": config, "config_hash": config_hash, "git_sha": git_sha, "package_version": __version__,
             "lock": stack(), "epochs": epochs, "model": model, "ema": ema}  # fmt: skip
    atomic_save(final, out / FINAL)
    return out / FINAL


@dataclass
class StopFlag:
    """Set by SIGTERM (a scheduler's preemption) or SIGINT (Ctrl-C); the loop reads it at step boundaries."""

    asked: bool = False
    signal: str = ""


@contextmanager
def preemption_flag() -> Iterator[StopFlag]:
    """A :class:`StopFlag` raised by SIGTERM or SIGINT: the loop then saves at the next step boundary and stops.
    A second Ctrl-C stops at once (``KeyboardInterrupt``), losing the steps since the last checkpoint. Restores the
    old handlers."""
    flag = StopFlag()

    def handler(signum: int, _frame: Any) -> None:
        if flag.asked and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.asked, flag.signal = True, signal.Signals(signum).name
        log.warning("received %s: saving a checkpoint at the next step boundary (Ctrl-C again stops at once)",
                    flag.signal)  # fmt: skip

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: no handler, no preemption support
        yield flag
        return
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def read_final(out: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """``final.pt`` of the run in ``out`` (a ``weights_only`` load).

    Raises:
        FileNotFoundError: the run has not finished.
        CheckpointError: the file does not load (cut short by a full disk or a copy); the message names it.
    """
    path = Path(out) / FINAL
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run has not finished (run `transmix train` first)")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for a damaged file
        raise CheckpointError(f"{path} does not load ({type(err).__name__}: {err}); rerunning the run's "
                              "`transmix train` command writes it again from checkpoint.pt") from None  # fmt: skip


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out/train.lock`` while training: a second ``transmix train`` into the same folder is an error, not a
    folder whose checkpoint and config come from two runs. The lock goes with the process, even on SIGKILL. A
    folder made here and left empty (the run failed before writing anything) is removed."""
    import fcntl

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise CheckpointError(f"{out} is being trained by {holder}; wait for it to finish, or train into "
                                  "another --out") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
        if created and {p.name for p in out.iterdir()} <= {LOCK}:  # failed before writing anything: leave no trace
            (out / LOCK).unlink(missing_ok=True)
            out.rmdir()
