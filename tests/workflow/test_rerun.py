"""A changed study setting reruns what it affects, for real, and keeps the old run aside."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow  # starts Snakemake and trains

RUN = "vit_micro_patch4_28__transmix__s0"


def test_a_changed_train_key_retrains_and_keeps_the_old_run_aside(pipeline, snakemake) -> None:
    config = pipeline / "workflow/config/smoke.yaml"
    target = f"results/smoke/train/{RUN}/final.pt"
    first = snakemake(pipeline, "--cores", "1", target, "--configfile", str(config))
    assert first.returncode == 0, first.stderr
    old = torch.load(pipeline / target, weights_only=True)

    config.write_text(config.read_text().replace("  lr: 0.002\n", "  lr: 0.003\n"))
    second = snakemake(pipeline, "--cores", "1", target, "--configfile", str(config))
    assert second.returncode == 0, second.stderr
    new = torch.load(pipeline / target, weights_only=True)
    assert (old["config"]["lr"], new["config"]["lr"]) == (0.002, 0.003)
    aside = pipeline / f"results/smoke/train/{RUN}.{old['config_hash']}"
    assert (aside / "checkpoint.pt").is_file() and (aside / "history.jsonl").is_file(), "the old run is kept"
    log = (pipeline / f"results/smoke/logs/train/{RUN}.log").read_text()
    assert f"moved it to {aside.relative_to(pipeline)}" in log
