"""timm's training augmentation of decoded images, as torch ops on whatever device the images are on.

The device path decodes a batch on the GPU; this module then applies the :class:`~transmix.data.draws.Draw` the
host drew for each image: crop the box and resize it, flip, then the RandAugment ops. The same code runs on the CPU
(CI) and on CUDA (training). Nothing here reads a device tensor back to the host: every per-sample parameter comes
from the draws, and the RandAugment ops run batched, one call per op and slot over the samples that drew that op.

What matches PIL (Pillow, as timm calls it) and why:

* Exactly, by construction: Invert, Solarize, SolarizeAdd, Posterize (0 bits: black, as
  :func:`transmix.data.compat._posterize`), AutoContrast and Equalize are integer look-up tables; AutoContrast's
  table is computed in float64 as Pillow's Python code computes it, and Equalize is torchvision's, which restates
  Pillow's. Brightness, Color, Contrast and Sharpness repeat Pillow's arithmetic step by step: its integer
  grayscale (``(19595 R + 38470 G + 7471 B + 2**15) >> 16``), its rounded grayscale mean, its 3x3 SMOOTH filter
  summed row by row in float32 with the border left as it is, and ``Image.blend``'s float32
  ``in1 + alpha * (in2 - in1)`` truncated and clipped. Exactness assumes both sides round each float32 step (no
  fused multiply-add); CPU and CUDA both do for separate tensor ops.
* Exactly but for coordinates that land on a pixel boundary: Rotate, ShearX/Y and TranslateX/YRel. They sample as
  ``Image.transform(AFFINE)`` does: the inverse matrix Pillow builds (``Image.rotate``'s about the centre, with its
  ``round(.., 15)``), pixel centres at ``+0.5``, points outside the image take the fill colour, neighbours clamped
  at the edge, bilinear and Pillow's bicubic (``a = -1``, not torch's ``-0.75``; ``grid_sample`` therefore does not
  fit) truncated to uint8, nearest in Pillow's 16.16 fixed point. All in float64, but a differently ordered sum
  can still put a coordinate on the other side of a boundary: a few pixels in a thousand may differ.
* Within one level: the crop's resize (nearest: exact). ``interpolate(antialias=True)`` has Pillow's filters and
  supports, and runs here as Pillow does, one axis at a time in Pillow 13's order, rounding to uint8 in between;
  but its weights are float32 where Pillow's are 22-bit fixed point, so a sum within that error of a half level
  rounds the other way: about 0.3% of pixels with bilinear, 0.005% with bicubic, each by one level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.data.auto_augment import NAME_TO_OP
from torchvision.transforms.v2.functional import equalize as tv_equalize

from transmix.data.draws import Draw, Op

FILTERS = ("nearest", "bilinear", "bicubic")
_RESIZE_MODE = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}  # nearest-exact: PIL's
_L_WEIGHTS = (19595, 38470, 7471)  # Pillow's RGB -> L in 16-bit fixed point, rounded by adding 2**15
_SMOOTH_SIDE = float(np.float32(1 / 13))  # ImageFilter.SMOOTH's weights, rounded to float32 as Pillow stores them
_SMOOTH_CENTRE = float(np.float32(5 / 13))

Kernel = Callable[[torch.Tensor, Sequence[Op]], torch.Tensor]


def augment(images: Sequence[torch.Tensor], draws: Sequence[Draw], size: int) -> torch.Tensor:
    """Crop, resize, flip and RandAugment each image as its draw says, on the images' device.

    Args:
        images: uint8 ``(3, H, W)`` tensors, sizes may differ, all on one device.
        draws: one :class:`Draw` per image, made on the host.
        size: the side of the square output.

    Returns:
        uint8 ``(B, 3, size, size)`` on the images' device.

    Raises:
        ValueError: for a draw this module cannot apply (an op outside the paper's policy, an unknown filter, a box
            outside its image), before any work is done.
    """
    if len(images) != len(draws):
        raise ValueError(f"{len(images)} images but {len(draws)} draws")
    for image, draw in zip(images, draws, strict=True):
        _check(image, draw)
    if not images:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    batch = torch.stack([_crop_resize_flip(image, draw, size) for image, draw in zip(images, draws, strict=True)])
    for slot in range(max(len(draw.ops) for draw in draws)):
        groups: dict[tuple[str, str], list[int]] = {}
        for i, draw in enumerate(draws):
            if slot < len(draw.ops):
                op = draw.ops[slot]
                groups.setdefault((op.name, op.resample if op.name in _GEOMETRIC else ""), []).append(i)
        for (name, _), members in groups.items():
            ops = [draws[i].ops[slot] for i in members]
            if len(members) == len(draws):
                batch = _OPS[name](batch, ops)
            else:
                index = _to_device(members, torch.int64, batch.device)
                batch[index] = _OPS[name](batch[index], ops)
    return batch


def _check(image: torch.Tensor, draw: Draw) -> None:
    """Fail on the host, before any device work, on what would otherwise be applied wrongly or fail half-way."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"images must be uint8 (3, H, W), got {image.dtype} {tuple(image.shape)}")
    top, left, height, width = draw.crop
    if top < 0 or left < 0 or height < 1 or width < 1 or top + height > image.shape[1] or left + width > image.shape[2]:
        raise ValueError(f"crop {draw.crop} (top, left, height, width) is not inside a {tuple(image.shape[1:])} image")
    if draw.interpolation not in FILTERS:
        raise ValueError(f"interpolation={draw.interpolation!r} is not one of {FILTERS}")
    for op in draw.ops:
        if op.name not in _OPS:
            raise ValueError(f"RandAugment op {op.name!r} is not supported; supported: {sorted(_OPS)}")
        if op.name in _GEOMETRIC and op.resample not in FILTERS:
            raise ValueError(f"{op.name} needs resample in {FILTERS}, got {op.resample!r}")


