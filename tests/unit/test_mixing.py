"""The TransMix label rule, the box on the patch grid, and the randomness contract of the sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from transmix.method.mixing import (
    attention_lam,
    box_mask,
    mix_batch,
    mix_spec,
    rand_box,
    soft_targets,
    transmix_lam,
)


def release_rule(
    attn: torch.Tensor, box: tuple[int, int, int, int], image_hw: tuple[int, int], y1: torch.Tensor, y2: torch.Tensor
) -> torch.Tensor:
    """The official release's `transmix_label`, restated on the CPU: its lam weights the *flipped* sample."""
    h, w = image_hw
    lam0 = (box[1] - box[0]) * (box[3] - box[2]) / (h * w)
    mask = torch.zeros((h, w))
    mask[box[0] : box[1], box[2] : box[3]] = 1
    mask = nn.Upsample(size=int(math.sqrt(attn.shape[1])))(mask.unsqueeze(0).unsqueeze(0)).int()
    mask = mask.view(1, -1).repeat(len(attn), 1)
    w1, w2 = torch.sum((1 - mask) * attn, dim=1), torch.sum(mask * attn, dim=1)
    lam1 = w2 / (w1 + w2)
    lam = (lam0 + lam1) / 2
    return y1 * (1.0 - lam).unsqueeze(1) + y2 * lam.unsqueeze(1)


def test_release_mask_is_top_left_pixel_rule() -> None:
    # 28x28 image, 7x7 grid of 4x4 patches. Rows 0..13 pasted: patches whose top-left row (0,4,8,12) < 14.
    mask = box_mask((0, 14, 0, 14), (28, 28), (7, 7), "release").view(7, 7)
    expected = torch.zeros(7, 7)
    expected[:4, :4] = 1
    assert torch.equal(mask, expected)
    # A box starting at row 5 misses patch row 1 (top-left pixel 4) but catches row 2 (pixel 8).
    mask = box_mask((5, 9, 5, 9), (28, 28), (7, 7), "release").view(7, 7)
    expected = torch.zeros(7, 7)
    expected[2, 2] = 1
    assert torch.equal(mask, expected)


def test_area_mask_is_pasted_fraction() -> None:
    mask = box_mask((0, 14, 0, 14), (28, 28), (7, 7), "area").view(7, 7)
    assert mask[:3, :3].eq(1).all() and mask[3, :3].eq(0.5).all() and mask[3, 3] == 0.25
    assert mask.sum() * 16 == pytest.approx(14 * 14)  # pasted pixels are conserved


def test_hand_checked_transmix_label() -> None:
    # Uniform attention over 49 patches, 16 of them pasted: lam_attn = 33/49; lam_area = 1 - 196/784 = 0.75.
    attn = torch.full((2, 49), 1 / 49 * 0.98)  # scale does not matter: attention is normalised over patches
    mask = box_mask((0, 14, 0, 14), (28, 28), (7, 7))
    lam_attn = attention_lam(attn, mask)
    assert torch.allclose(lam_attn, torch.full((2,), 33 / 49))
    lam = transmix_lam(0.75, lam_attn, area_weight=0.5)
    assert torch.allclose(lam, torch.full((2,), (0.75 + 33 / 49) / 2))
    # All attention on one pasted patch: the label is all the pasted image's (w = 0), halfway at w = 0.5.
    focused = torch.zeros(1, 49)
    focused[0, 0] = 1.0
    assert attention_lam(focused, mask).item() == 0.0
    assert transmix_lam(0.75, attention_lam(focused, mask), 0.5).item() == pytest.approx(0.375)
    assert transmix_lam(0.75, attention_lam(focused, mask), 1.0).item() == pytest.approx(0.75)


@pytest.mark.parametrize("seed", range(20))
def test_targets_equal_the_release_rule(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    batch, classes, smoothing = 8, 10, 0.1
    labels = torch.randint(0, classes, (batch,), generator=gen)
    attn = torch.rand(batch, 49, generator=gen) ** 3
    lam = float(torch.rand((), generator=gen))
    box = rand_box(28, 28, lam, gen)
    lam_area = 1 - (box[1] - box[0]) * (box[3] - box[2]) / 784
    lam = transmix_lam(lam_area, attention_lam(attn, box_mask(box, (28, 28), (7, 7))), 0.5)
    ours = soft_targets(labels, labels.flip(0), classes, lam, smoothing)
    off = smoothing / classes
    y1 = torch.full((batch, classes), off).scatter_(1, labels[:, None], 1 - smoothing + off)
    y2 = y1.flip(0)
    assert torch.allclose(ours, release_rule(attn, box, (28, 28), y1, y2), atol=1e-6)


def test_targets_are_distributions() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (16,), generator=gen)
    lam = torch.rand(16, generator=gen)
    targets = soft_targets(labels, labels.flip(0), 10, lam, 0.1)
    assert torch.allclose(targets.sum(1), torch.ones(16))
    assert (targets >= 0).all()
    # lam is the weight of the original label: with lam = 1 and no smoothing it is the one-hot of labels.
    assert torch.equal(soft_targets(labels, labels.flip(0), 10, 1.0, 0.0).argmax(1), labels)
    # the same as timm's mixup_target, which pairs each sample with the batch reversed
    from timm.data.mixup import mixup_target

    assert torch.allclose(soft_targets(labels, labels.flip(0), 10, 0.3, 0.1), mixup_target(labels, 10, 0.3, 0.1))


