"""Occlusion and shuffling: what a model makes of an image when whole patches vanish or the layout is scrambled."""

from __future__ import annotations

import math

import torch
from torch import nn

from transmix.config.strict import ConfigError
from transmix.method.attention import last_attention
from transmix.method.mixing import token_cells
from transmix.robustness.context import Context, Rows


def patch_cells(model: nn.Module, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The token of every pixel row and column of an input of ``size``: two index tensors ``(H,)``, ``(W,)``.

    Tokens are the cells of the grid the class token attends to (:func:`transmix.method.mixing.token_cells`), the same
    cells the CutMix box is mapped to: ViT/DeiT/CaiT patches, Swin's merged patches, and for XCiT and PVT-v2
    (padded convolutions) cells centred on ``i * stride``; on 28 pixels with stride 8 that is 4, 8, 8, 8 pixels.
    """
    target = last_attention(model)
    out = []
    for side, tokens, stride in zip(size, target.grid, target.stride, strict=True):
        cells = token_cells(side, tokens, stride, target.centered)
        out.append(torch.repeat_interleave(torch.arange(tokens), cells[:, 1] - cells[:, 0]))
    return out[0], out[1]


def occlude(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, fraction: float, gen: torch.Generator,
            background: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Set ``round(fraction * cells)`` random patches of each image to ``background`` (a pixel, ``(C, 1, 1)``); one
    patch set per image.

    The count is rounded half up (0.1 of 49 patches: 5). Every image draws its own set from ``gen``, also at
    fraction 0, so that the draws of later fractions do not depend on whether 0 is in the list.
    """
    n = len(images)
    gh, gw = int(rows.max()) + 1, int(cols.max()) + 1
    cells = gh * gw
    k = math.floor(fraction * cells + 0.5)
    order = torch.rand(n, cells, generator=gen).argsort(dim=1)
    drop = torch.zeros(n, cells, dtype=torch.bool).scatter_(1, order[:, :k], True).view(n, gh, gw)
    mask = drop[:, rows][:, :, cols]  # (N, H, W)
    return torch.where(mask[:, None], background.to(images.dtype), images)


def occlusion(ctx: Context) -> Rows:
    """Top-1 with a random fraction of the model's patches blacked out ("random patch drop"); ``level`` = fraction.

    ``setting`` = patch_drop. The patches are those of :func:`patch_cells`, so a model sees whole tokens vanish;
    they turn black (Fashion-MNIST's background; the zero image of the paper's occlusion study).
    """
    test = ctx.data.head(ctx.protocol.occlusion_images)
    rows, cols = patch_cells(next(iter(ctx.models.values())), tuple(test.images.shape[-2:]))
    out: Rows = []
    for fraction in ctx.protocol.occlusion_fractions:
        images = occlude(test.images, rows, cols, fraction, ctx.gen, test.background)
        out += ctx.top1_rows(images, test.labels, "occlusion", "patch_drop", fraction)
    return out


def shuffle_cells(images: torch.Tensor, grid: int, gen: torch.Generator) -> torch.Tensor:
    """Cut each image into ``grid x grid`` equal cells and put them back in a random order, one order per image.

    Cells must be equal for any cell to fit any slot, so ``grid`` must divide the image's height and width.

    Raises:
        ConfigError: ``grid`` does not divide the image; the message lists the sizes that do.
    """
    n, chans, height, width = images.shape
    if height % grid or width % grid:
        divisors = [g for g in range(1, min(height, width) + 1) if height % g == 0 and width % g == 0]
        raise ConfigError(f"shuffle_grids holds {grid}, which does not cut the {height}x{width} image into equal "
                          f"cells; use divisors: {', '.join(map(str, divisors))}")  # fmt: skip
    ch, cw = height // grid, width // grid
    cells = images.reshape(n, chans, grid, ch, grid, cw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, chans,
                                                                                            ch, cw)  # fmt: skip
    order = torch.rand(n, grid * grid, generator=gen).argsort(dim=1)
    cells = cells[torch.arange(n)[:, None], order]
    return cells.reshape(n, grid, grid, chans, ch, cw).permute(0, 3, 1, 4, 2, 5).reshape(n, chans, height, width)


def shuffle(ctx: Context) -> Rows:
    """Top-1 on images whose g x g cells are randomly permuted (spatial-structure shuffling); ``level`` = g.

    ``setting`` = patch_shuffle. g = 1 is the clean image; cells are image cells, not the model's patches.
    """
    test = ctx.data.head(ctx.protocol.shuffle_images)
    for grid in ctx.protocol.shuffle_grids:  # check every size before spending time on any
        shuffle_cells(test.images[:1], grid, torch.Generator())
    out: Rows = []
    for grid in ctx.protocol.shuffle_grids:
        images = shuffle_cells(test.images, grid, ctx.gen)
        out += ctx.top1_rows(images, test.labels, "shuffle", "patch_shuffle", grid)
    return out