def _crop_resize_flip(image: torch.Tensor, draw: Draw, size: int) -> torch.Tensor:
    """torchvision's ``resized_crop`` on a PIL image (crop, then ``Image.resize``), then the flips."""
    top, left, height, width = draw.crop
    out = image[:, top : top + height, left : left + width]
    mode = _RESIZE_MODE[draw.interpolation]
    if mode == "nearest-exact" and (height, width) != (size, size):  # PIL's nearest: floor((i + 0.5) * scale)
        out = F.interpolate(out[None].float(), size=(size, size), mode=mode)[0].to(torch.uint8)
    elif mode != "nearest-exact":
        # Pillow resizes in two passes and stores the first as uint8: rounding (and clipping bicubic's overshoot)
        # in between, in Pillow's order, keeps the two within a level of each other. Pillow 13 runs the vertical
        # pass first when the height shrinks by more than twice as many pixels as the width.
        passes = [((height, size), width != size), ((size, size), height != size)]
        if height - size > 0 and height - size > 2 * (width - size):
            passes = [((size, width), height != size), ((size, size), width != size)]
        for shape, needed in passes:
            if needed:
                resized = F.interpolate(out[None].float(), size=shape, mode=mode, antialias=True)[0]
                out = (resized + 0.5).floor().clamp(0, 255).to(torch.uint8)  # Pillow rounds half up, then clips
    if draw.hflip:
        out = out.flip(-1)
    if draw.vflip:
        out = out.flip(-2)
    return out


