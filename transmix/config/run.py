"""Run configuration: YAML -> one frozen dataclass, strict keys, ``--set key=value`` overrides.

Every hyperparameter of a run is a field of :class:`TrainConfig`; there is no hidden default elsewhere and no
rescaling of the learning rate. The reading rules (unknown keys are errors with the closest key, numbers as
fractions, ...) are :mod:`transmix.config.strict`'s. The names each choice may take (methods, box-to-grid rules, head
rules) live here, with the keys that choose them, so that this module imports no torch or timm: the Snakefile
checks every run's config at parse time and ``transmix --help`` starts at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transmix.config.strict import ConfigError, Strict, option

__all__ = ["ConfigError", "TrainConfig", "describe", "from_dict", "load", "parse_overrides"]

METHODS = ("none", "mixup", "cutmix", "deit", "transmix")  # deit = Mixup+CutMix with area labels
BOX_TO_GRID = ("release", "area")  # how the pixel box is laid on the token grid (transmix.method.mixing.box_mask)
HEADS = ("mean", "max")  # how the heads' class-token rows are combined (transmix.method.attention.combine)
DATASETS = ("fashion_mnist", "imagefolder", "cifar10", "cifar100")
PRECISIONS = ("fp32", "bf16")
DISTILLATIONS = ("none", "soft", "hard")  # DeiT's kinds: KL to the teacher's softened outputs, or CE to its argmax
CUTMIX_BOXES = ("timm", "release")  # CutMix box rounding: today's timm, or timm 0.5.4's (mixing.rand_box)
INTERPOLATIONS = ("bicubic", "bilinear", "random")  # imagefolder training resize (random: per image, as released)
LOADERS = ("pil", "device")  # where imagefolder training images are decoded and augmented (docs/data.md)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's IMAGENET_DEFAULT_MEAN / _STD
# keys the in-memory path must leave at their default (the field's own)
IMAGEFOLDER_ONLY = ("aa", "reprob", "crop_pct", "train_interpolation", "rank_seeds", "scale", "ratio", "hflip", "vflip",
                    "color_jitter", "mean", "std", "loader")  # fmt: skip


@dataclass(frozen=True)
class TrainConfig(Strict):
    """One training run; ``transmix train --help`` lists the fields with their help text."""

    KIND = "config key"
    HELP = "transmix train --help"

    study: str = option("adhoc", "name of the study this run belongs to (results/<study>/...)", group="bookkeeping")
    ablation: str = option("", 'the ablation point this run belongs to ("" = one of the study\'s main runs)')
    seed: int = option(0, "seeds weights, data order, augmentation and mixing")
    dataset: str = option(
        "fashion_mnist",
        "fashion_mnist (in memory) | imagefolder (data_dir/{train,val}/<class>/<image>) | cifar10 | "
        "cifar100 (class folders `transmix data --dataset` writes into data_dir, then read as imagefolder)",
        group="data",
    )
    data_dir: str = option("data", "where the dataset lives (fashion_mnist: prepared by `transmix data`)")
    train_subset: int = option(0, "use the first N training images (0 = all); fashion_mnist only")
    val_subset: int = option(0, "images of the test split evaluated after each epoch (0 = all); fashion_mnist only")
    val_every: int = option(1, "validate every N epochs and after the last (the history's val_top1 is empty in "
                            "between); speed only, the training is the same")  # fmt: skip
    img_size: int = option(28, "input side in pixels; fashion_mnist is 28, imagefolder crops to it (the paper: 224)")
    aa: str = option("", 'imagefolder: timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1 (the paper\'s); "" = none')
    reprob: float = option(0.0, "imagefolder: random-erasing probability (off in the released TransMix recipe)")
    crop_pct: float = option(0.875, "imagefolder eval: resize to img_size / crop_pct, then center-crop img_size")
    scale: tuple[float, ...] = option((0.08, 1.0), "imagefolder: area range of the random-resized crop, as a "
                                      "fraction of the image (ImageNet's [0.08, 1]; small or centred data: e.g. "
                                      "[0.35, 1])")  # fmt: skip
    ratio: tuple[float, ...] = option((3 / 4, 4 / 3), "imagefolder: aspect-ratio range of the random-resized crop")
    hflip: float = option(0.5, "imagefolder: probability of a left-right flip (0 for digits, text, or any class "
                          "its orientation decides)")  # fmt: skip
    vflip: float = option(0.0, "imagefolder: probability of an upside-down flip")
    color_jitter: float = option(0.4, "imagefolder: colour-jitter strength, applied only without `aa` (timm's "
                                 "rule)")  # fmt: skip
    mean: tuple[float, ...] = option(IMAGENET_MEAN, "imagefolder: per-channel mean the images are normalised with")
    std: tuple[float, ...] = option(IMAGENET_STD, "imagefolder: per-channel standard deviation, likewise")
    train_interpolation: str = option("bicubic", "imagefolder training resize, also inside RandAugment: bicubic "
                                      "| bilinear | random (either, per image: as released)")  # fmt: skip
    loader: str = option("pil", "imagefolder training input: pil (CPU workers decode with PIL and run timm's "
                         "transforms) | device (workers read the files; JPEGs are decoded on the run's device, nvJPEG "
                         "on a GPU, and cropped, flipped and RandAugmented there by torch ops). Both draw every "
                         "image's parameters from (seed, epoch, image) alike; only pixels differ, within the "
                         "tolerances docs/data.md states")  # fmt: skip
    model: str = option("vit_micro_patch4_28", "any timm model name", group="model")
    drop_path: float = option(0.1, "stochastic depth rate")
    method: str = option(
        "transmix",
        "none | mixup | cutmix | deit | transmix; deit = Mixup+CutMix with area labels (the paper's baseline)",
        group="mixing",
    )
    mixup_alpha: float = option(0.8, "Beta(alpha, alpha) for Mixup")
    cutmix_alpha: float = option(1.0, "Beta(alpha, alpha) for CutMix")
    switch_prob: float = option(0.5, "P(CutMix) when both are on; the released DeiT-S recipe ran 0.5, DeiT-B 0.8")
    cutmix_box: str = option("timm", "CutMix box rounding: timm (today's rand_bbox, y_high = cy + (cut_h + 1) // 2) | "
                             "release (timm 0.5.4's, y_high = cy + cut_h // 2: 1 px smaller for odd cuts)")  # fmt: skip
    mix_prob: float = option(1.0, "P(a batch is mixed at all)")
    area_weight: float = option(0.5, "TransMix w in lam = w*lam_area + (1-w)*lam_attn; 0.5 as released")
    box_to_grid: str = option("release", "release (nearest, as the official code) | area (pasted fraction per patch)")
    attn_block: int = option(-1, "TransMix: deepest block whose class-token attention is read (-1 last, -2 before)")
    attn_blocks: int = option(1, "TransMix: mean of this many blocks ending at attn_block (1 = it alone, as released)")
    attn_heads: str = option("mean", "TransMix: heads combined by mean (as released) | max")
    label_smoothing: float = option(0.1, "label smoothing of the (mixed) targets")
    teacher: str = option("", "a finished run directory whose final.pt teaches this run (frozen, in eval mode; "
                          "its EMA weights when it kept them, else its raw weights); it sees the same mixed images "
                          "as the student", group="distillation")  # fmt: skip
    distillation: str = option("none", "none | soft (KL to the teacher's outputs at temperature distill_tau) | "
                               "hard (cross-entropy to the teacher's top class), as DeiT defines them; a distilled "
                               "student (deit_*_distilled_*) learns from the teacher through its distillation "
                               "token")  # fmt: skip
    distill_alpha: float = option(0.5, "loss = (1 - alpha) x label loss + alpha x distillation loss (DeiT's 0.5)")
    distill_tau: float = option(1.0, "soft distillation's temperature (DeiT's 1.0); hard takes none")
    epochs: int = option(10, "training epochs", group="optimisation (lr is used as given: no batch-size scaling)")
    batch_size: int = option(128, "per process; must be even when mixing")
    opt: str = option("adamw", "any timm optimizer name")
    lr: float = option(1e-3, "peak learning rate")
    weight_decay: float = option(0.05, "weight decay")
    cooldown_epochs: int = option(0, "epochs at min_lr after the schedule's `epochs` (timm's cooldown; the release "
                                  "trained 300 + 10)")  # fmt: skip
    sched: str = option("cosine", "any timm scheduler name")
    sched_on_epochs: bool = option(False, "step the schedule and its warmup once per epoch, as the release (timm's "
                                   "t_in_epochs); false: every update")  # fmt: skip
    warmup_epochs: int = option(1, "linear warmup from warmup_lr")
    warmup_lr: float = option(1e-6, "learning rate at the start of warmup")
    min_lr: float = option(1e-5, "learning rate at the end of the schedule")
    ema_decay: float = option(0.998, "model EMA decay (0 = no EMA)")
    ema_warmup: bool = option(True, "EMA decay warms up as 1 - (1 + step)^(-2/3) up to ema_decay (timm's "
                              "ModelEmaV3); false: ema_decay from step 0, as the release's ModelEmaV2")  # fmt: skip
    device: str = option("auto", "auto | cpu | cuda | cuda:N", group="execution")
    precision: str = option("fp32", "fp32 | bf16 (autocast)")
    num_workers: int = option(-1, "loader worker processes per process (imagefolder; unused in memory); -1 = the "
                              "CPUs of the allocation shared by the node's processes, one left to each trainer. "
                              "Speed only: each image's augmentation is seeded by (seed, epoch, image)")  # fmt: skip
    sync_every: int = option(1, "steps between waits for the device (loss check, SIGTERM agreement, progress); a "
                             "SIGTERM is saved within this many steps")  # fmt: skip
    compile: bool = option(False, "torch.compile the model (the attention capture included)")
    fused: bool = option(False, "the optimizer's fused one-kernel step (torch's fused=True, e.g. AdamW)")
    tf32: bool = option(False, "TF32 matrix products and convolutions for float32 work on CUDA")
    rank_seeds: bool = option(False, "imagefolder under torchrun: process r draws its mixing and stochastic depth "
                              "from seed + r, as the release; false: every process the same draws (imagefolder only: "
                              "in memory, one draw mixes the global batch)")  # fmt: skip

    def check(self) -> None:
        choices = {"method": METHODS, "box_to_grid": BOX_TO_GRID, "dataset": DATASETS, "precision": PRECISIONS,
                   "attn_heads": HEADS, "cutmix_box": CUTMIX_BOXES, "train_interpolation": INTERPOLATIONS,
                   "distillation": DISTILLATIONS, "loader": LOADERS}  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        self._check_ranges()
        self._check_attention_keys()
        self._check_dataset_keys()
        self._check_mixing()
        self._check_distillation()

    def _check_ranges(self) -> None:
        for name in ("switch_prob", "mix_prob", "area_weight", "label_smoothing", "drop_path", "reprob", "hflip",
                     "vflip"):  # fmt: skip
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must lie in [0, 1]")
        for name in ("mixup_alpha", "cutmix_alpha", "weight_decay", "warmup_lr", "min_lr", "train_subset",
                     "val_subset", "warmup_epochs", "cooldown_epochs"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        if self.num_workers < -1:
            raise ConfigError(f"num_workers={self.num_workers} must be >= 0, or -1 for the allocation's CPUs")
        for name in ("epochs", "batch_size", "img_size", "sync_every", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"crop_pct={self.crop_pct} must lie in (0, 1]; 0.875 (= 224/256) is DeiT's")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr} must be > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay} must lie in [0, 1); 0 turns EMA off")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs} must be smaller than epochs={self.epochs}; set "
                              f"warmup_epochs={max(self.epochs - 1, 0)} (0 = no warmup)")  # fmt: skip
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be >= 0")
        self._check_augmentation()

    def _check_augmentation(self) -> None:
        for name, top in (("scale", 1.0), ("ratio", math.inf)):
            values = getattr(self, name)
            if len(values) != 2 or not 0 < values[0] <= values[1] <= top:
                bound = " <= 1" if name == "scale" else ""
                raise ConfigError(f"{name}={list(values)} must be two numbers [low, high], 0 < low <= high{bound}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean={list(self.mean)}, std={list(self.std)}: three numbers each (one per colour "
                              "channel; grey images are read as RGB), every std > 0")  # fmt: skip
        if self.color_jitter < 0:
            raise ConfigError(f"color_jitter={self.color_jitter} must be >= 0 (0 turns it off)")
        if self.dataset == "fashion_mnist":
            return  # its keys are checked with the dataset's (_check_dataset_keys)
        if self.loader == "device" and self.aa and not self.aa.startswith("rand-"):
            raise ConfigError(f"loader=device runs timm's RandAugment (aa=rand-...), not aa={self.aa!r}: set "
                              "loader: pil for it")  # fmt: skip
        if self.loader == "device" and not self.aa and self.color_jitter > 0:
            raise ConfigError(f"loader=device has no colour jitter (color_jitter={self.color_jitter}, used without "
                              "aa): set color_jitter: 0, an aa=rand-... policy, or loader: pil")  # fmt: skip

    def _check_attention_keys(self) -> None:
        if self.attn_blocks < 1:
            raise ConfigError(f"attn_blocks={self.attn_blocks} must be >= 1 (1 reads only attn_block)")
        attn_keys = {"attn_block": -1, "attn_blocks": 1, "attn_heads": "mean"}
        changed = [k for k, v in attn_keys.items() if getattr(self, k) != v]
        if self.method != "transmix" and changed:
            raise ConfigError(f"{', '.join(changed)} set for method={self.method}: only transmix reads the "
                              "attention; remove it")  # fmt: skip

    def _check_mixing(self) -> None:
        if self.mixes and self.batch_size % 2:
            raise ConfigError(
                f"batch_size={self.batch_size} is odd, but method={self.method} mixes each image with the batch "
                f"reversed; use an even batch_size such as {self.batch_size + 1}"
            )
        if self.method == "mixup" and self.mixup_alpha == 0:
            raise ConfigError("method=mixup needs mixup_alpha > 0")
        if self.method in ("cutmix", "transmix") and self.cutmix_alpha == 0:
            raise ConfigError(f"method={self.method} needs cutmix_alpha > 0 (TransMix re-weights CutMix batches)")
        if self.method == "deit" and self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise ConfigError("method=deit needs mixup_alpha > 0 or cutmix_alpha > 0")

    def _check_distillation(self) -> None:
        if self.distillation == "none":
            changed = [k for k in ("teacher", "distill_alpha", "distill_tau")
                       if getattr(self, k) != self.__dataclass_fields__[k].default]  # fmt: skip
            if changed:
                raise ConfigError(f"{', '.join(changed)} set with distillation=none; set distillation=soft or hard, "
                                  "or remove them")  # fmt: skip
            return
        if not self.teacher:
            raise ConfigError(f"distillation={self.distillation} needs teacher=<a finished run directory>")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ConfigError(f"distill_alpha={self.distill_alpha} must lie in [0, 1]")
        if not self.distill_tau > 0:
            raise ConfigError(f"distill_tau={self.distill_tau} must be > 0")
        if self.distillation == "hard" and self.distill_tau != 1.0:
            raise ConfigError(f"distill_tau={self.distill_tau} set with distillation=hard, which takes the "
                              "teacher's top class (no temperature); remove it or use soft")  # fmt: skip

    def _check_dataset_keys(self) -> None:
        """Keys of one data path set for the other are errors: a silently ignored key is a wrong experiment."""
        if self.dataset == "fashion_mnist":
            if self.img_size != 28:
                raise ConfigError(f"img_size={self.img_size}, but dataset=fashion_mnist is 28x28; leave img_size at 28")
            for name in IMAGEFOLDER_ONLY:
                if getattr(self, name) != self.__dataclass_fields__[name].default:
                    raise ConfigError(f"{name}={getattr(self, name)!r} applies to dataset=imagefolder only; remove it "
                                      "(Fashion-MNIST has its own fixed augmentation)")  # fmt: skip
            return
        for name in ("train_subset", "val_subset"):
            if getattr(self, name):
                raise ConfigError(f"{name}={getattr(self, name)} applies to dataset=fashion_mnist only (the first N "
                                  "images of a class-folder tree are its first classes); set it to 0 and point "
                                  "data_dir at a smaller folder instead")  # fmt: skip
        if self.aa:
            _check_auto_augment(self.aa, self.img_size)

    @property
    def total_epochs(self) -> int:
        """Epochs trained: the schedule's ``epochs`` and the cooldown after it."""
        return self.epochs + self.cooldown_epochs

    @property
    def mixes(self) -> bool:
        return self.method != "none"

    def hash(self) -> str:
        """Short hash of every field: two runs with the same hash trained the same way."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@functools.cache
def _check_auto_augment(policy: str, img_size: int) -> None:
    """timm parses its own policy strings, so timm checks them (once per policy: a study checks many runs)."""
    from timm.data import create_transform

    try:
        create_transform(img_size, is_training=True, auto_augment=policy)
    except (AssertionError, ValueError, KeyError) as err:
        raise ConfigError(f"aa={policy!r} is not a timm auto-augment policy ({err}); the paper's is "
                          "rand-m9-mstd0.5-inc1, and '' turns it off") from None  # fmt: skip


STUDY_KEYS = {"models", "methods", "seeds", "train", "ablations"}  # keys that only a study config has


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Strict: every key must be a field, every value of the field's type; a study config is named as such."""
    _not_a_study(values)
    return TrainConfig.from_dict(values)


def _not_a_study(values: dict[str, Any]) -> None:
    if STUDY_KEYS & set(values):
        raise ConfigError(f"this is a study config (it has {', '.join(sorted(STUDY_KEYS & set(values)))}): run it "
                          "with `snakemake --cores all --configfile FILE`; `transmix train --config` takes one run's "
                          "keys (those under a study's `train:`)")  # fmt: skip


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- YAML file (optional) <- ``key=value`` overrides; a study config is named as such."""
    if path is not None and Path(path).is_file():
        loaded = yaml.safe_load(Path(path).read_text())
        if isinstance(loaded, dict):
            _not_a_study(loaded)
    return TrainConfig.load(path, overrides)


parse_overrides = TrainConfig.parse_overrides
describe = TrainConfig.describe
