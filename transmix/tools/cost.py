"""The cost of a study in GPU-hours, from counted FLOPs and a GPU's throughput.

``GPU-hours = 3 * F * images * epochs / (peak * utilization) / 3600`` per run, where ``F`` is the forward FLOPs of
one image, counted by ``torch.utils.flop_counter`` on the real timm model at the study's ``img_size`` (timm's
attention switched to its explicit matrices while counting, so that the attention products are counted too), and
3x forward is the usual estimate of forward + backward. ``peak * utilization`` is the training throughput the GPU
reaches: measured on a GPU with ``transmix bench --set device=cuda --set precision=bf16`` (images/s converts to it
as ``images/s * 3 * F``), or assumed and then stated beside every figure. The model is built for the study's data
(one channel and 10 classes for Fashion-MNIST, 100 classes for CIFAR-100, ImageNet's 1000 otherwise), and the
images per epoch are the study's: Fashion-MNIST's ``train_subset`` or its 60,000, CIFAR's 50,000, else ImageNet-1k's.
A run of a few minutes reads better in minutes, so the table gives both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from transmix.config.study import Study

log = logging.getLogger(__name__)
IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k's training split


@dataclass(frozen=True)
class Cost:
    model: str
    params_m: float
    gflops: float  # forward, one image
    gpu_hours: float  # one run of the study's epochs
    runs: int

    @property
    def minutes(self) -> float:
        """Minutes of one run."""
        return self.gpu_hours * 60


def data_shape(dataset: str) -> tuple[int, int]:
    """(input channels, classes) of a study's dataset: the head and the patch embedding are counted as trained."""
    return {"fashion_mnist": (1, 10), "cifar10": (3, 10), "cifar100": (3, 100)}.get(dataset, (3, 1000))


def forward_flops(model_name: str, img_size: int, in_chans: int = 3, num_classes: int = 1000) -> tuple[float, float]:
    """(forward FLOPs of one image, parameters) of a model built as the study builds it, counted on CPU (with
    autograd on: the counter's module tracker needs it)."""
    import torch
    from timm.layers import set_fused_attn
    from torch.utils.flop_counter import FlopCounterMode

    from transmix.method.models import create_model

    set_fused_attn(False)  # the fused kernel is not counted by FlopCounterMode; the explicit matmuls are
    try:
        model = create_model(model_name, num_classes=num_classes, in_chans=in_chans, img_size=img_size).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_chans, img_size, img_size))
    finally:
        set_fused_attn(True)
    return float(counter.get_total_flops()), float(sum(p.numel() for p in model.parameters()))


def train_images(config: str | Path) -> int:
    """Training images per epoch of a study: Fashion-MNIST's ``train_subset`` (0: all 60,000), CIFAR's 50,000, else
    ImageNet-1k's (a class-folder study's size is not known without reading its tree: pass ``--images``)."""
    from transmix.data.cifar import TRAIN_IMAGES
    from transmix.data.prepare import TRAIN_IMAGES as FASHION_TRAIN_IMAGES

    study = Study(yaml.safe_load(Path(config).read_text()))
    if study.dataset == "fashion_mnist":
        subset = study.default("train_subset")
        return min(subset, FASHION_TRAIN_IMAGES) if subset > 0 else FASHION_TRAIN_IMAGES
    return TRAIN_IMAGES if study.dataset in ("cifar10", "cifar100") else IMAGENET_TRAIN_IMAGES


def study_cost(config: str | Path, tflops: float, images: int = IMAGENET_TRAIN_IMAGES) -> list[Cost]:
    """GPU-hours per model of a study config, at ``tflops`` sustained training throughput (TFLOP/s)."""
    study = Study(yaml.safe_load(Path(config).read_text()))
    in_chans, num_classes = data_shape(study.dataset)
    out = []
    for number, name in enumerate(study.models, 1):
        log.info("counting FLOPs of %s (%d of %d)", name, number, len(study.models))
        cfg = study.model_config(name)
        flops, params = forward_flops(name, cfg.img_size, in_chans, num_classes)
        hours = 3 * flops * images * cfg.total_epochs / (tflops * 1e12) / 3600  # cooldown included
        runs = (len(study.methods) + len(study.more_methods.get(name, []))) * len(study.seeds)
        out.append(Cost(name, params / 1e6, flops / 1e9, hours, runs))
    return out


def format_table(costs: list[Cost], tflops: float, images: int) -> str:
    lines = [f"GPU-hours at {tflops:g} TFLOP/s sustained, {images} images per epoch (3 x forward FLOPs per image)",
             f"{'model':34} {'params (M)':>10} {'GFLOPs':>8} {'min / run':>9} {'h / run':>9} {'runs':>5} "
             f"{'h total':>9}"]  # fmt: skip
    for c in costs:
        lines.append(f"{c.model:34} {c.params_m:10.1f} {c.gflops:8.3f} {c.minutes:9.2f} {c.gpu_hours:9.2f} "
                     f"{c.runs:5d} {c.gpu_hours * c.runs:9.2f}")  # fmt: skip
    total = sum(c.gpu_hours * c.runs for c in costs)
    lines.append(f"{'study total':34} {'':>10} {'':>8} {'':>9} {'':>9} {'':>5} {total:9.2f} ({total * 60:.1f} min)")
    return "\n".join(lines)
