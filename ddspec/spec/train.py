"""``train``: the inner procedure O that fits the model family to (synthetic) data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ddspec.errors import Finding
from ddspec.registry import TRAIN
from ddspec.spec.base import LearningRate, Momentum, NonNegativeFloat, PositiveInt, SpecModel

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis


class TrainBase(SpecModel):
    """What every inner procedure answers without torch (defaults: not step-based, no ridge of its own)."""

    def inner_steps(self) -> int | None:
        """Training steps per use (None: the backend's schedule, or not step-based)."""
        return None

    def synthetic_ridge(self) -> float | None:
        """The ridge λ_S this procedure fits the synthetic data with, when it has its own (closed form)."""
        return None


TRAIN.base = TrainBase


@TRAIN.register(capabilities=("differentiable",))
class GradientTrain(TrainBase):
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

    def inner_steps(self) -> int | None:
        return self.steps

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """Learned lrs need an objective that differentiates through the inner steps: a surrogate distance does
        so only when it unrolls them (capability ``needs_unroll``). (Which hypergradients differentiate the lrs:
        ``optimize.hypergradient``'s findings.)"""
        if self.learn_lr and analysis.has("distance:surrogate") and not analysis.has("distance:needs_unroll"):
            yield Finding("LR_NOT_LEARNABLE", "train.learn_lr", f"`{analysis.kind('distance')}` does not "
                          "differentiate through the inner steps, so their lrs receive no gradient",
                          "set train.learn_lr: false")
