"""The calibration rows of every run (ECE and output entropy), on cases checked by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transmix.data.fashion_mnist import TensorDataset
from transmix.training.accuracy import calibration


class Fixed(nn.Module):
    """Returns, for image i (its pixel value), the log of row i of ``probs``."""

    def __init__(self, probs: list[list[float]]):
        super().__init__()
        self.logits = torch.tensor(probs).log()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.flatten(1)[:, 0].long()]


def test_ece_and_entropy_by_hand() -> None:
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right): bins 0.9 -> |0.9 - 0.5| and 0.6 -> |0.6 - 1|,
    # each half of the images: ECE = 0.5 * 0.4 + 0.5 * 0.4 = 40 %
    probs = [[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]]
    data = TensorDataset(torch.arange(4.0).view(4, 1, 1, 1), torch.tensor([0, 0, 0, 1]), 2)
    got = calibration(Fixed(probs), data, torch.device("cpu"), batch_size=3, bins=10)
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    assert got["ece"] == pytest.approx(40.0)
    assert got["entropy"] == pytest.approx((2 * h(0.9) + 2 * h(0.6)) / 4)


def test_a_calibrated_model_has_no_error() -> None:
    probs = [[0.75, 0.25]] * 4  # 75 % confident, 3 of 4 right
    data = TensorDataset(torch.zeros(4, 1, 1, 1), torch.tensor([0, 0, 0, 1]), 2)
    assert calibration(Fixed(probs), data, torch.device("cpu"))["ece"] == pytest.approx(0.0, abs=1e-5)
