"""``task``: the inference task I applied to a trained model (what the distilled data must preserve)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ddspec.registry import TASKS
from ddspec.spec.base import LearningRate, Momentum, NonNegativeFloat, PositiveInt, SpecModel


@TASKS.register()
class TestErrorTask(SpecModel):
    """Classification error on the real data's distribution (cross-entropy on real samples)."""

    __test__ = False  # not a pytest class
    kind: Literal["test_error"] = "test_error"


@TASKS.register()
class PredictionsTask(SpecModel):
    """The trained model's predictive distribution on real inputs, compared (distance ``kl``) with a
    teacher's: the problem's model trained on the real training data once (SGD, lr × 0.1 at half),
    cached in the run directory as ``teacher.safetensors``."""

    kind: Literal["predictions"] = "predictions"
    teacher_epochs: PositiveInt = Field(30, le=10_000, description="Epochs of teacher training on the real data.")
    teacher_lr: LearningRate = 0.01
    teacher_momentum: Momentum = 0.9
    teacher_weight_decay: NonNegativeFloat = 5e-4
    teacher_batch_size: PositiveInt = 256
