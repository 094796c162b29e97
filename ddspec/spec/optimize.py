"""``optimize``: the outer optimizer over D̂ (gradient on the synthetic data, or subset selection)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ddspec.registry import OPTIMIZERS
from ddspec.spec.base import LearningRate, Momentum, NonNegativeFloat, PositiveInt, SpecModel


class AugmentationSpec(SpecModel):
    """Differentiable augmentation (DSA-style), the same random draw for real and synthetic batches.

    2-D inputs: crop (shift by up to ``crop`` of the size), scale, rotate, noise;
    1-D inputs: shift, scale, noise. Names that do not apply to the data's dimension are skipped."""

    enabled: bool | None = Field(None, description="None lets the backend decide (on for gradient matching).")
    ops: list[Literal["crop", "shift", "scale", "rotate", "noise"]] = Field(
        default_factory=lambda: ["crop", "shift", "scale", "rotate", "noise"]
    )
    crop: float = Field(0.125, ge=0, le=0.5, description="Max shift as a fraction of the size.")
    scale: float = Field(0.2, ge=0, le=1, description="Scale factor drawn from [1-scale, 1+scale].")
    rotate: float = Field(15.0, ge=0, le=180, description="Max rotation in degrees.")
    noise: float = Field(0.05, ge=0, le=10, description="Std of additive Gaussian noise, in data units.")


@OPTIMIZERS.register(capabilities=("gradient",))
class GradientOptimize(SpecModel):
    """First-order optimization of the synthetic tensors (matching or hypergradient steps)."""

    kind: Literal["gradient"] = "gradient"
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: LearningRate | None = Field(None, description="None: the backend's reference value for the distance.")
    momentum: Momentum = 0.5
    weight_decay: NonNegativeFloat = 0.0
    iterations: PositiveInt = 1000
    outer_loop: PositiveInt | None = Field(
        None, description="Synthetic updates per network initialisation (gradient matching); None: DC's schedule."
    )
    real_batch_per_class: PositiveInt = 256
    augmentation: AugmentationSpec = Field(default_factory=AugmentationSpec)


@OPTIMIZERS.register(capabilities=("selection",))
class SelectOptimize(SpecModel):
    """Coreset selection: pick real samples per class instead of synthesizing them (baselines)."""

    kind: Literal["select"] = "select"
    method: Literal["random", "herding", "kcenter"] = "random"
    space: Literal["input", "embedding"] = Field(
        "input", description="Where distances are measured: raw inputs or a random network's embedding."
    )
