"""A finished run's weights in the layout timm loads: ``timm.create_model("local-dir:DIR", pretrained=True)``.

The release never published a checkpoint. :func:`export` writes a run's EMA (or raw) weights with timm's own
``save_for_hf``: ``model.safetensors`` and ``config.json`` (the architecture and its arguments, the class names,
the preprocessing the run evaluated with), which is also what a hub repository holds, plus a model card
(``README.md``) written from the run's config and history. timm alone can build only its own architectures, so
the models this package registers (the micro ones, the 28 px ViT-Tiny) and the class-attention head it puts on Swin
and PVT-v2 are refused, saying why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from transmix.config.run import TrainConfig
from transmix.errors import Failure
from transmix.evaluation.finished import load_final
from transmix.method.models import NO_CLASS_TOKEN, OWN_MODELS, create_model
from transmix.training.checkpoint import HISTORY

VARIANTS = {"ema": "ema", "raw": "model"}  # variant -> its weights in final.pt


class ExportError(Failure, ValueError):
    """The run cannot be exported as asked; the message says why and what can be."""


def export(run_dir: str | Path, out_dir: str | Path, variant: str = "ema") -> Path:
    """Write ``run_dir``'s ``variant`` weights to ``out_dir`` for timm; returns ``out_dir``.

    Raises:
        ExportError: the model is not one of timm's own, or the run has no such variant.
        FileNotFoundError: the run has not finished.
    """
    from timm.models import save_for_hf

    run_dir, out = Path(run_dir), Path(out_dir)
    cfg, state = load_final(run_dir, torch.device("cpu"))
    if cfg.model in OWN_MODELS or cfg.model.startswith(NO_CLASS_TOKEN):
        raise ExportError(f"{cfg.model} is built by this package (one it registers, or a timm backbone under its "
                          "class-attention head), so timm alone cannot load it; its weights are in "
                          f"{run_dir / 'final.pt'} (transmix.method.models.create_model builds it)")  # fmt: skip
    if variant not in VARIANTS or state[VARIANTS[variant]] is None:
        have = [v for v, key in VARIANTS.items() if state[key] is not None]
        raise ExportError(f"variant={variant!r}: the run has {have}")
    weights = state[VARIANTS[variant]]
    in_chans = 1 if cfg.dataset == "fashion_mnist" else 3
    num_classes = _num_classes(weights)
    model = create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, img_size=cfg.img_size)
    model.load_state_dict(weights)
    config: dict[str, Any] = {"pretrained_cfg": {"tag": f"transmix_repro_{cfg.method}"}}
    names = _class_names(cfg)
    if names is not None and len(names) == num_classes:
        config["label_names"] = names
    save_for_hf(model.eval(), str(out), model_config=config, safe_serialization=True,
                data_config=_preprocessing(cfg, in_chans))  # fmt: skip
    (out / "README.md").write_text(model_card(run_dir, cfg, state, variant))
    return out


def _num_classes(weights: dict[str, torch.Tensor]) -> int:
    heads = [t for name, t in weights.items() if name.endswith("head.weight")]
    if not heads:
        raise ExportError("no classifier head (`head.weight`) in the run's weights")
    return int(heads[-1].shape[0])


def _class_names(cfg: TrainConfig) -> list[str] | None:
    from transmix.data import DatasetMissing, class_names

    try:
        return class_names(cfg)
    except (DatasetMissing, OSError):  # the data is not here: the export carries indices only
        return None


def _preprocessing(cfg: TrainConfig, in_chans: int) -> dict[str, Any]:
    """How the run evaluated an image: its size, resize and crop, and normalisation."""
    if cfg.dataset == "fashion_mnist":
        from transmix.data.fashion_mnist import MEAN, STD

        mean, std, crop = (float(MEAN),), (float(STD),), 1.0
    else:
        mean, std, crop = tuple(cfg.mean), tuple(cfg.std), cfg.crop_pct
    return {"input_size": (in_chans, cfg.img_size, cfg.img_size), "interpolation": "bicubic", "mean": mean,
            "std": std, "crop_pct": crop}  # fmt: skip


def model_card(run_dir: Path, cfg: TrainConfig, state: dict[str, Any], variant: str) -> str:
    """A short README for the exported folder: what was trained, how, and how well (from the run's history)."""
    history = [json.loads(line) for line in (run_dir / HISTORY).read_text().splitlines()]
    field = "val_top1_ema" if variant == "ema" else "val_top1"
    tops = [(h[field], h["epoch"]) for h in history if h.get(field) is not None]
    best, last = max(tops, default=(None, None)), tops[-1] if tops else (None, None)
    keys = ("dataset", "img_size", "epochs", "cooldown_epochs", "batch_size", "lr", "weight_decay", "mixup_alpha",
            "cutmix_alpha", "switch_prob", "area_weight", "ema_decay", "precision", "seed")  # fmt: skip
    settings = "\n".join(f"| `{k}` | {getattr(cfg, k)} |" for k in keys)
    return (
        f"# {cfg.model}, {cfg.method} ({variant} weights)\n\n"
        f"Trained by transmix-repro (a reproduction of *TransMix: Attend to Mix for Vision Transformers*, Chen et "
        f"al., CVPR 2022), run `{run_dir.name}` of study `{cfg.study}`, code revision `{state.get('git_sha')}`. "
        "These are not the paper's weights: the release published none.\n\n"
        '```python\nimport timm\nmodel = timm.create_model("local-dir:THIS_FOLDER", pretrained=True)\n```\n\n'
        f"Validation top-1 ({variant}) during training: {last[0]} at the last epoch ({last[1]}), best {best[0]} at "
        f"epoch {best[1]}, on the run's per-epoch validation images (`val_subset`={cfg.val_subset}; 0 = all).\n\n"
        f"| setting | value |\n|---|---|\n{settings}\n\n"
        "Every setting of the run is in its `config.resolved.yaml`.\n"
    )
