"""The class token's attention of the last attention layer, captured with timm's fused attention left on.

The official release forks timm to return the full attention matrix. Here two forward hooks see ``q`` and ``k``
exactly as the attention layer uses them, and only the class-token row ``softmax(q_cls k^T * scale)`` is
computed: ``B * H * N * D`` extra work instead of materialising ``B * H * N * N``. The layer itself still runs
``F.scaled_dot_product_attention``, so the logits are untouched.

Two layouts of timm cover every family of the paper (:func:`last_attention` picks one):

* ViT / DeiT (``vision_transformer.Attention``, last of ``blocks``): hooks on ``q_norm`` / ``k_norm`` (identity
  unless the model uses QK-norm) whose outputs are ``(B, H, N, D)``; the class token is token 0.
* CaiT, XCiT and :class:`transmix.models.ClassAttentionHead` on Swin / PVT-v2 (``cait.ClassAttn``, last of
  ``blocks_token_only`` / ``cls_attn_blocks``): hooks on the ``q`` / ``k`` linear layers. ``q`` is computed from
  the class token only, ``(B, C)``; ``k`` from ``[cls, patches]``, ``(B, N, C)``; both are split into heads
  here as ``ClassAttn.forward`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from timm.models.cait import ClassAttn
from torch import nn


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
    """

    attn: nn.Module
    q_at: nn.Module
    k_at: nn.Module
    split_heads: bool
    num_prefix_tokens: int
    grid: tuple[int, int]

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


def last_attention(model: nn.Module) -> Target:
    """The attention layer whose class-token row TransMix uses, and how to hook it.

    Raises:
        ValueError: for a model without a class token or with an attention layer this package does not know.
    """
    name = type(model).__name__
    class_blocks = getattr(model, "blocks_token_only", None) or getattr(model, "cls_attn_blocks", None)
    if class_blocks:  # CaiT, XCiT, ClassAttentionHead: the class token alone attends in these blocks
        attn = class_blocks[-1].attn
        if not isinstance(attn, ClassAttn):
            raise ValueError(f"{name}'s last class-attention block holds {type(attn).__name__}, not timm's ClassAttn")
        return Target(attn, attn.q, attn.k, True, int(model.num_prefix_tokens), token_grid(model))
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "patch_embed") or getattr(model, "num_prefix_tokens", 0) < 1:
        raise ValueError(
            f"{name} has no class token and no class-attention blocks: TransMix needs a class token's attention. "
            "Use a ViT/DeiT/CaiT/XCiT model, or build Swin/PVT-v2 with transmix.models.create_model, which adds a "
            "class-attention block (ClassAttentionHead)"
        )
    attn = blocks[-1].attn
    for attr in ("q_norm", "k_norm", "scale", "num_heads"):
        if not hasattr(attn, attr):
            raise ValueError(
                f"{name}'s last block has {type(attn).__name__} without `{attr}`: not timm's ViT Attention; "
                "supported: ViT/DeiT Attention and CaiT/XCiT ClassAttn"
            )
    return Target(attn, attn.q_norm, attn.k_norm, False, int(model.num_prefix_tokens), token_grid(model))


class ClassAttention:
    """Captures the class token's attention over patch tokens in the last attention layer, mean over heads.

    Hooks stay registered; capture happens only while :attr:`enabled` is true, so baseline and Mixup steps pay
    nothing. After a forward pass :attr:`attn` is ``(B, N_patches)`` in float32, detached, and sums to at most
    one per row (the rest went to prefix tokens).
    """

    def __init__(self, model: nn.Module):
        self.target = last_attention(model)
        self.module = self.target.attn
        self.num_prefix_tokens, self.grid = self.target.num_prefix_tokens, self.target.grid
        self.enabled = False
        self.attn: torch.Tensor | None = None
        self._q_cls: torch.Tensor | None = None
        self._handles = [
            self.target.q_at.register_forward_hook(self._on_q),
            self.target.k_at.register_forward_hook(self._on_k),
        ]

    def _on_q(self, _module: nn.Module, _inputs: Any, q: torch.Tensor) -> None:
        if self.enabled:
            self._q_cls = self.target.heads(q.detach())[:, :, :1]  # (B, H, 1, D): the class token is token 0

    def _on_k(self, _module: nn.Module, _inputs: Any, k: torch.Tensor) -> None:
        if not self.enabled:
            return
        if self._q_cls is None:
            raise RuntimeError(f"{type(self.target.k_at).__name__} ran before the q hook: not the timm layout")
        with torch.no_grad():
            k = self.target.heads(k.detach())  # (B, H, N, D)
            logits = (self._q_cls.float() @ k.float().transpose(-2, -1)) * self.target.attn.scale
            row = logits.softmax(dim=-1).mean(dim=1)[:, 0]  # (B, N): mean over heads
            self.attn = row[:, self.num_prefix_tokens :]
        self._q_cls = None
        _check_grid(self.attn, self.grid)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class ExplicitClassAttention:
    """The official release's way: the last attention layer computes the full matrix (fused attention off).

    Used as the reference in tests and as a column in ``transmix bench``. Reads the matrix where timm applies
    attention dropout, i.e. after the softmax and before the dropout, as the release does. For ``ClassAttn``
    the matrix has a single query row, the class token's.
    """

    def __init__(self, model: nn.Module):
        self.target = last_attention(model)
        self.module = self.target.attn
        self.num_prefix_tokens, self.grid = self.target.num_prefix_tokens, self.target.grid
        self._was_fused = self.module.fused_attn
        self.module.fused_attn = False
        self.enabled = False
        self.attn: torch.Tensor | None = None
        self._handle = self.module.attn_drop.register_forward_hook(self._on_drop)

    def _on_drop(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        if self.enabled:
            matrix = inputs[0].detach().float()  # (B, H, N_queries, N)
            self.attn = matrix[:, :, 0, self.num_prefix_tokens :].mean(dim=1)
            _check_grid(self.attn, self.grid)

    def remove(self) -> None:
        self._handle.remove()
        self.module.fused_attn = self._was_fused


def _check_grid(attn: torch.Tensor, grid: tuple[int, int]) -> None:
    # A wrong grid would silently misplace the CutMix box on the tokens; input of another size is the usual cause.
    if attn.shape[1] != grid[0] * grid[1]:
        raise ValueError(
            f"the class token attended to {attn.shape[1]} patch tokens, but the model's token grid is {grid}: "
            "feed images of the img_size the model was built for"
        )
