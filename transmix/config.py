"""Run configuration: YAML -> one frozen dataclass, strict keys, ``--set key=value`` overrides.

Every hyperparameter of a run is a field of :class:`TrainConfig`; there is no hidden default elsewhere and no
rescaling of the learning rate. An unknown key is an error that names the key and the closest known one (the
official release silently ignored ``mixup-switch-prob`` spelled with hyphens).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from transmix.attention import HEADS
from transmix.mixing import BOX_TO_GRID, METHODS


class ConfigError(ValueError):
    """A config value or key is wrong; the message names it and the fix."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Field comments are the documentation; ``transmix train --help`` lists them."""

    # --- bookkeeping
    study: str = "adhoc"  # name of the study this run belongs to (results/<study>/...)
    ablation: str = ""  # the ablation point this run belongs to ("" = one of the study's main runs)
    seed: int = 0  # seeds weights, data order, augmentation and mixing
    # --- data
    dataset: str = "fashion_mnist"  # fashion_mnist (in memory) | imagefolder (data_dir/{train,val}/<class>/<image>)
    data_dir: str = "data"  # where the dataset lives (fashion_mnist: prepared by `transmix data`)
    train_subset: int = 0  # use the first N training images (0 = all); fashion_mnist only
    val_subset: int = 0  # images of the test split evaluated after each epoch (0 = all); fashion_mnist only
    img_size: int = 28  # input side in pixels; fashion_mnist is 28, imagefolder crops to it (the paper: 224)
    aa: str = ""  # imagefolder: timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1 (the paper's); "" = none
    reprob: float = 0.0  # imagefolder: random-erasing probability (off in the released TransMix recipe)
    crop_pct: float = 0.875  # imagefolder eval: resize to img_size / crop_pct, then center-crop img_size
    # --- model
    model: str = "vit_micro_patch4_28"  # any timm model name
    drop_path: float = 0.1  # stochastic depth rate
    # --- mixing (method: none | mixup | cutmix | deit | transmix)
    method: str = "transmix"  # deit = Mixup+CutMix with area labels (the paper's baseline)
    mixup_alpha: float = 0.8  # Beta(alpha, alpha) for Mixup
    cutmix_alpha: float = 1.0  # Beta(alpha, alpha) for CutMix
    switch_prob: float = 0.5  # P(CutMix) when both are on; the released DeiT-S recipe ran 0.5, DeiT-B 0.8
    mix_prob: float = 1.0  # P(a batch is mixed at all)
    area_weight: float = 0.5  # TransMix w in lam = w*lam_area + (1-w)*lam_attn; 0.5 as released
    box_to_grid: str = "release"  # release (nearest, as the official code) | area (pasted fraction per patch)
    attn_block: int = -1  # TransMix: deepest block whose class-token attention is read (-1 last, -2 the one before)
    attn_blocks: int = 1  # TransMix: mean of this many blocks ending at attn_block (1 = that block, as released)
    attn_heads: str = "mean"  # TransMix: heads combined by mean (as released) | max
    label_smoothing: float = 0.1
    # --- optimisation (lr is used as given: no batch-size scaling)
    epochs: int = 10
    batch_size: int = 128  # per process; must be even when mixing
    opt: str = "adamw"  # any timm optimizer name
    lr: float = 1e-3
    weight_decay: float = 0.05
    sched: str = "cosine"  # any timm scheduler name; stepped every update
    warmup_epochs: int = 1
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    ema_decay: float = 0.998  # model EMA decay (0 = no EMA)
    # --- execution
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    num_workers: int = 0  # DataLoader worker processes per process (imagefolder); unused for in-memory datasets

    def __post_init__(self) -> None:
        _check_choice("method", self.method, METHODS)
        _check_choice("box_to_grid", self.box_to_grid, BOX_TO_GRID)
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("precision", self.precision, ("fp32", "bf16"))
        _check_choice("attn_heads", self.attn_heads, HEADS)
        if self.attn_blocks < 1:
            raise ConfigError(f"attn_blocks={self.attn_blocks} must be >= 1 (1 reads only attn_block)")
        attn_keys = {"attn_block": -1, "attn_blocks": 1, "attn_heads": "mean"}
        if self.method != "transmix" and any(getattr(self, k) != v for k, v in attn_keys.items()):
            raise ConfigError(f"{', '.join(k for k, v in attn_keys.items() if getattr(self, k) != v)} set for "
                              f"method={self.method}: only transmix reads the attention; remove it")  # fmt: skip
        for name in ("switch_prob", "mix_prob", "area_weight", "label_smoothing", "drop_path", "reprob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}={value} must lie in [0, 1]")
        for name in (
            "mixup_alpha",
            "cutmix_alpha",
            "weight_decay",
            "warmup_lr",
            "min_lr",
            "train_subset",
            "val_subset",
            "warmup_epochs",
            "num_workers",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("epochs", "batch_size", "img_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"crop_pct={self.crop_pct} must lie in (0, 1]; 0.875 (= 224/256) is DeiT's")
        self._check_dataset_keys()
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr} must be > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay} must lie in [0, 1); 0 turns EMA off")
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
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs} must be smaller than epochs={self.epochs}")

    def _check_dataset_keys(self) -> None:
        """Keys of one data path set for the other are errors: a silently ignored key is a wrong experiment."""
        if self.dataset == "fashion_mnist":
            if self.img_size != 28:
                raise ConfigError(f"img_size={self.img_size}, but dataset=fashion_mnist is 28x28; leave img_size at 28")
            for name, default in IMAGEFOLDER_ONLY.items():
                if getattr(self, name) != default:
                    raise ConfigError(f"{name}={getattr(self, name)!r} applies to dataset=imagefolder only; remove it "
                                      "(Fashion-MNIST has its own fixed augmentation)")  # fmt: skip
            return
        for name in ("train_subset", "val_subset"):
            if getattr(self, name):
                raise ConfigError(f"{name}={getattr(self, name)} applies to dataset=fashion_mnist only (the first N "
                                  "images of a class-folder tree are its first classes); set it to 0 and point "
                                  "data_dir at a smaller folder instead")  # fmt: skip
        if self.aa:
            from timm.data import create_transform

            try:
                create_transform(self.img_size, is_training=True, auto_augment=self.aa)
            except (AssertionError, ValueError, KeyError) as err:
                raise ConfigError(f"aa={self.aa!r} is not a timm auto-augment policy ({err}); the paper's is "
                                  "rand-m9-mstd0.5-inc1, and '' turns it off") from None  # fmt: skip

    @property
    def mixes(self) -> bool:
        return self.method != "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Short hash of every field: two runs with the same hash trained the same way."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def replace(self, **changes: Any) -> TrainConfig:
        return from_dict({**self.to_dict(), **changes})


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")


