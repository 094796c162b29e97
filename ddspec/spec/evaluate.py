"""``evaluate``: the recorded protocol that trains fresh models on D̂ and measures them on real test data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ddspec.registry import CORRUPTIONS, METRICS
from ddspec.spec.base import LearningRate, Momentum, NonNegativeFloat, PositiveInt, SpecModel


@METRICS.register(builder="ddspec.evaluate.metrics:accuracy")
class AccuracyMetric(SpecModel):
    """Fraction of test samples classified correctly (in [0,1])."""

    kind: Literal["accuracy"] = "accuracy"


@METRICS.register(builder="ddspec.evaluate.metrics:cluster_min")
class ClusterMinMetric(SpecModel):
    """k-means on the raw test inputs (labels ignored, fixed seed); the lowest per-cluster accuracy."""

    kind: Literal["cluster_min"] = "cluster_min"
    clusters: int = Field(10, ge=2, le=1000)
    seed: int = Field(0, ge=0)


@METRICS.register(builder="ddspec.evaluate.metrics:worst_group")
class WorstGroupMetric(SpecModel):
    """The lowest accuracy over the data's test subgroups that have samples (data kinds with groups only).

    Groups come from the data (``digits_shift``: 2 * label + spurious cue); empty groups are skipped.
    The per-run details list every non-empty group's id, size and accuracy."""

    kind: Literal["worst_group"] = "worst_group"


@CORRUPTIONS.register(builder="ddspec.evaluate.corruptions:gaussian_noise")
class NoiseCorruption(SpecModel):
    """Additive Gaussian noise of the given variance (in data units), fixed seed."""

    kind: Literal["noise"] = "noise"
    variance: NonNegativeFloat = 0.005


@CORRUPTIONS.register(builder="ddspec.evaluate.corruptions:blur")
class BlurCorruption(SpecModel):
    """Gaussian blur of the given radius (σ = radius/2 per spatial axis; 1-D and 2-D inputs)."""

    kind: Literal["blur"] = "blur"
    radius: float = Field(2.0, gt=0, le=64)


@CORRUPTIONS.register(builder="ddspec.evaluate.corruptions:invert")
class InvertCorruption(SpecModel):
    """Colour inversion about the training range: x ↦ max + min − x (per dataset)."""

    kind: Literal["invert"] = "invert"


class EvaluateSpec(SpecModel):
    """Train each model in ``models`` from each seed on D̂; report final-epoch metrics, mean ± std."""

    models: list = Field(  # list[ModelUnion]; the element type is set in ddspec.spec.problem
        default_factory=list, description="Architectures to evaluate; empty means the problem's model."
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, max_length=1000)
    epochs: PositiveInt = 300
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: LearningRate = 0.01
    momentum: Momentum = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    batch_size: PositiveInt = 256
    lr_drop_at_half: bool = Field(True, description="Multiply the lr by 0.1 at half of the epochs.")
    augment: bool = Field(False, description="Apply the differentiable augmentation during evaluation training.")
    metrics: list = Field(  # list[MetricUnion]; strings are accepted as shorthand for {kind: name}
        default_factory=lambda: ["accuracy", "cluster_min"]
    )
    corruptions: list = Field(  # list[CorruptionUnion]
        default_factory=list, description="Corrupted copies of the test set on which accuracy is also measured."
    )

    @field_validator("metrics", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"kind": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("metrics", "corruptions")
    @classmethod
    def _unique(cls, value: list) -> list:
        kinds = [v.kind for v in value]
        dupes = sorted({k for k in kinds if kinds.count(k) > 1})
        if dupes:
            raise ValueError(f"each kind may appear once; repeated: {', '.join(dupes)}")
        return value
