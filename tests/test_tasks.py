"""Built tasks against hand computations: the per-sample losses of test_error (classes and real values) and of
predictions (KL to a teacher at a temperature)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ddspec.components.objectives.targets import ClassTargets, RealTargets
from ddspec.components.objectives.tasks import Predictions, TestError


def test_test_error_on_classes_is_the_cross_entropy_by_hand() -> None:
    outputs = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    losses = TestError(ClassTargets(3)).per_sample(torch.zeros(2, 4), torch.tensor([0, 2]))(outputs)
    z = math.exp(2.0) + 1 + math.exp(-1.0)
    assert losses.tolist() == pytest.approx([-(2.0 - math.log(z)), math.log(3)])


def test_test_error_on_real_targets_is_the_squared_error_by_hand() -> None:
    outputs = torch.tensor([[1.5], [-2.0], [0.0]])
    losses = TestError(RealTargets(1)).per_sample(torch.zeros(3, 2), torch.tensor([1.0, 1.0, -0.5]))(outputs)
    assert losses.tolist() == pytest.approx([0.25, 9.0, 0.25])
    two = TestError(RealTargets(2)).per_sample(torch.zeros(1, 2), torch.tensor([[1.0, 2.0]]))(torch.tensor([[0.0, 0.0]]))
    assert two.tolist() == pytest.approx([5.0])  # summed over the outputs


def test_predictions_is_the_kl_to_the_teacher_at_the_temperature() -> None:
    teacher = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[2.0, 0.0]])
    tau = 2.0
    losses = Predictions(teacher, tau).per_sample(x, torch.tensor([0]))(torch.tensor([[0.0, 0.0]]))
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)  # teacher logits (2, 0) / τ
    expected = float((p * (p.log() - math.log(0.5))).sum())  # student uniform
    assert losses.tolist() == pytest.approx([expected])
