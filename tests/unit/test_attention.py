"""The hooked class-token attention equals the explicit matrix row and leaves the logits untouched."""

from __future__ import annotations

import copy

import pytest
import torch

from transmix.attention import ClassAttention, ExplicitClassAttention
from transmix.models import MICRO_MODELS, create_model


def micro(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_chans=1, img_size=28)


@pytest.mark.parametrize("name", MICRO_MODELS[:2])  # ViT and DeiT; the other families: test_families.py
@pytest.mark.parametrize("training", [False, True])
def test_hook_equals_explicit_attention(name: str, training: bool) -> None:
    model = micro(name)
    reference = copy.deepcopy(model)
    model.train(training)
    reference.train(training)
    assert model.blocks[-1].attn.fused_attn, "the hooked model must keep fused attention on"
    x = torch.randn(6, 1, 28, 28)

    plain_logits = model(x)
    hooked = ClassAttention(model)
    hooked.enabled = True
    torch.manual_seed(1)  # same stochastic depth draws in both passes
    logits = model(x)
    explicit = ExplicitClassAttention(reference)
    explicit.enabled = True
    torch.manual_seed(1)
    reference(x)

    assert hooked.attn.shape == (6, 49) and hooked.grid == (7, 7)
    assert torch.allclose(hooked.attn, explicit.attn, atol=1e-5, rtol=0)
    if not training:
        assert torch.equal(logits, plain_logits), "capturing must not change the logits"
    assert hooked.num_prefix_tokens == model.num_prefix_tokens
    # prefix tokens took some attention: the captured row over patches sums to less than one
    assert (hooked.attn.sum(1) < 1).all() and (hooked.attn.sum(1) > 0).all()


def test_capture_is_off_until_enabled_and_detached() -> None:
    model = micro(MICRO_MODELS[0])
    capture = ClassAttention(model)
    model(torch.randn(2, 1, 28, 28))
    assert capture.attn is None
    capture.enabled = True
    model(torch.randn(2, 1, 28, 28))
    assert capture.attn is not None and not capture.attn.requires_grad
    capture.remove()
    capture.attn = None
    model(torch.randn(2, 1, 28, 28))
    assert capture.attn is None


def test_logits_and_gradients_unchanged_in_training() -> None:
    model = micro(MICRO_MODELS[0])
    twin = copy.deepcopy(model)
    capture = ClassAttention(model)
    capture.enabled = True
    x = torch.randn(4, 1, 28, 28)
    for m in (model, twin):
        m.eval()
        m(x).square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name


def test_model_without_class_token_is_refused() -> None:
    model = create_model("vit_micro_patch4_28", num_classes=10, in_chans=1, img_size=28)
    model.num_prefix_tokens = 0
    with pytest.raises(ValueError, match="class token"):
        ClassAttention(model)
