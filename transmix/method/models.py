"""Models: timm's registry, a class-attention head for models without a class token, and micro variants.

The micro variants (28x28 single-channel images, 10 classes, a CPU) are registered with timm, so
``timm.create_model("vit_micro_patch4_28")`` works once this module is imported and every model goes through
the same factory. They cover every family of the paper: ViT, DeiT (distilled), CaiT, XCiT, Swin and PVT-v2, and
the smaller distilled student of the distillation study. One more ViT, DeiT-Tiny's size on the same 7x7 tokens
(``vit_tiny_patch4_28``), is registered the same way for the GPU study of Fashion-MNIST.

Swin and PVT-v2 have no class token. The paper (Section 4.5) puts one CaiT class-attention block on top of
their last stage; :func:`create_model` does this for every ``swin*`` / ``pvt_v2*`` name, whatever the method, so
the baseline and TransMix train the same architecture.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import timm
import torch
from timm.layers import trunc_normal_
from timm.models import register_model
from timm.models.cait import Cait, LayerScaleBlockClassAttn
from timm.models.deit import VisionTransformerDistilled
from timm.models.pvt_v2 import PyramidVisionTransformerV2
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from timm.models.xcit import Xcit
from torch import nn

from transmix.data.fashion_mnist import MEAN as FASHION_MEAN
from transmix.data.fashion_mnist import STD as FASHION_STD

if TYPE_CHECKING:
    from transmix.config.run import TrainConfig
    from transmix.data import Split

_MICRO = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, mlp_ratio=2.0)
_FACTORY_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
NO_CLASS_TOKEN = ("swin", "pvt_v2")  # name prefixes of families that get a ClassAttentionHead
_NO_IMG_SIZE = ("pvt_v2",)  # timm's PVT-v2 takes any input size and has no img_size argument


class ClassAttentionHead(nn.Module):
    """A timm backbone without a class token, topped by a class token and one CaiT class-attention block.

    TransMix needs a class token's attention over the patch tokens; Swin and PVT-v2 have none, so the paper adds
    a class-attention layer after their last stage (Section 4.5). Tokens of the last stage, ``(B, gh*gw, C)``,
    are the keys; the class token alone is the query (timm's ``ClassAttn``), then ``norm`` and a linear head on
    the class token, as in CaiT. Attributes mirror CaiT (``cls_token``, ``blocks_token_only``, ``norm``,
    ``head``, ``num_prefix_tokens = 1``), so :func:`transmix.method.attention.last_attention` treats both alike.

    Args:
        backbone: a timm model with ``forward_features`` and ``num_features``; its own head is not used.
        num_classes: classes of the linear head.
        in_chans: input channels, for measuring the grid.
        img_size: input size the model is built for; the token grid is measured on it.
        num_heads: heads of the class-attention block; default: those of the backbone's last attention layer.
        mlp_ratio: hidden width of the block's MLP over ``C`` (CaiT's default 4).
        init_values: LayerScale initial value (CaiT's default).
        drop_rate: dropout before the linear head.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: int,
        in_chans: int,
        img_size: int | tuple[int, int],
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        init_values: float = 1e-4,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        self.backbone = backbone
        dim = int(backbone.num_features)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.embed_dim = dim
        self.num_prefix_tokens = 1
        # Swin returns NHWC features, PVT-v2 (and timm's CNNs) NCHW; timm marks the former with `output_fmt`.
        self.channels_last = getattr(backbone, "output_fmt", "NCHW") == "NHWC"
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.token_grid = self._measure_grid(in_chans, size)
        reduction = int(backbone.feature_info[-1]["reduction"])  # pixels between tokens of the last stage
        self.token_stride = (reduction, reduction)
        heads = num_heads or _last_num_heads(backbone)
        if dim % heads:
            raise ValueError(f"num_heads={heads} does not divide the backbone's {dim} features; pass num_heads")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        norm = partial(nn.LayerNorm, eps=1e-6)
        block = LayerScaleBlockClassAttn(
            dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm, init_values=init_values
        )
        self.blocks_token_only = nn.ModuleList([block])
        self.norm = norm(dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.cls_token, std=0.02)
        for module in (self.blocks_token_only, self.head):  # CaiT's init; the backbone keeps its own
            module.apply(_init_linear)

    @torch.no_grad()
    def _measure_grid(self, in_chans: int, size: tuple[int, int]) -> tuple[int, int]:
        # The grid is whatever the stages make of this input size (overlapping or padded downsampling), so it is
        # measured rather than derived from a stride. Eval mode: no RNG draws, no BatchNorm statistics touched.
        was_training = self.backbone.training
        param = next(self.backbone.parameters())
        self.backbone.eval()
        features = self.backbone.forward_features(torch.zeros(1, in_chans, *size, device=param.device))
        self.backbone.train(was_training)
        if features.ndim != 4 or features.shape[3 if self.channels_last else 1] != self.num_features:
            layout = "NHWC" if self.channels_last else "NCHW"
            raise ValueError(
                f"{type(self.backbone).__name__}.forward_features gave shape {tuple(features.shape)}, not {layout} "
                f"with {self.num_features} channels: ClassAttentionHead needs a model whose last stage is a 2D grid"
            )
        grid = features.shape[1:3] if self.channels_last else features.shape[2:4]
        return int(grid[0]), int(grid[1])

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        inner = getattr(self.backbone, "no_weight_decay", lambda: set())()
        return {"cls_token"} | {f"backbone.{name}" for name in inner}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[cls, patches]`` after the final norm, ``(B, 1 + gh*gw, C)``."""
        x = self.backbone.forward_features(x)
        x = x.flatten(1, 2) if self.channels_last else x.flatten(2).transpose(1, 2)  # (B, gh*gw, C), row-major
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for block in self.blocks_token_only:
            cls = block(x, cls)
        return self.norm(torch.cat((cls, x), dim=1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _last_num_heads(backbone: nn.Module) -> int:
    """Heads of the backbone's last attention layer, so the added block splits channels as the last stage does."""
    for module in reversed(list(backbone.modules())):
        if isinstance(getattr(module, "num_heads", None), int):
            return module.num_heads
    raise ValueError(f"{type(backbone).__name__} has no attention layer with `num_heads`; pass num_heads")


def _micro(
    cls: type[nn.Module], name: str, pretrained: bool, arch: dict[str, Any], kwargs: dict[str, Any]
) -> nn.Module:
    """A model of this module's registry: no weights to download, inputs described as Fashion-MNIST's."""
    if pretrained:
        raise ValueError(
            f"{name} is built by this package for 28 px images and has no pretrained weights; use pretrained=False"
        )
    for key in _FACTORY_ONLY:
        kwargs.pop(key, None)
    model = cls(**{**arch, **kwargs})
    # timm's models describe their inputs in `pretrained_cfg` (its distillation tasks read the normalisation);
    # these have no weights to describe, only the inputs they are built for
    args = {**arch, **kwargs}
    size = args.get("img_size", 28)
    model.pretrained_cfg = {"input_size": (args["in_chans"], size, size), "mean": (FASHION_MEAN,) * args["in_chans"],
                            "std": (FASHION_STD,) * args["in_chans"]}  # fmt: skip
    return model


@register_model
def vit_micro_patch4_28(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT, 4 blocks of width 64, 4 heads, 7x7 tokens + class token (about 0.14 M parameters)."""
    arch = dict(_MICRO, embed_dim=64, depth=4, num_heads=4)
    return _micro(VisionTransformer, "vit_micro_patch4_28", pretrained, arch, kwargs)


@register_model
def deit_micro_distilled_patch4_28(pretrained: bool = False, **kwargs: Any) -> VisionTransformerDistilled:
    """DeiT with a distillation token (two prefix tokens), otherwise as ``vit_micro_patch4_28``."""
    arch = dict(_MICRO, embed_dim=64, depth=4, num_heads=4)
    return _micro(VisionTransformerDistilled, "deit_micro_distilled_patch4_28", pretrained, arch, kwargs)


@register_model
def deit_nano_distilled_patch4_28(pretrained: bool = False, **kwargs: Any) -> VisionTransformerDistilled:
    """A smaller DeiT student with a distillation token: 4 blocks of width 32, 2 heads (about 0.04 M parameters),
    for distillation studies whose teachers are the micro models."""
    arch = dict(_MICRO, embed_dim=32, depth=4, num_heads=2)
    return _micro(VisionTransformerDistilled, "deit_nano_distilled_patch4_28", pretrained, arch, kwargs)


@register_model
def cait_micro_patch4_28(pretrained: bool = False, **kwargs: Any) -> Cait:
    """CaiT, 3 talking-heads blocks + 2 class-attention blocks of width 64, 4 heads, 7x7 tokens (0.17 M)."""
    arch = dict(
        _MICRO, embed_dim=64, depth=3, num_heads=4, depth_token_only=2, mlp_ratio_token_only=2.0, init_values=1e-5
    )
    return _micro(Cait, "cait_micro_patch4_28", pretrained, arch, kwargs)


@register_model
def xcit_micro_patch8_28(pretrained: bool = False, **kwargs: Any) -> Xcit:
    """XCiT, 3 XCA blocks + 2 class-attention blocks of width 64, 4 heads, 4x4 tokens (0.20 M).

    timm's conv patch embedding exists only for patch 8 or 16, and ``Xcit`` asserts that ``img_size`` is a
    multiple of the patch size, yet uses ``img_size`` for nothing else: its Fourier position encoding is made
    from the feature map at run time. So the model is built for ``img_size`` rounded up to a multiple of 8 and
    runs on 28x28, where three 3x3 stride-2 convs with padding 1 give 28 -> 14 -> 7 -> 4 tokens per side.
    """
    img_size = kwargs.pop("img_size", 28)
    arch = dict(_MICRO, patch_size=8, img_size=-(-img_size // 8) * 8, embed_dim=64, depth=3, num_heads=4)
    return _micro(Xcit, "xcit_micro_patch8_28", pretrained, arch, kwargs)


@register_model
def swin_micro_patch2_28(pretrained: bool = False, **kwargs: Any) -> SwinTransformer:
    """Swin, patch 2 -> 14x14 tokens of width 32 (window 7), merged to 7x7 of width 64; 2 + 2 blocks (0.09 M).

    :func:`create_model` tops it with a :class:`ClassAttentionHead` (7x7 tokens, 4 heads; 0.15 M in all).
    """
    arch = dict(_MICRO, patch_size=2, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=7)
    return _micro(SwinTransformer, "swin_micro_patch2_28", pretrained, arch, kwargs)


@register_model
def pvt_v2_micro_28(pretrained: bool = False, **kwargs: Any) -> PyramidVisionTransformerV2:
    """PVT-v2, overlapping patch embeds: 28 -> 7x7 tokens of width 32 -> 4x4 of width 64; 2 + 2 blocks (0.12 M).

    :func:`create_model` tops it with a :class:`ClassAttentionHead` (4x4 tokens, 4 heads; 0.17 M in all).
    """
    kwargs.pop("img_size", None)  # PVT-v2 runs on any size; its grid is measured by ClassAttentionHead
    arch = dict(
        in_chans=1,
        num_classes=10,
        depths=(2, 2),
        embed_dims=(32, 64),
        num_heads=(2, 4),
        sr_ratios=(2, 1),  # spatial-reduction conv of stage 1: 7x7 -> 3x3 keys; 8 (PVT-v2's) exceeds the 7x7 map
        mlp_ratios=(2.0, 2.0),
    )
    return _micro(PyramidVisionTransformerV2, "pvt_v2_micro_28", pretrained, arch, kwargs)


@register_model
def vit_tiny_patch4_28(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """DeiT-Tiny's ViT (width 192, 12 blocks, 3 heads, MLP ratio 4) on 7x7 tokens of 4 px + class token (5.4 M
    parameters): the micro ViT's layout at a size that can memorise all 60,000 Fashion-MNIST training images, for a
    GPU study where mixing has something to regularise."""
    arch = dict(_MICRO, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0)
    return _micro(VisionTransformer, "vit_tiny_patch4_28", pretrained, arch, kwargs)


MICRO_MODELS = (
    "vit_micro_patch4_28",
    "deit_micro_distilled_patch4_28",
    "cait_micro_patch4_28",
    "xcit_micro_patch8_28",
    "swin_micro_patch2_28",
    "pvt_v2_micro_28",
    "deit_nano_distilled_patch4_28",
)
OWN_MODELS = (*MICRO_MODELS, "vit_tiny_patch4_28")  # every model registered here: timm alone cannot build them


def create_model(
    name: str, *, num_classes: int, in_chans: int, img_size: int, drop_path: float = 0.0, pretrained: bool = False
) -> nn.Module:
    """Build any timm model by name for the given data, never downloading unless ``pretrained`` is asked for.

    Names starting with one of :data:`NO_CLASS_TOKEN` (Swin, PVT-v2) come as a :class:`ClassAttentionHead` on
    the timm backbone, for every method, so that baseline and TransMix runs compare the same architecture.
    """
    if not timm.is_model(name):
        raise ValueError(unknown_model(name))
    wrap = name.startswith(NO_CLASS_TOKEN)
    kwargs: dict[str, Any] = dict(
        pretrained=pretrained, num_classes=0 if wrap else num_classes, in_chans=in_chans, drop_path_rate=drop_path
    )
    if not name.startswith(_NO_IMG_SIZE):
        kwargs["img_size"] = img_size
    try:
        model = timm.create_model(name, **kwargs)
    except TypeError as err:  # CNNs (a RegNet teacher, ...) take any input size and have no img_size
        if "img_size" not in str(err):
            raise
        del kwargs["img_size"]
        model = timm.create_model(name, **kwargs)
    if not wrap:
        return model
    return ClassAttentionHead(model, num_classes=num_classes, in_chans=in_chans, img_size=img_size)


def unknown_model(name: str) -> str:
    """The message for a name timm does not know, with the closest names it does."""
    import difflib

    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    return f"model={name!r} is not in timm's registry" + (f"; did you mean {', '.join(close)}?" if close else "")


def check_model(name: str, img_size: int, in_chans: int) -> None:
    """Fail now, naming the fix, if ``name`` is unknown or its tokens cannot tile ``img_size`` pixels (so no
    CutMix box could be laid on them): what would otherwise stop a training job at its first batch. The model is
    built on the meta device: no memory, no weights."""
    from transmix.method.attention import token_grid, token_stride
    from transmix.method.mixing import token_cells

    if not timm.is_model(name):
        raise ValueError(unknown_model(name))
    with torch.device("meta"):
        model = create_model(name, num_classes=10, in_chans=in_chans, img_size=img_size)
    grid, (stride, centered) = token_grid(model), token_stride(model)
    try:
        for tokens, step in zip(grid, stride, strict=True):
            token_cells(img_size, tokens, step, centered)
    except ValueError as err:
        raise ValueError(f"model={name!r} does not fit img_size={img_size}: {err}; use an img_size its patches "
                         f"tile (e.g. {max(stride) * -(-img_size // max(stride))}) or a model made for "
                         f"{img_size} px") from None  # fmt: skip


def build_model(cfg: TrainConfig, data: Split) -> nn.Module:
    """The run's model, built for ``data``'s image shape and classes exactly as its training built it."""
    chans, height, _ = data.image_shape
    return create_model(
        cfg.model, num_classes=data.num_classes, in_chans=chans, img_size=height, drop_path=cfg.drop_path
    )
