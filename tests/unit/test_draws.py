"""Host-side draws equal timm's: the PIL path's image, pixel for pixel, and the RNGs left where timm leaves them."""

from __future__ import annotations

import functools
import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_choices
from timm.data.transforms import MaybePILToTensor

from transmix.config.run import load
from transmix.config.strict import ConfigError
from transmix.data.draws import RAND_OPS, Draw, apply_pil, check_supported, draw, draw_from_rngs
from transmix.data.imagefolder import train_transform
from transmix.data.loader import seeded_rngs, stream_seed

SIDE = 64
PAPER = "aa=rand-m9-mstd0.5-inc1"
CONFIGS = {
    "paper": [PAPER],
    "random": [PAPER, "train_interpolation=random"],  # the crop's filter and each geometric op's drawn per image
    "vflip": [PAPER, "vflip=0.5"],
    "weighted": ["aa=rand-m9-mstd101-tweights"],  # uniform magnitudes, ops chosen by weight without replacement
}
SIZES = ((400, 350), (100, 300), (500, 120))  # (width, height): wide, tall, and too wide for most crop attempts
SEEDS = 200


@functools.cache
def transform(name: str):
    return train_transform(load(None, ["dataset=imagefolder", f"img_size={SIDE}", *CONFIGS[name]]))


@functools.cache
def photo(width: int, height: int) -> Image.Image:
    """Gradients (so equalize, autocontrast and the geometric ops have structure to move) under uint8 noise."""
    rng = np.random.default_rng(width * 1000 + height)
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([x / (width - 1), y / (height - 1), (x + y) / (width + height - 2)], axis=-1) * 190
    return Image.fromarray((ramps + rng.integers(0, 64, (height, width, 3))).astype(np.uint8))


def seed_of(i: int) -> int:
    return stream_seed(3, 1, i)  # as the loader seeds image i of epoch 1 in a run seeded 3


def mismatches(name: str, size: tuple[int, int], seeds: int) -> tuple[list[int], list[Draw]]:
    """Seeds whose timm tensor differs from the applied draw's, and every draw made."""
    img, steps, bad, draws = photo(*size), transform(name), [], []
    for i in range(seeds):
        with seeded_rngs(seed_of(i)):
            expected = steps(img)
        d = draw(steps, img.size, seed_of(i))
        if not torch.equal(MaybePILToTensor()(apply_pil(img, d, SIDE)), expected):
            bad.append(i)
        draws.append(d)
    return bad, draws


@pytest.fixture(scope="module")
def paper_draws() -> dict[tuple[int, int], list[Draw]]:
    found = {size: mismatches("paper", size, SEEDS) for size in SIZES}
    assert {size: bad for size, (bad, _) in found.items()} == {size: [] for size in SIZES}
    return {size: draws for size, (_, draws) in found.items()}


def test_the_papers_policy_is_bit_exact_on_every_size(paper_draws) -> None:
    assert all(len(draws) == SEEDS for draws in paper_draws.values())


def test_every_op_fires_and_the_crop_falls_back(paper_draws) -> None:
    fired = {op.name for draws in paper_draws.values() for d in draws for op in d.ops}
    assert fired == {op.name for op in transform("paper").transforms[2].ops} and len(fired) == 15
    timms = [rand_augment_choices(name, increasing) for name in ("", "weights") for increasing in (False, True)]
    assert RAND_OPS == {name for choices in timms for name in choices}
    # 500x120: ten crop attempts too tall in a row, then timm's centred crop at the widest ratio (4/3)
    assert (0, 170, 120, 160) in {d.crop for d in paper_draws[(500, 120)]}
    geometric = [op for draws in paper_draws.values() for d in draws for op in d.ops if op.resample]
    assert {op.resample for op in geometric} == {"bicubic"} and {op.fill for op in geometric} == {(124, 116, 104)}
    assert {op.args[0] < 0 for op in geometric} == {True, False}  # the level function's random sign