def _to_device(values: Sequence[Any], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Host values as a tensor on ``device``. To a GPU through pinned memory and without waiting: a tensor made from a
    list straight on the device is copied from pageable memory, which waits for the stream's queued work."""
    values = torch.tensor(values, dtype=dtype)
    return values.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else values


def _column(values: Sequence[float] | Sequence[int], like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-sample parameters as an ``(n, 1, 1, 1)`` tensor on the batch's device, broadcasting over pixels."""
    return _to_device(list(values), dtype, like.device).view(-1, 1, 1, 1)


# Look-up and integer ops: exact.


def _invert(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """``ImageOps.invert``."""
    del ops
    return 255 - x


def _solarize(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """``ImageOps.solarize``: values at or above the threshold (0..256) are inverted."""
    thresh = _column([op.args[0] for op in ops], x, torch.int16)
    return torch.where(x.to(torch.int16) < thresh, x, 255 - x)


def _solarize_add(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """timm's ``solarize_add``: values below the threshold (default 128) get ``add``, capped at 255."""
    wide = x.to(torch.int16)
    add = _column([op.args[0] for op in ops], x, torch.int16)
    thresh = _column([op.args[1] if len(op.args) > 1 else 128 for op in ops], x, torch.int16)
    return torch.where(wide < thresh, (wide + add).clamp(max=255), wide).to(torch.uint8)


def _posterize(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """timm's ``posterize``: keep the top ``bits`` bits; 8 or more keeps the image, 0 makes it black."""
    masks = [(0xFF << (8 - min(max(int(op.args[0]), 0), 8))) & 0xFF for op in ops]
    return x & _column(masks, x, torch.uint8)


def _auto_contrast(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """``ImageOps.autocontrast`` (cutoff 0): stretch each channel's min..max to 0..255, by Pillow's float64 table."""
    del ops
    flat = x.flatten(2)
    lo, hi = flat.amin(-1).double(), flat.amax(-1).double()
    stretch = hi > lo
    scale = torch.full_like(lo, 255.0) / torch.where(stretch, hi - lo, 1.0)  # a true division: `255.0 / t` is not
    offset = -lo * scale
    levels = torch.arange(256, dtype=torch.float64, device=x.device)
    lut = (levels * scale[..., None] + offset[..., None]).trunc().clamp(0, 255)  # Python's int() truncates
    lut = torch.where(stretch[..., None], lut, levels).to(torch.uint8)
    return lut.gather(-1, flat.long()).view_as(x)


def _equalize(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """``ImageOps.equalize`` per image and channel: torchvision's batched kernel restates Pillow's table."""
    del ops
    return tv_equalize(x)


# ImageEnhance: Pillow's blend with a degenerate image, in its float32 arithmetic.


def _blend(degenerate: torch.Tensor, x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """``Image.blend(degenerate, x, factor)``: ``in1 + alpha * (in2 - in1)`` in float32, truncated and clipped."""
    alpha = _column([op.args[0] for op in ops], x, torch.float32)
    base = degenerate.float()
    return (base + alpha * (x.float() - base)).floor().clamp(0, 255).to(torch.uint8)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """``convert("L")``: Pillow's fixed-point ITU-R 601-2 luma, ``(n, 1, H, W)`` int32."""
    wide = x.to(torch.int32)
    red, green, blue = _L_WEIGHTS
    return (wide[:, 0:1] * red + wide[:, 1:2] * green + wide[:, 2:3] * blue + 0x8000) >> 16


def _color(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """``ImageEnhance.Color``: blend with the image's grayscale."""
    return _blend(_gray(x), x, ops)


def _contrast(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """``ImageEnhance.Contrast``: blend with the grayscale's mean, ``int(mean + 0.5)``, in integers."""
    pixels = x.shape[-2] * x.shape[-1]
    total = _gray(x).sum(dim=(1, 2, 3), dtype=torch.int64, keepdim=True)
    return _blend((2 * total + pixels) // (2 * pixels), x, ops)


def _brightness(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """``ImageEnhance.Brightness``: blend with black."""
    return _blend(torch.zeros((), dtype=torch.uint8, device=x.device), x, ops)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """``filter(ImageFilter.SMOOTH)``: Pillow's 3x3 float32 sum (+0.5, row below first), border kept."""
    xf = x.float()

    def row(r: torch.Tensor, centre: float) -> torch.Tensor:
        return r[..., :-2] * _SMOOTH_SIDE + r[..., 1:-1] * centre + r[..., 2:] * _SMOOTH_SIDE

    total = 0.5 + row(xf[:, :, 2:], _SMOOTH_SIDE)
    total = total + row(xf[:, :, 1:-1], _SMOOTH_CENTRE)
    total = total + row(xf[:, :, :-2], _SMOOTH_SIDE)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = total.clamp(0, 255).to(torch.uint8)  # the cast truncates, as Pillow's clip8
    return out


def _sharpness(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """``ImageEnhance.Sharpness``: blend with the SMOOTH-filtered image (border pixels stay as they are)."""
    return _blend(_smooth(x), x, ops)


# Affine ops: Image.transform(AFFINE), sampled as Pillow's Geometry.c does.


def _rotate_matrix(degrees: float, width: int, height: int) -> tuple[float, ...]:
    """The inverse matrix ``Image.rotate`` builds (about the centre, no expand)."""
    angle = -math.radians(degrees % 360.0)
    a, b, d, e = (round(v, 15) for v in (math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle)))
    cx, cy = width / 2, height / 2
    return (a, b, a * -cx + b * -cy + 0.0 + cx, d, e, d * -cx + e * -cy + 0.0 + cy)


def _matrix(op: Op, width: int, height: int) -> tuple[float, ...]:
    """timm's inverse affine matrix ``(a, b, c, d, e, f)``: output ``(x, y)`` samples ``(ax + by + c, dx + ey + f)``."""
    value = op.args[0]
    kind = NAME_TO_OP[op.name].__name__
    if kind == "rotate":
        return _rotate_matrix(value, width, height)
    if kind == "shear_x":
        return (1.0, value, 0.0, 0.0, 1.0, 0.0)
    if kind == "shear_y":
        return (1.0, 0.0, 0.0, value, 1.0, 0.0)
    if kind == "translate_x_rel":
        return (1.0, 0.0, value * width, 0.0, 1.0, 0.0)
    return (1.0, 0.0, 0.0, 0.0, 1.0, value * height)


def _cubic(v1: torch.Tensor, v2: torch.Tensor, v3: torch.Tensor, v4: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Pillow's transform bicubic (``a = -1``), in its order of operations."""
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def _affine(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """``Image.transform(size, AFFINE, matrix, resample, fillcolor=fill)`` for a group sharing one filter."""
    n, channels, height, width = x.shape
    matrices = _to_device([_matrix(op, width, height) for op in ops], torch.float64, x.device)
    a = [matrices[:, k].view(n, 1, 1) for k in range(6)]
    cols = torch.arange(width, dtype=torch.float64, device=x.device).view(1, 1, width)
    rows = torch.arange(height, dtype=torch.float64, device=x.device).view(1, height, 1)
    flat = x.flatten(2)

    def gather(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        index = (yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).flatten(1)
        return flat.gather(2, index[:, None].expand(n, channels, -1)).view(n, channels, height, width)

    resample = ops[0].resample
    if resample == "nearest":
        # Pillow: translations (a[1] == a[3] == 0) in float64, other matrices in 16.16 fixed point.
        xs = (a[2] + a[0] * 0.5 + cols * a[0]).floor().expand(n, height, width)
        ys = (a[5] + a[4] * 0.5 + rows * a[4]).floor().expand(n, height, width)
        fixed = [(m * 65536.0 + 0.5).floor().long() for m in a]
        x0 = ((a[2] + a[0] * 0.5 + a[1] * 0.5) * 65536.0 + 0.5).floor().long()
        y0 = ((a[5] + a[3] * 0.5 + a[4] * 0.5) * 65536.0 + 0.5).floor().long()
        xf = (x0 + rows.long() * fixed[1] + cols.long() * fixed[0]) >> 16
        yf = (y0 + rows.long() * fixed[4] + cols.long() * fixed[3]) >> 16
        scaling = ((matrices[:, 1] == 0) & (matrices[:, 3] == 0)).view(n, 1, 1)
        xi, yi = torch.where(scaling, xs.long(), xf), torch.where(scaling, ys.long(), yf)
        inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        out = gather(yi, xi)
    else:
        xin = a[0] * (cols + 0.5) + a[1] * (rows + 0.5) + a[2]
        yin = a[3] * (cols + 0.5) + a[4] * (rows + 0.5) + a[5]
        inside = (xin >= 0) & (xin < width) & (yin >= 0) & (yin < height)
        xin, yin = xin - 0.5, yin - 0.5
        xi, yi = xin.floor(), yin.floor()
        dx, dy = (xin - xi)[:, None], (yin - yi)[:, None]
        xi, yi = xi.long(), yi.long()
        if resample == "bilinear":
            taps = [[gather(yi + j, xi + i).double() for i in (0, 1)] for j in (0, 1)]
            top = taps[0][0] + (taps[0][1] - taps[0][0]) * dx
            bottom = taps[1][0] + (taps[1][1] - taps[1][0]) * dx
            value = top + (bottom - top) * dy
        else:
            lines = [_cubic(*(gather(yi + j, xi + i).double() for i in (-1, 0, 1, 2)), dx) for j in (-1, 0, 1, 2)]
            value = _cubic(*lines, dy)
        out = value.clamp(0, 255).to(torch.uint8)  # the cast truncates, as Pillow's (UINT8)
    fill = _to_device([op.fill for op in ops], torch.uint8, x.device).view(n, channels, 1, 1)
    return torch.where(inside[:, None], out, fill)


_BY_TIMM_FUNCTION: dict[str, Kernel] = {
    "auto_contrast": _auto_contrast,
    "equalize": _equalize,
    "invert": _invert,
    "rotate": _affine,
    "posterize": _posterize,
    "solarize": _solarize,
    "solarize_add": _solarize_add,
    "color": _color,
    "contrast": _contrast,
    "brightness": _brightness,
    "sharpness": _sharpness,
    "shear_x": _affine,
    "shear_y": _affine,
    "translate_x_rel": _affine,
    "translate_y_rel": _affine,
}
# The ops of ``rand-m9-mstd0.5-inc1``, under every name timm gives them (``Posterize`` and ``PosterizeIncreasing``
# run one function on arguments their level functions already made): args here are what the level function returned.
_OPS: dict[str, Kernel] = {
    name: _BY_TIMM_FUNCTION[fn.__name__] for name, fn in NAME_TO_OP.items() if fn.__name__ in _BY_TIMM_FUNCTION
}
_GEOMETRIC = frozenset(name for name, kernel in _OPS.items() if kernel is _affine)
