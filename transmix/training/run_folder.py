"""Whether a run may write into its folder: a finished run, or one of another config, is never trained over.

The trainer asks here before it builds anything: a folder holding ``final.pt`` of this config is done; of another
config it is an error, or, when asked (``--set-aside``, what the pipeline does when a study's settings change), it is
renamed to ``<folder>.<its config hash>`` and the run starts afresh beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from transmix.config.run import TrainConfig
from transmix.errors import Failure
from transmix.training.checkpoint import CHECKPOINT, FINAL, CheckpointError, read_final

log = logging.getLogger(__name__)


class RunFolderError(Failure, RuntimeError):
    """The run folder holds what this run must not overwrite; the message says what to do."""


def config_diff(saved: dict[str, Any], cfg: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, now)}`` where a saved config differs from ``cfg``; a key added since it was saved takes its
    default, which reproduces what the run did."""
    before, now = {**TrainConfig().to_dict(), **saved}, cfg.to_dict()
    return {k: (v, now.get(k)) for k, v in before.items() if now.get(k) != v}


def set_aside_other_config(out: Path, cfg: TrainConfig) -> Path | None:
    """Rename a folder holding a run of another config (its checkpoint's, else its ``final.pt``'s) to
    ``<out>.<that config's hash>``; returns where it went (``None``: nothing to set aside)."""
    saved = next((out / name for name in (CHECKPOINT, FINAL) if (out / name).exists()), None)
    try:
        config = torch.load(saved, map_location="cpu", weights_only=True)["config"] if saved else None
    except Exception:  # noqa: BLE001 - an unreadable file is the resume's to report
        return None
    diff = config_diff(config, cfg) if config is not None else {}
    if not diff:
        return None
    aside = out.with_name(f"{out.name}.{TrainConfig.from_dict({**TrainConfig().to_dict(), **config}).hash()}")
    while aside.exists():
        aside = aside.with_name(aside.name + "+")
    out.rename(aside)
    log.warning("%s held a run of another config (%s); moved it to %s", out, diff, aside)
    return aside


def finished(out: Path, cfg: TrainConfig) -> bool:
    """Whether ``out`` holds this config's finished run: its ``final.pt`` loads and was trained with ``cfg``.

    The trainer asks this before it builds anything, so a finished run answers at once (no dataset listed, no
    model built) and its ``config.resolved.yaml`` keeps the versions and code revision that trained it. Any other
    state (no ``final.pt``, one that does not load, one of another config) is for :func:`check_final` and the
    resume to report or repair.
    """
    try:
        saved = read_final(out)
    except (FileNotFoundError, CheckpointError):
        return False
    return not config_diff(saved["config"], cfg)


def check_final(out: Path, cfg: TrainConfig) -> None:
    """For a folder without a checkpoint, where training would start afresh: refuse to overwrite a ``final.pt``.

    Raises:
        RunFolderError: it holds a finished run of another config, or a ``final.pt`` that does not load and no
            checkpoint to write it again from.
    """
    if not (out / FINAL).exists():
        return
    try:
        saved = read_final(out)
    except CheckpointError as err:
        raise RunFolderError(f"{err}; but there is no checkpoint.pt to write it from: move the folder aside and "
                             "train again") from None  # fmt: skip
    diff = config_diff(saved["config"], cfg)
    if diff:
        raise RunFolderError(f"{out / FINAL} is a finished run of another config (final.pt vs now: {diff}); "
                             "train into another --out, or move the folder aside")  # fmt: skip
