"""Models: timm's registry, plus micro ViT/DeiT variants sized for 28x28 single-channel images on a CPU.

The micro variants are registered with timm, so ``timm.create_model("vit_micro_patch4_28")`` works once this
module is imported and every model goes through the same factory. Patch 4 on 28x28 gives a 7x7 token grid,
fine enough for a CutMix box to cover a varying number of patches.
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models import register_model
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from torch import nn

_MICRO = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, mlp_ratio=2.0)
_FACTORY_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _micro(cls: type[nn.Module], name: str, pretrained: bool, arch: dict[str, Any], kwargs: dict[str, Any]):
    if pretrained:
        raise ValueError(f"{name} is a micro model for CPU runs and has no pretrained weights; use pretrained=False")
    for key in _FACTORY_ONLY:
        kwargs.pop(key, None)
    return cls(**{**_MICRO, **arch, **kwargs})


@register_model
def vit_micro_patch4_28(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT, 4 blocks of width 64, 4 heads, 7x7 tokens + class token (about 0.14 M parameters)."""
    arch = dict(embed_dim=64, depth=4, num_heads=4)
    return _micro(VisionTransformer, "vit_micro_patch4_28", pretrained, arch, kwargs)


@register_model
def deit_micro_distilled_patch4_28(pretrained: bool = False, **kwargs: Any) -> VisionTransformerDistilled:
    """DeiT with a distillation token (two prefix tokens), otherwise as ``vit_micro_patch4_28``."""
    arch = dict(embed_dim=64, depth=4, num_heads=4)
    return _micro(VisionTransformerDistilled, "deit_micro_distilled_patch4_28", pretrained, arch, kwargs)


MICRO_MODELS = ("vit_micro_patch4_28", "deit_micro_distilled_patch4_28")


def create_model(
    name: str, *, num_classes: int, in_chans: int, img_size: int, drop_path: float = 0.0, pretrained: bool = False
) -> nn.Module:
    """Build any timm model by name for the given data, never downloading unless ``pretrained`` is asked for."""
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise ValueError(f"model={name!r} is not in timm's registry; similar names: {close}")
    return timm.create_model(
        name,
        pretrained=pretrained,
        num_classes=num_classes,
        in_chans=in_chans,
        img_size=img_size,
        drop_path_rate=drop_path,
    )
