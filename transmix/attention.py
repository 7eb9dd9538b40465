"""The class token's attention of the last block, captured with timm's fused attention left on.

The official release forks timm to return the full attention matrix. Here two forward hooks on the last
block's ``q_norm``/``k_norm`` (identity modules unless the model uses QK-norm) see ``q`` and ``k`` as the
block uses them, and only the class-token row ``softmax(q_cls k^T * scale)`` is computed: ``B * H * N * D``
extra work instead of materialising ``B * H * N * N``. The block itself still runs
``F.scaled_dot_product_attention``, so the logits are untouched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def last_attention(model: nn.Module) -> tuple[nn.Module, int, tuple[int, int]]:
    """The attention module whose class-token row TransMix uses, the number of prefix tokens, the token grid.

    Raises:
        ValueError: for a model without a class token or with an attention module this package does not know.
    """
    blocks = getattr(model, "blocks", None)
    prefix = getattr(model, "num_prefix_tokens", 0)
    patch_embed = getattr(model, "patch_embed", None)
    if blocks is None or patch_embed is None or prefix < 1:
        raise ValueError(
            f"{type(model).__name__} has no class token and ViT-style `blocks`: TransMix needs a model whose "
            "last block attends from a class token (ViT/DeiT families from timm)"
        )
    attn = blocks[-1].attn
    for name in ("q_norm", "k_norm", "scale", "num_heads"):
        if not hasattr(attn, name):
            raise ValueError(f"{type(attn).__name__} has no `{name}`; it is not a timm Attention module")
    grid = tuple(int(g) for g in patch_embed.grid_size)
    return attn, int(prefix), (grid[0], grid[1])


class ClassAttention:
    """Captures the class token's attention over patch tokens in the last block, mean over heads, detached.

    Hooks stay registered; capture happens only while :attr:`enabled` is true, so baseline and Mixup steps pay
    nothing. After a forward pass :attr:`attn` is ``(B, N_patches)`` in float32 and sums to at most one per
    row (the rest went to prefix tokens).
    """

    def __init__(self, model: nn.Module):
        self.module, self.num_prefix_tokens, self.grid = last_attention(model)
        self.enabled = False
        self.attn: torch.Tensor | None = None
        self._q_cls: torch.Tensor | None = None
        self._handles = [
            self.module.q_norm.register_forward_hook(self._on_q),
            self.module.k_norm.register_forward_hook(self._on_k),
        ]

    def _on_q(self, _module: nn.Module, _inputs: Any, q: torch.Tensor) -> None:
        if self.enabled:
            self._q_cls = q[:, :, :1].detach()  # (B, H, 1, D): the class token is token 0

    def _on_k(self, _module: nn.Module, _inputs: Any, k: torch.Tensor) -> None:
        if not self.enabled:
            return
        if self._q_cls is None:
            raise RuntimeError("k_norm ran before q_norm: this attention module is not the timm layout")
        with torch.no_grad():
            logits = (self._q_cls.float() @ k.detach().float().transpose(-2, -1)) * self.module.scale
            row = logits.softmax(dim=-1).mean(dim=1)[:, 0]  # (B, N): mean over heads
            self.attn = row[:, self.num_prefix_tokens :]
        self._q_cls = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class ExplicitClassAttention:
    """The official release's way: the last block computes the full attention matrix (fused attention off).

    Used as the reference in tests and as a column in ``transmix bench``. Reads the matrix where timm applies
    attention dropout, i.e. after the softmax and before the dropout, as the release does.
    """

    def __init__(self, model: nn.Module):
        self.module, self.num_prefix_tokens, self.grid = last_attention(model)
        self._was_fused = self.module.fused_attn
        self.module.fused_attn = False
        self.enabled = False
        self.attn: torch.Tensor | None = None
        self._handle = self.module.attn_drop.register_forward_hook(self._on_drop)

    def _on_drop(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        if self.enabled:
            matrix = inputs[0].detach().float()  # (B, H, N, N)
            self.attn = matrix[:, :, 0, self.num_prefix_tokens :].mean(dim=1)

    def remove(self) -> None:
        self._handle.remove()
        self.module.fused_attn = self._was_fused