def test_only_cutmix_batches_change_the_image_region_and_lam_is_area() -> None:
    images = torch.arange(4 * 28 * 28, dtype=torch.float32).view(4, 1, 28, 28)
    labels = torch.tensor([0, 1, 2, 3])
    spec = mix_spec("transmix", 0.8, 1.0, switch_prob=1.0, mix_prob=1.0)
    out = mix_batch(images, labels, spec, torch.Generator().manual_seed(3))
    assert out.mode == "cutmix" and out.box is not None
    yl, yh, xl, xh = out.box
    assert torch.equal(out.images[:, :, yl:yh, xl:xh], images.flip(0)[:, :, yl:yh, xl:xh])
    changed = (out.images != images).any(0).any(0).sum().item()
    assert changed == (yh - yl) * (xh - xl)  # all four images differ from their partners everywhere
    assert out.lam_area == pytest.approx(1 - changed / 784)
    assert torch.equal(out.labels_b, labels.flip(0))
    spec = mix_spec("deit", 0.8, 1.0, switch_prob=0.0, mix_prob=1.0)
    out = mix_batch(images, labels, spec, torch.Generator().manual_seed(3))
    assert out.mode == "mixup" and out.box is None
    assert torch.allclose(out.images, images * out.lam_area + images.flip(0) * (1 - out.lam_area))


def test_sampler_uses_only_its_generator() -> None:
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8)
    spec = mix_spec("deit", 0.8, 1.0, 0.5, 1.0)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    draws = [mix_batch(images, labels, spec, torch.Generator().manual_seed(11)) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    assert torch.equal(draws[0].images, draws[1].images) and draws[0].box == draws[1].box
    gen = torch.Generator().manual_seed(11)
    modes = {mix_batch(images, labels, spec, gen).mode for _ in range(40)}
    assert modes == {"mixup", "cutmix"}


def test_switch_probability_is_respected() -> None:
    images, labels = torch.randn(2, 1, 8, 8), torch.arange(2)
    gen = torch.Generator().manual_seed(0)
    spec = mix_spec("transmix", 0.8, 1.0, switch_prob=0.8, mix_prob=1.0)
    share = sum(mix_batch(images, labels, spec, gen).mode == "cutmix" for _ in range(2000)) / 2000
    assert abs(share - 0.8) < 0.03


def test_odd_batch_is_a_clear_error() -> None:
    spec = mix_spec("transmix", 0.8, 1.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="even batch size"):
        mix_batch(torch.randn(5, 1, 28, 28), torch.arange(5), spec, torch.Generator())
    # Without mixing an odd batch is fine.
    out = mix_batch(torch.randn(5, 1, 28, 28), torch.arange(5), mix_spec("none", 0.8, 1.0, 0.5, 1.0), torch.Generator())
    assert out.mode == "none" and out.lam_area == 1.0


def test_box_area_follows_lam() -> None:
    gen = torch.Generator().manual_seed(0)
    yl, yh, xl, xh = rand_box(224, 224, 0.75, gen)
    assert 0 <= yl < yh <= 224 and 0 <= xl < xh <= 224
    assert (yh - yl) <= 112 and (xh - xl) <= 112


def _old_timm_box(height: int, width: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """timm 0.5.4's rand_bbox (which the official code ran), written out with its centre given."""
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    yl, yh = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    xl, xh = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    return int(yl), int(yh), int(xl), int(xh)


def _given(values: list[int]):
    """A stand-in for ``np.random.randint`` that returns ``values`` in order, whatever it is asked."""
    draws = iter(values)
    return lambda *args, **kwargs: next(draws)


@pytest.mark.parametrize("size", [(28, 28), (224, 224), (30, 17)])
def test_both_box_roundings_equal_their_timm(size, monkeypatch) -> None:
    """Each rounding against its timm, the centre drawn once from the run's generator and given to both."""
    from timm.data.mixup import rand_bbox

    height, width = size
    odd = 0
    for seed in range(200):
        lam = float(torch.rand((), generator=torch.Generator().manual_seed(10_000 + seed)))
        centre = torch.Generator().manual_seed(seed)
        cy = int(torch.randint(0, height, (1,), generator=centre).item())
        cx = int(torch.randint(0, width, (1,), generator=centre).item())
        monkeypatch.setattr(np.random, "randint", _given([cy, cx]))
        today = tuple(int(v) for v in rand_bbox((1, height, width), lam))
        assert rand_box(height, width, lam, torch.Generator().manual_seed(seed), "timm") == today
        released = rand_box(height, width, lam, torch.Generator().manual_seed(seed), "release")
        assert released == _old_timm_box(height, width, lam, cy, cx)
        odd += released != today
    assert odd > 0  # the two differ where a cut is odd and the box is not clipped
