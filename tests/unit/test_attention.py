"""The capture leaves the model alone: off until enabled, detached, logits and gradients unchanged in training.

That the hooked attention equals the explicit matrix is checked for every family in test_families.py."""

from __future__ import annotations

import copy

import pytest
import torch

from transmix.method.attention import ClassAttention
from transmix.method.models import MICRO_MODELS, create_model


def micro(name: str, drop_path: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_chans=1, img_size=28, drop_path=drop_path)


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
    # Training mode with stochastic depth on: both passes draw the same drop-path masks from the same seed, so any
    # difference could only come from the capture.
    model = micro(MICRO_MODELS[0], drop_path=0.5).train()
    twin = copy.deepcopy(model)
    capture = ClassAttention(model)
    capture.enabled = True
    x = torch.randn(4, 1, 28, 28)
    logits = {}
    for name, m in (("hooked", model), ("twin", twin)):
        torch.manual_seed(1)
        logits[name] = m(x)
        logits[name].square().sum().backward()
    assert model.training and capture.attn is not None
    assert torch.equal(logits["hooked"], logits["twin"])
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
    torch.manual_seed(2)
    assert not torch.equal(twin(x), logits["twin"]), "other drop-path draws change the logits: training mode is on"


def test_model_without_class_token_is_refused() -> None:
    model = create_model("vit_micro_patch4_28", num_classes=10, in_chans=1, img_size=28)
    model.num_prefix_tokens = 0
    with pytest.raises(ValueError, match="class token"):
        ClassAttention(model)
