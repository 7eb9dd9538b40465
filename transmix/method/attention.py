"""The class token's attention over the patch tokens, captured with timm's fused attention left on.

The official release forks timm to return the full attention matrix. Here two forward hooks see ``q`` and ``k``
exactly as the attention layer uses them, and only the class-token row ``softmax(q_cls k^T * scale)`` is
computed: ``B * H * N * D`` extra work instead of materialising ``B * H * N * N``. The layer itself still runs
``F.scaled_dot_product_attention``, so the logits are untouched.

By default the last attention layer is read and its heads are averaged, as released; the ablations read an
earlier block, the mean of the last ``k`` blocks, or the maximum over heads (:func:`attention_targets`).

Two layouts of timm cover every family of the paper (:func:`attention_targets` picks one):

* ViT / DeiT (``vision_transformer.Attention``, last of ``blocks``): hooks on ``q_norm`` / ``k_norm`` (identity
  unless the model uses QK-norm) whose outputs are ``(B, H, N, D)``; the class token is token 0.
* CaiT, XCiT and :class:`transmix.method.models.ClassAttentionHead` on Swin / PVT-v2 (``cait.ClassAttn``, last of
  ``blocks_token_only`` / ``cls_attn_blocks``): hooks on the ``q`` / ``k`` linear layers. ``q`` is computed from
  the class token only, ``(B, C)``; ``k`` from ``[cls, patches]``, ``(B, N, C)``; both are split into heads
  here as ``ClassAttn.forward`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from timm.models.cait import ClassAttn
from torch import nn

from transmix.config.run import HEADS
from transmix.method.mixing import Box, attention_lam, box_mask


@dataclass(frozen=True)
class Target:
    """Where a model's class token attends for the last time, and how to read ``q`` and ``k`` there.

    Attributes:
        attn: the attention layer (has ``scale``, ``num_heads``, ``fused_attn`` and ``attn_drop``).
        q_at: submodule whose output is ``q`` as the layer uses it; the class token comes first.
        k_at: submodule whose output is ``k`` of every token the class token attends to.
        split_heads: ``q_at``/``k_at`` return ``(B, [N,] C)`` (``ClassAttn``'s linear layers) rather than
            ``(B, H, N, D)`` (``Attention``'s norms).
        num_prefix_tokens: leading tokens that are not patches (class, distillation).
        grid: ``(gh, gw)`` token grid of the patches, row-major after the prefix tokens.
        stride: ``(sy, sx)`` pixels between neighbouring tokens (the network's total downsampling).
        centered: the tokens come from padded convolutions (XCiT, PVT-v2), so token ``i`` is centred on pixel
            ``i * stride``; otherwise (ViT patches, Swin) it covers pixels ``[i * stride, (i + 1) * stride)``.
    """

    attn: nn.Module
    q_at: nn.Module
    k_at: nn.Module
    split_heads: bool
    num_prefix_tokens: int
    grid: tuple[int, int]
    stride: tuple[int, int]
    centered: bool

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, H, N, D)`` view of a hooked ``q`` or ``k``."""
        if not self.split_heads:
            return t
        h = self.attn.num_heads
        return t.reshape(t.shape[0], -1, h, t.shape[-1] // h).transpose(1, 2)


def token_grid(model: nn.Module) -> tuple[int, int]:
    """The patch-token grid the model was built for."""
    grid = getattr(model, "token_grid", None)  # ClassAttentionHead: measured on its backbone
    if grid is None:
        patch_embed = model.patch_embed
        if hasattr(patch_embed, "grid_size"):  # ViT, DeiT, CaiT
            grid = patch_embed.grid_size
        else:  # XCiT's ConvPatchEmbed: 3x3 stride-2 padding-1 convs, each ceil-halves; log2(patch) of them
            grid = [-(-size // patch_embed.patch_size) for size in patch_embed.img_size]
    return int(grid[0]), int(grid[1])


def token_stride(model: nn.Module) -> tuple[tuple[int, int], bool]:
    """Pixels between neighbouring tokens, and whether tokens are centred on ``i * stride`` (padded convolutions)
    rather than covering ``[i * stride, (i + 1) * stride)`` (non-overlapping patches)."""
    stride = getattr(model, "token_stride", None)  # ClassAttentionHead: the backbone's last reduction
    if stride is None:
        patch = model.patch_embed.patch_size
        stride = (patch, patch) if isinstance(patch, int) else patch
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))  # the patch embedding's
    return (int(stride[0]), int(stride[1])), int(first_conv.padding[0]) > 0


def attention_targets(model: nn.Module, block: int = -1, count: int = 1) -> list[Target]:
    """The attention layers whose class-token rows TransMix uses, shallowest first, and how to hook them.

    Args:
        block: index of the deepest block read, among the blocks where the class token attends (``blocks`` of
            ViT/DeiT, the class-attention blocks of CaiT, XCiT and ClassAttentionHead); -1 is the last.
        count: read this many blocks ending at ``block`` (their rows are averaged).

    Raises:
        ValueError: for a model without a class token, with an attention layer this package does not know, or
            with fewer blocks than asked for.
    """
    name = type(model).__name__
    class_blocks = getattr(model, "blocks_token_only", None) or getattr(model, "cls_attn_blocks", None)
    blocks = class_blocks or getattr(model, "blocks", None)
    has_class_token = hasattr(model, "patch_embed") and getattr(model, "num_prefix_tokens", 0) >= 1
    if not class_blocks and (blocks is None or not has_class_token):
        raise ValueError(
            f"{name} has no class token and no class-attention blocks: TransMix needs a class token's attention. "
            "Use a ViT/DeiT/CaiT/XCiT model, or build Swin/PVT-v2 with transmix.method.models.create_model, which "
            "adds a class-attention block (ClassAttentionHead)"
        )
    kind = "class-attention blocks" if class_blocks else "blocks"
    deepest = block if block >= 0 else len(blocks) + block
    if not 0 <= deepest < len(blocks) or count < 1 or deepest - count + 1 < 0:
        raise ValueError(
            f"{name} has {len(blocks)} {kind} where the class token attends; attn_block={block} with "
            f"attn_blocks={count} asks for blocks {deepest - count + 1}..{deepest}"
        )
    layout = dict(num_prefix_tokens=int(model.num_prefix_tokens), grid=token_grid(model))
    stride, centered = token_stride(model)
    layout.update(stride=stride, centered=centered)
    targets = []
    for index in range(deepest - count + 1, deepest + 1):
        attn = blocks[index].attn
        if class_blocks:  # CaiT, XCiT, ClassAttentionHead: the class token alone attends in these blocks
            if not isinstance(attn, ClassAttn):
                raise ValueError(f"{name}'s class-attention block {index} holds {type(attn).__name__}, not ClassAttn")
            targets.append(Target(attn, attn.q, attn.k, True, **layout))
            continue
        for attr in ("q_norm", "k_norm", "scale", "num_heads"):
            if not hasattr(attn, attr):
                raise ValueError(
                    f"{name}'s block {index} has {type(attn).__name__} without `{attr}`: not timm's ViT Attention; "
                    "supported: ViT/DeiT Attention and CaiT/XCiT ClassAttn"
                )
        targets.append(Target(attn, attn.q_norm, attn.k_norm, False, **layout))
    return targets


def last_attention(model: nn.Module) -> Target:
    """The last attention layer where the class token attends (the released TransMix reads this one)."""
    return attention_targets(model)[-1]


def combine(rows: list[torch.Tensor], heads: str, num_prefix_tokens: int) -> torch.Tensor:
    """``(B, N_patches)`` from per-block class-token rows ``(B, H, N)``: heads by mean or max, then blocks by
    mean. Rows of the max are not normalised; :func:`transmix.method.mixing.attention_lam` normalises over patches."""
    per_block = [row.mean(dim=1) if heads == "mean" else row.amax(dim=1) for row in rows]
    return torch.stack(per_block).mean(dim=0)[:, num_prefix_tokens:]


class _Capture:
    """What both captures share: the targets, their grid, and switching capture on and off."""

    def __init__(self, model: nn.Module, block: int, count: int, heads: str):
        if heads not in HEADS:
            raise ValueError(f"attn_heads={heads!r} is not one of {HEADS}")
        self.targets = attention_targets(model, block, count)
        self.target = self.targets[-1]
        self.module = self.target.attn  # the deepest layer read
        self.num_prefix_tokens, self.grid = self.target.num_prefix_tokens, self.target.grid
        self.stride, self.centered = self.target.stride, self.target.centered
        self.heads = heads
        self.enabled = False
        self.attn: torch.Tensor | None = None
        self._rows: list[torch.Tensor] = []

    def _add(self, row: torch.Tensor) -> None:
        """Keep one block's ``(B, H, N)`` row; after the deepest block, combine them into :attr:`attn`."""
        self._rows.append(row)
        if len(self._rows) == len(self.targets):  # blocks run shallowest first, so this was the deepest
            self.attn = combine(self._rows, self.heads, self.num_prefix_tokens)
            self._rows = []
            _check_grid(self.attn, self.grid)

    def lam(self, box: Box, image_size: tuple[int, int], how: str) -> torch.Tensor:
        """TransMix's ``lam_attn`` of the last captured batch, ``(B,)``: the share of the attention outside the
        pasted ``box``, laid on this capture's token grid by the network's stride (:func:`box_mask`, ``how`` =
        ``box_to_grid``)."""
        if self.attn is None:
            raise RuntimeError("no attention captured yet: run a forward pass with `enabled = True` first")
        return attention_lam(self.attn, self.pasted(box, image_size, how, self.attn.device))

    def pasted(self, box: Box, image_size: tuple[int, int], how: str,
               device: torch.device | None = None) -> torch.Tensor:  # fmt: skip
        """The pasted ``box`` on this capture's token grid, flattened, as :meth:`lam` weighs the attention."""
        return box_mask(box, image_size, self.grid, how, self.stride, self.centered, device)


class ClassAttention(_Capture):
    """Captures the class token's attention over patch tokens: by default the last layer, mean over heads.

    Hooks stay registered; capture happens only while :attr:`enabled` is true, so baseline and Mixup steps pay
    nothing. After a forward pass :attr:`attn` is ``(B, N_patches)`` in float32, detached; with the mean over
    heads each row sums to at most one (the rest went to prefix tokens).

    Args:
        block, count: which blocks are read (see :func:`attention_targets`); their rows are averaged.
        heads: ``mean`` (as released) or ``max`` over heads.
    """

    def __init__(self, model: nn.Module, block: int = -1, count: int = 1, heads: str = "mean"):
        super().__init__(model, block, count, heads)
        self._q_cls: torch.Tensor | None = None
        self._handles = []
        for target in self.targets:
            self._handles += [
                target.q_at.register_forward_hook(partial(self._on_q, target)),
                target.k_at.register_forward_hook(partial(self._on_k, target)),
            ]

    def _on_q(self, target: Target, _module: nn.Module, _inputs: Any, q: torch.Tensor) -> None:
        if self.enabled:
            self._q_cls = target.heads(q.detach())[:, :, :1]  # (B, H, 1, D): the class token is token 0

    def _on_k(self, target: Target, _module: nn.Module, _inputs: Any, k: torch.Tensor) -> None:
        if not self.enabled:
            return
        if self._q_cls is None:
            raise RuntimeError(f"{type(target.k_at).__name__} ran before the q hook: not the timm layout")
        with torch.no_grad():
            k = target.heads(k.detach())  # (B, H, N, D)
            logits = (self._q_cls.float() @ k.float().transpose(-2, -1)) * target.attn.scale
            row = logits.softmax(dim=-1)[:, :, 0]  # (B, H, N)
        self._q_cls = None
        self._add(row)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class ExplicitClassAttention(_Capture):
    """The official release's way: the attention layers read compute the full matrix (fused attention off).

    Used as the reference in tests and as a column in ``transmix bench``. Reads the matrix where timm applies
    attention dropout, i.e. after the softmax and before the dropout, as the release does. For ``ClassAttn``
    the matrix has a single query row, the class token's.
    """

    def __init__(self, model: nn.Module, block: int = -1, count: int = 1, heads: str = "mean"):
        super().__init__(model, block, count, heads)
        self._was_fused = [target.attn.fused_attn for target in self.targets]
        self._handles = []
        for target in self.targets:
            target.attn.fused_attn = False
            self._handles.append(target.attn.attn_drop.register_forward_hook(self._on_drop))

    def _on_drop(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        if self.enabled:
            self._add(inputs[0].detach().float()[:, :, 0])  # (B, H, N_queries, N) -> the class token's row

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        for target, was_fused in zip(self.targets, self._was_fused, strict=True):
            target.attn.fused_attn = was_fused


def _check_grid(attn: torch.Tensor, grid: tuple[int, int]) -> None:
    # A wrong grid would silently misplace the CutMix box on the tokens; input of another size is the usual cause.
    if attn.shape[1] != grid[0] * grid[1]:
        raise ValueError(
            f"the class token attended to {attn.shape[1]} patch tokens, but the model's token grid is {grid}: "
            "feed images of the img_size the model was built for"
        )