@pytest.mark.parametrize("name", ["random", "vflip", "weighted"])
def test_other_policies_are_bit_exact(name: str) -> None:
    draws = []
    for size in SIZES[::2]:
        bad, made = mismatches(name, size, SEEDS // 2)
        assert bad == [], f"{name} {size}: seeds {bad}"
        draws += made
    if name == "random":
        assert {d.interpolation for d in draws} == {"bilinear", "bicubic"}
        assert {op.resample for d in draws for op in d.ops if op.resample} == {"bilinear", "bicubic"}
    if name == "vflip":
        assert {(d.hflip, d.vflip) for d in draws} == {(False, False), (False, True), (True, False), (True, True)}
    if name == "weighted":
        assert all(len({op.name for op in d.ops}) == len(d.ops) for d in draws)  # chosen without replacement


def posterize_to_zero() -> int:
    """The first seed whose draw keeps 0 bits (its magnitude, gauss(9, 0.5), reaching the cap of 10: one
    posterize in 45, so one image in about 700)."""
    img = photo(400, 350)
    for i in range(10_000):
        ops = draw(transform("paper"), img.size, seed_of(i)).ops
        if any(op.name == "PosterizeIncreasing" and op.args == (0,) for op in ops):
            return i
    raise AssertionError("no seed in 10000 posterizes to 0 bits")


def test_posterize_to_zero_bits_is_bit_exact() -> None:
    i, img = posterize_to_zero(), photo(400, 350)
    with seeded_rngs(seed_of(i)):
        expected = transform("paper")(img)
    d = draw(transform("paper"), img.size, seed_of(i))
    assert torch.equal(MaybePILToTensor()(apply_pil(img, d, SIDE)), expected)
    last = d.ops[-1]
    if last.name == "PosterizeIncreasing":  # nothing ran after it: the image is black
        assert int(expected.max()) == 0


def rng_states() -> tuple[object, ...]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return random.getstate(), keys.tolist(), pos, has_gauss, gauss, torch.get_rng_state().tolist()


@pytest.mark.parametrize(("name", "size"), [("random", (400, 350)), ("paper", (500, 120)), ("weighted", (100, 300))])
def test_the_rngs_are_left_where_timm_leaves_them(name: str, size: tuple[int, int]) -> None:
    """A draw after the augmentation in the same seeded block (the loader's next step) sees the same RNGs."""
    for i in range(20):
        with seeded_rngs(seed_of(i)):
            transform(name)(photo(*size))
            after_timm = rng_states()
        with seeded_rngs(seed_of(i)):
            draw_from_rngs(transform(name), size)
            after_draw = rng_states()
        assert after_draw == after_timm, f"seed {i}"
    outside = rng_states()
    draw(transform(name), size, seed_of(0))
    assert rng_states() == outside  # in the trainer process the block puts the RNGs back


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ([], "color_jitter"),  # no aa: timm's colour jitter
        (["aa=original"], "aa"),
        (["aa=augmix-m5-w3"], "aa"),
        (["aa=rand-m9-t3a", "color_jitter=0"], "aa"),  # RandAugment's 3a set: blur and desaturation
    ],
)
def test_unsupported_steps_are_refused_in_one_line(overrides: list[str], setting: str) -> None:
    steps = train_transform(load(None, ["dataset=imagefolder", f"img_size={SIDE}", *overrides]))
    with pytest.raises(ConfigError) as err:
        check_supported(steps)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{setting}: ") and message.endswith("use loader: pil")


@pytest.mark.parametrize("overrides", [[PAPER], [PAPER, "train_interpolation=random", "vflip=0.5"], ["color_jitter=0"]])
def test_supported_transforms_pass(overrides: list[str]) -> None:
    check_supported(train_transform(load(None, ["dataset=imagefolder", f"img_size={SIDE}", *overrides])))
