"""The tensor augmentation against the PIL path it stands in for: timm's own op functions, torchvision's crop."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps
from timm.data.auto_augment import _HPARAMS_DEFAULT, _RAND_INCREASING_TRANSFORMS, LEVEL_TO_ARG, NAME_TO_OP
from torchvision.transforms import InterpolationMode

from transmix.data.compat import _posterize
from transmix.data.draws import Draw, Op
from transmix.data.tensor_aug import augment

SIZE = 64
PIL_FILTER = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
TV_FILTER = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
             "bicubic": InterpolationMode.BICUBIC}  # fmt: skip
POLICY_FUNCTIONS = {NAME_TO_OP[name] for name in _RAND_INCREASING_TRANSFORMS}  # rand-m9-mstd0.5-inc1's ops
SUPPORTED = sorted(name for name, fn in NAME_TO_OP.items() if fn in POLICY_FUNCTIONS)
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
EXACT = {"AutoContrast", "Equalize", "Invert", "Posterize", "PosterizeIncreasing", "PosterizeOriginal", "Solarize",
         "SolarizeIncreasing", "SolarizeAdd"}  # fmt: skip
MAGNITUDES = (0.0, 1.0, 3.0, 5.0, 7.5, 9.0, 9.5, 10.0, 10.0)  # 10: PosterizeIncreasing keeps 0 bits, a black image


def photo(height: int, width: int, rng: np.random.Generator, contrast: float = 1.0) -> np.ndarray:
    """``(H, W, 3)`` uint8 that looks like a photograph to these ops: smooth gradients, an edge, noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, 3)
    base = np.stack([
        255 * xx / width,
        255 * yy / height,
        128 + 80 * np.sin(xx / rng.uniform(3, 9) + phase[2]) * np.cos(yy / rng.uniform(3, 9) + phase[1]),
    ], axis=-1)  # fmt: skip
    base[: height // 3, width // 2 :] = rng.uniform(0, 255, 3)  # a flat patch with sharp edges
    noisy = 128 + contrast * (base - 128) + rng.normal(0, 12, base.shape)
    return np.clip(noisy.round(), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sources() -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Images with the SIZE x SIZE box each is cropped to: whole 64x64 ones, crops of larger ones, one of low contrast
    (AutoContrast stretches it), one flat (AutoContrast and Equalize must leave it), one clipped at 0 and 255."""
    rng = np.random.default_rng(7)
    images = [(photo(SIZE, SIZE, rng), (0, 0, SIZE, SIZE)) for _ in range(4)]
    images += [(photo(80, 96, rng), (9, 21, SIZE, SIZE)), (photo(112, 72, rng), (40, 3, SIZE, SIZE))]
    images.append((photo(SIZE, SIZE, rng, contrast=0.25), (0, 0, SIZE, SIZE)))
    images.append((np.full((SIZE, SIZE, 3), (90, 140, 200), np.uint8), (0, 0, SIZE, SIZE)))
    images.append((photo(SIZE, SIZE, rng, contrast=3.0), (0, 0, SIZE, SIZE)))
    return images


def tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def make_op(name: str, magnitude: float, resample: str = "", fill: tuple[int, int, int] = (124, 116, 104)) -> Op:
    """The op timm's RandAugment would run at this magnitude (its level function negates at random)."""
    level = LEVEL_TO_ARG[name]
    return Op(name, level(magnitude, _HPARAMS_DEFAULT) if level else (), resample, fill)


def pil_op(image: Image.Image, op: Op) -> Image.Image:
    """timm's op function on a PIL image, posterize as the PIL path runs it (0 bits: black)."""
    fn = _posterize if NAME_TO_OP[op.name].__name__ == "posterize" else NAME_TO_OP[op.name]
    return fn(image, *op.args, fillcolor=op.fill, resample=PIL_FILTER.get(op.resample, Image.BICUBIC))


def op_cases() -> list[tuple[str, str]]:
    filters = ("bilinear", "bicubic", "nearest")
    return [(name, f) for name in SUPPORTED for f in (filters if name in GEOMETRIC else ("",))]


@pytest.mark.parametrize(("name", "resample"), op_cases())
def test_op_matches_timm_on_pil(sources: list[tuple[np.ndarray, tuple[int, int, int, int]]], name: str,
                                resample: str) -> None:  # fmt: skip
    random.seed(f"{name}/{resample}")  # the level functions' random sign
    fills = [(124, 116, 104), (0, 0, 0), (255, 10, 128)]
    ops = [make_op(name, m, resample, fills[i % 3]) for i, m in enumerate(MAGNITUDES)]  # per-sample args, one group
    draws = [Draw(box, "bilinear", False, False, (op,)) for (_, box), op in zip(sources, ops, strict=True)]
    got = augment([tensor(image) for image, _ in sources], draws, SIZE).permute(0, 2, 3, 1).numpy().astype(int)
    want = []
    for (image, (top, left, h, w)), op in zip(sources, ops, strict=True):
        want.append(np.asarray(pil_op(Image.fromarray(image[top : top + h, left : left + w]), op)))
    diff = np.abs(got - np.stack(want))
    if name in EXACT:
        assert diff.max() == 0  # integer look-up tables: nothing to round
    elif resample == "nearest":
        # A source coordinate that lands on a pixel boundary can pick the neighbouring pixel where Pillow's sum runs
        # in another order (16.16 fixed point, or float64 accumulated along the row); measured: none differ.
        assert np.mean(diff > 0) <= 1e-3
    else:
        # Pillow's float arithmetic restated step by step (float32 blends, float64 sampling): exact on x86-64
        # (measured). A build that fuses multiply-adds rounds differently, which moves a truncated value by one
        # level at most, and only where it sits on an integer.
        assert diff.max() <= 1 and np.mean(diff > 0) <= 1e-3


def test_ops_change_the_image(sources: list[tuple[np.ndarray, tuple[int, int, int, int]]]) -> None:
    # The comparison above could pass with both sides the identity (e.g. ops silently skipped): they must not be.
    image, box = sources[0]
    for name in _RAND_INCREASING_TRANSFORMS:
        random.seed(0)
        op = make_op(name, 9.0, "bilinear")
        out = augment([tensor(image)], [Draw(box, "bilinear", False, False, (op,))], SIZE)
        assert not torch.equal(out[0], tensor(image)), name


def test_posterize_zero_bits_is_black(sources: list[tuple[np.ndarray, tuple[int, int, int, int]]]) -> None:
    image, box = sources[0]
    op = make_op("PosterizeIncreasing", 10.0)
    assert op.args == (0,)
    assert augment([tensor(image)], [Draw(box, "bicubic", False, False, (op,))], SIZE).max() == 0


def crop_boxes(rng: np.random.Generator, height: int, width: int, count: int) -> list[tuple[int, int, int, int]]:
    """RandomResizedCrop-like boxes: small and large, wide and tall, shrunk and enlarged to SIZE."""
    boxes = []
    for _ in range(count):
        h, w = int(rng.integers(12, height + 1)), int(rng.integers(12, width + 1))
        boxes.append((int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w))
    return boxes


def test_crop_resize_flip_matches_torchvision_on_pil() -> None:
    rng = np.random.default_rng(3)
    images = [photo(180, 150, rng), photo(97, 203, rng), photo(256, 256, rng, contrast=2.0)]
    got, want = [], []
    for k in range(540):
        image = images[k % len(images)]
        box = crop_boxes(rng, *image.shape[:2], count=1)[0]
        filt = ("bilinear", "bicubic", "nearest")[k % 3]
        hflip, vflip = bool(rng.integers(2)), bool(k % 7 == 0)
        out = augment([tensor(image)], [Draw(box, filt, hflip, vflip, ())], SIZE)[0].permute(1, 2, 0).numpy()
        ref = TF.resized_crop(Image.fromarray(image), *box, [SIZE, SIZE], TV_FILTER[filt])
        ref = ImageOps.flip(ref) if vflip else ref
        got.append(out.astype(int))
        want.append(np.asarray(ImageOps.mirror(ref) if hflip else ref).astype(int))
    got_a, want_a = np.stack(got), np.stack(want)
    diff = np.abs(got_a - want_a)
    # Pillow's filters, supports, pass order and rounding between passes, but float32 weights where Pillow's are
    # 22-bit fixed point: a sum within that error of a half level rounds the other way. Measured: max 1, in 0.25% of
    # bilinear pixels and 0.005% of bicubic ones; nearest exact.
    assert diff.max() <= 1
    assert np.mean(diff > 0) <= 0.01
    # No drift in the statistics the network sees, per channel over the 540 crops (levels; measured < 0.01).
    np.testing.assert_allclose(got_a.mean(axis=(0, 1, 2)), want_a.mean(axis=(0, 1, 2)), atol=0.02)
    np.testing.assert_allclose(got_a.std(axis=(0, 1, 2)), want_a.std(axis=(0, 1, 2)), atol=0.02)


def mixed_batch(rng: np.random.Generator, count: int) -> tuple[list[torch.Tensor], list[Draw]]:
    """Images of differing sizes with draws as RandAugment makes them: two ops, one, none; ops repeat across
    samples (groups of several) and within one sample; both geometric filters."""
    random.seed(5)
    names = list(_RAND_INCREASING_TRANSFORMS)
    images, draws = [], []
    for k in range(count):
        image = photo(int(rng.integers(40, 120)), int(rng.integers(40, 120)), rng)
        box = crop_boxes(rng, *image.shape[:2], count=1)[0]
        filters = [("bilinear", "bicubic")[int(rng.integers(2))] for _ in range(2)]
        magnitudes = rng.uniform(0, 10, 2)
        ops = tuple(make_op(names[(k * 7 + j * 3) % len(names)], float(magnitudes[j]), filters[j])
                    for j in range((2, 2, 2, 1, 0)[k % 5]))  # fmt: skip
        images.append(tensor(image))
        draws.append(Draw(box, ("bilinear", "bicubic")[k % 2], bool(k % 2), bool(k % 5 == 0), ops))
    draws[-1] = Draw(draws[-1].crop, "bicubic", False, False, (make_op("Rotate", 9.0, "bilinear"),) * 2)
    return images, draws


def test_batching_changes_nothing() -> None:
    images, draws = mixed_batch(np.random.default_rng(11), 18)
    assert len({op.name for draw in draws for op in draw.ops}) == len(_RAND_INCREASING_TRANSFORMS)
    batched = augment(images, draws, SIZE)
    alone = torch.cat([augment([image], [draw], SIZE) for image, draw in zip(images, draws, strict=True)])
    assert batched.shape == (18, 3, SIZE, SIZE) and batched.dtype == torch.uint8
    assert torch.equal(batched, alone)


@pytest.mark.parametrize(
    "draw",
    [
        Draw((0, 0, 8, 8), "bilinear", False, False, (Op("TranslateX", (30.0,), "bilinear"),)),  # timm's, not policy's
        Draw((0, 0, 8, 8), "bilinear", False, False, (Op("GaussianBlur", (1.0,)),)),
        Draw((0, 0, 8, 8), "bilinear", False, False, (Op("Cutout", (0.2,)),)),
        Draw((0, 0, 8, 8), "bilinear", False, False, (Op("Rotate", (10.0,)),)),  # geometric op without its filter
        Draw((0, 0, 8, 8), "lanczos", False, False, ()),
        Draw((10, 0, 8, 8), "bilinear", False, False, ()),  # box leaves the 16x16 image
    ],
)
def test_rejects_what_it_cannot_apply(draw: Draw) -> None:
    with pytest.raises(ValueError):
        augment([torch.zeros((3, 16, 16), dtype=torch.uint8)], [draw], 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    images, draws = mixed_batch(np.random.default_rng(13), 32)
    # RandAugment and flips alone (boxes of the output size, nothing resized): the same float arithmetic, op by op,
    # so the bound is the one against Pillow above.
    unresized = [Draw((0, 0, 40, 40), draw.interpolation, draw.hflip, draw.vflip, draw.ops) for draw in draws]
    cpu = augment(images, unresized, 40)
    cuda = augment([image.cuda() for image in images], unresized, 40)
    assert cuda.device.type == "cuda"
    diff = (cuda.cpu().int() - cpu.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() <= 1e-3
    # The whole pipeline at the training size: CUDA's interpolate may sum in another order, which moves a resized
    # pixel on a rounding boundary by a level; some ops widen that (a pixel at Solarize's threshold, a channel's
    # min or max under AutoContrast, a histogram bin under Equalize).
    cpu = augment(images, draws, 224)
    diff = (augment([image.cuda() for image in images], draws, 224).cpu().int() - cpu.int()).abs()
    assert (diff > 0).float().mean() <= 0.01 and diff.float().mean() <= 0.1
