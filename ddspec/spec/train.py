"""``train``: the inner procedure O that fits the model family to (synthetic) data."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ddspec.registry import TRAIN
from ddspec.spec.base import LearningRate, Momentum, NonNegativeFloat, PositiveInt, SpecModel


@TRAIN.register(capabilities=("differentiable",))
class GradientTrain(SpecModel):
    """Gradient-based training (SGD or Adam) for ``steps`` steps on mini-batches of ``batch_size``."""

    kind: Literal["gradient"] = "gradient"
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: LearningRate = 0.01
    momentum: Momentum = 0.5
    weight_decay: NonNegativeFloat = 0.0
    steps: PositiveInt | None = Field(
        None, description="Inner steps per outer iteration; None lets the backend pick its reference schedule."
    )
    batch_size: PositiveInt = 256
    learn_lr: bool = Field(
        False, description="Learn one inner lr per step (held as log lr, starting at lr); bilevel unrolled only."
    )