DATASETS = ("fashion_mnist", "imagefolder")
IMAGEFOLDER_ONLY = {"aa": "", "reprob": 0.0, "crop_pct": 0.875}  # keys the in-memory path must leave at default
_TYPES: dict[str, type] = get_type_hints(TrainConfig)
KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig))


def unknown_key(key: str, keys: tuple[str, ...] = KEYS, what: str = "config key",
                help_command: str = "transmix train --help") -> ConfigError:  # fmt: skip
    """The error for a key no field has, with the closest field (hyphens read as underscores)."""
    close = difflib.get_close_matches(key.replace("-", "_"), keys, n=1, cutoff=0.6)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return ConfigError(f"unknown {what} `{key}`{hint} (known keys: {help_command})")


def _coerce(key: str, value: Any) -> Any:
    kind = _TYPES[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if kind in (int, float) and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            return kind(value)
        except ValueError:
            pass
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r} has type {type(value).__name__}; expected {kind.__name__}")
    return value


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Strict: every key must be a field, every value of the field's type."""
    for key in values:
        if key not in _TYPES:
            raise unknown_key(key)
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=0.001", "method=deit"]`` -> ``{"lr": 0.001, "method": "deit"}``; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not key=value (example: --set lr=0.0005)")
        key = key.strip()
        if key not in _TYPES:
            raise unknown_key(key)
        out[key] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- YAML file (optional) <- ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of key: value")
        values.update(loaded)
    values.update(parse_overrides(overrides or []))
    return from_dict(values)


def describe() -> str:
    """Every key with its default and comment, for ``--help``."""
    source = Path(__file__).read_text().splitlines()
    lines = []
    for field in fields(TrainConfig):
        comment = next(
            (s.split("#", 1)[1].strip() for s in source if s.strip().startswith(f"{field.name}:") and "#" in s), ""
        )
        lines.append(f"  {field.name} = {field.default!r}" + (f"  ({comment})" if comment else ""))
    return "\n".join(lines)
