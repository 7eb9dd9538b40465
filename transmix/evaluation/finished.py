"""A finished run, loaded once: its config, its saved state, and its models by variant (raw, EMA)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from transmix.config.run import TrainConfig, from_dict
from transmix.data import Split
from transmix.method.models import build_model
from transmix.training.checkpoint import read_final


def load_final(run_dir: str | Path, device: torch.device) -> tuple[TrainConfig, dict[str, Any]]:
    """A finished run's config and saved state (``weights_only`` load)."""
    state = read_final(Path(run_dir), device)
    return from_dict(state["config"]), state


def variants(cfg: TrainConfig, state: dict[str, Any], like: Split, device: torch.device) -> dict[str, nn.Module]:
    """The run's models by variant, built for ``like``'s images: ``raw`` and, when it trained an EMA, ``ema``; in
    eval mode."""
    out = {}
    for name, key in (("raw", "model"), ("ema", "ema")):
        if state[key] is None:
            continue
        model = build_model(cfg, like).to(device)
        model.load_state_dict(state[key])
        out[name] = model.eval()
    return out
