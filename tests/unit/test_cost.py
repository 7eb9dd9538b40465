"""GPU-hour estimates rest on counted FLOPs; the count is checked against a hand count."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from transmix.cli import main
from transmix.tools.cost import forward_flops, study_cost, train_images

REPO = Path(__file__).resolve().parents[2]


def test_vit_micro_flops_match_a_hand_count() -> None:
    # 28 px, patch 4: 49 patches + class token = 50 tokens of width 64; 4 blocks, 4 heads of 16, MLP 64 -> 128.
    n, d = 50, 64
    embed = 49 * 16 * d
    block = n * d * 3 * d + 2 * 4 * n * n * 16 + n * d * d + 2 * n * d * 2 * d  # qkv, q@k and attn@v, proj, MLP
    head = d * 10
    flops, params = forward_flops("vit_micro_patch4_28", 28, in_chans=1, num_classes=10)
    assert flops == 2 * (embed + 4 * block + head)  # multiply-adds count twice
    assert params == pytest.approx(0.139e6, rel=0.01)


def test_study_cost_is_three_forwards_per_image_and_epoch(tmp_path, capsys) -> None:
    study = {"models": ["vit_micro_patch4_28"], "methods": ["deit", "transmix"], "seeds": [0, 1, 2],
             "train": {"epochs": 4}}  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    (cost,) = study_cost(path, tflops=1e-6, images=1000)
    flops, _ = forward_flops("vit_micro_patch4_28", 28, in_chans=1, num_classes=10)  # built for Fashion-MNIST
    assert cost.runs == 6 and cost.gflops == pytest.approx(flops / 1e9)
    assert cost.gpu_hours == pytest.approx(3 * flops * 1000 * 4 / 1e6 / 3600) and cost.minutes == cost.gpu_hours * 60
    assert main(["cost", "--config", str(path), "--tflops", "0"]) == 2
    assert "--tflops 0.0 must be > 0" in capsys.readouterr().err


def test_a_cifar_study_counts_cifar_images(capsys) -> None:
    assert main(["cost", "--config", str(REPO / "workflow/config/cifar100.yaml"), "--tflops", "150"]) == 0
    out = capsys.readouterr().out
    assert "50000 images per epoch" in out and "deit_small_patch16_224" in out


def test_a_fashion_study_counts_its_training_images_on_one_channel(tmp_path, capsys) -> None:
    # The GPU study: all 60,000 images; the tiny ViT's 50 tokens of width 192, 12 blocks, MLP 768, by hand
    n, d = 50, 192
    block = n * d * 3 * d + 2 * 3 * n * n * 64 + n * d * d + 2 * n * d * 4 * d  # qkv, q@k and attn@v, proj, MLP
    flops, _ = forward_flops("vit_tiny_patch4_28", 28, in_chans=1, num_classes=10)
    assert flops == 2 * (49 * 16 * d + 12 * block + d * 10)
    assert main(["cost", "--config", str(REPO / "workflow/config/fashion_gpu.yaml"), "--tflops", "100"]) == 0
    out = capsys.readouterr().out
    assert "60000 images per epoch" in out and "vit_tiny_patch4_28" in out and "min / run" in out
    subset = tmp_path / "subset.yaml"
    subset.write_text(yaml.safe_dump({"models": ["vit_micro_patch4_28"], "methods": ["deit"], "seeds": [0],
                                      "train": {"train_subset": 500}}))  # fmt: skip
    assert train_images(subset) == 500
