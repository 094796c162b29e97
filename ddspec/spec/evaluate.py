"""``evaluate``: the recorded protocol that trains fresh models on D̂ and measures them on real test data.

Metric kinds declare what they measure as capabilities of their registry entry: ``targets:classes`` or
``targets:real`` (the targets they fit), ``fraction`` (values in [0, 1]; shown as percentages),
``default`` (reported when ``evaluate.metrics`` is left empty), ``primary`` (the figure measured on the
corrupted test sets) and ``needs_model`` (measured on the trained model itself, not on its test outputs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from ddspec.errors import Finding
from ddspec.registry import CORRUPTIONS, DATA, METRICS
from ddspec.spec.base import (
    LearningRate,
    Momentum,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SpecModel,
)

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: The baselines: ``random`` real samples as many per stratum as D̂ has, or the ``full`` real training set.
Baseline = Literal["random", "full"]


def metric_kinds(targets: str, capability: str) -> list[str]:
    """The metric kinds that fit ``targets`` ("classes" or "real") and declare ``capability``, in registration order."""
    return [e.kind for e in METRICS.entries() if {f"targets:{targets}", capability} <= e.capabilities]


def default_metrics(targets: str) -> list[Any]:
    """The metrics reported when ``evaluate.metrics`` is empty: accuracy and cluster_min for classes, rmse
    and r2 for real targets (the kinds with the ``default`` capability)."""
    return [METRICS[kind].spec() for kind in metric_kinds(targets, "default")]


def primary_metric(targets: str) -> Any:
    """The task's primary figure, also measured on every corrupted test set: accuracy for classes, rmse for
    real targets (the first kind with the ``primary`` capability)."""
    return METRICS[metric_kinds(targets, "primary")[0]].spec()


def is_fraction(kind: str) -> bool:
    """Whether metric ``kind`` takes values in [0, 1] (capability ``fraction``); unknown kinds are not."""
    return kind in METRICS and "fraction" in METRICS[kind].capabilities


class MetricSpec(SpecModel):
    """A metric kind: refuses data whose targets it does not fit (its ``targets:*`` capabilities)."""

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        fits = sorted(c for c in METRICS[self.kind].capabilities if c.startswith("targets:"))
        if fits and not any(analysis.has(c) for c in fits):
            targets = analysis.data.targets
            usable = ", ".join(metric_kinds(targets, f"targets:{targets}")) or "none"
            yield Finding(
                "METRIC_TARGETS", "evaluate.metrics",
                f"metric `{self.kind}` needs {' or '.join(fits)}, but the targets of data "
                f"`{analysis.problem.data.kind}` are targets:{targets}",
                f"use a metric for targets:{targets} ({usable}), or leave evaluate.metrics empty for the defaults",
            )


METRICS.base = MetricSpec


@METRICS.register(builder="ddspec.evaluate.metrics:Accuracy",
                  capabilities=("targets:classes", "fraction", "default", "primary"))
class AccuracyMetric(MetricSpec):
    """Fraction of test samples classified correctly (in [0,1])."""

    kind: Literal["accuracy"] = "accuracy"


@METRICS.register(builder="ddspec.evaluate.metrics:ClusterMin", capabilities=("targets:classes", "fraction", "default"))
class ClusterMinMetric(MetricSpec):
    """k-means on the raw test inputs (labels ignored, fixed seed); the lowest per-cluster accuracy."""

    kind: Literal["cluster_min"] = "cluster_min"
    clusters: int = Field(10, ge=2, le=1000)
    seed: int = Field(0, ge=0)

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        yield from super().findings(analysis)
        n_test = analysis.data.n_test
        if n_test < self.clusters:
            yield Finding(
                "METRIC_CLUSTERS", "evaluate.metrics",
                f"cluster_min asks for {self.clusters} clusters but the test set of data "
                f"`{analysis.problem.data.kind}` has {n_test} samples",
                f"lower the metric's `clusters` to at most {n_test} (e.g. evaluate.metrics: "
                f"[accuracy, {{kind: cluster_min, clusters: {max(2, min(n_test, 10))}}}])"
                if n_test >= 2 else "use data with at least 2 test samples, or list evaluate.metrics without "
                "cluster_min (e.g. [accuracy])",
            )


@METRICS.register(builder="ddspec.evaluate.metrics:WorstGroup", capabilities=("targets:classes", "fraction", "groups"))
class WorstGroupMetric(MetricSpec):
    """The lowest accuracy over the data's test subgroups that have samples (data kinds with groups only).

    Groups come from the data (``digits_shift``: 2 * label + spurious cue); empty groups are skipped.
    The per-run details list every non-empty group's id, size and accuracy."""

    kind: Literal["worst_group"] = "worst_group"

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        yield from super().findings(analysis)
        if not analysis.has("data:groups"):
            kinds = [k for k in DATA.kinds() if "groups" in DATA[k].capabilities]
            yield Finding(
                "METRIC_NEEDS_GROUPS", "evaluate.metrics",
                f"`worst_group` needs group labels, which data `{analysis.problem.data.kind}` does not provide",
                f"use a data kind with groups ({', '.join(kinds)}), or drop worst_group from evaluate.metrics",
            )


@METRICS.register(builder="ddspec.evaluate.metrics:Rmse", capabilities=("targets:real", "default", "primary"))
class RmseMetric(MetricSpec):
    """Root mean squared error √((1/n) Σ_i ‖f(x_i) − y_i‖²) on the test set (in the targets' units)."""

    kind: Literal["rmse"] = "rmse"


@METRICS.register(builder="ddspec.evaluate.metrics:R2", capabilities=("targets:real", "default"))
class R2Metric(MetricSpec):
    """Coefficient of determination 1 − SS_res/SS_tot per output, averaged over the outputs (as
    scikit-learn's ``r2_score``)."""

    kind: Literal["r2"] = "r2"


#: A perturbation norm of the adversarial metric.
Norm = Literal["linf", "l2"]


class SquareAttack(SpecModel):
    """The black-box random-search attack (Square-style) run beside PGD as the gradient-masking check: it
    only queries the model's outputs, so a sample it breaks that PGD did not points at masked gradients."""

    smoke: ClassVar[dict[str, Any]] = {"queries": 5}
    queries: PositiveInt = Field(1000, le=100_000, description="Model evaluations per sample, norm and ε.")


@METRICS.register(builder="ddspec.evaluate.adversarial:Adversarial",
                  capabilities=("targets:classes", "fraction", "needs_model"))
class AdversarialMetric(MetricSpec):
    """Robust accuracy under bounded input perturbations: the fraction of attacked test samples x (label y)
    with argmax_k f(x + δ)_k = y for every δ that any attack run finds with ‖δ‖ ≤ ε·σ (and x + δ in ``box``).

    σ is the global standard deviation of the raw training inputs (one scalar over all values); ε is given
    in units of σ. L∞: ‖δ‖_∞ ≤ ε·σ, each coordinate moves at most ε·σ. L2: ‖δ‖₂ ≤ ε·σ, the whole
    perturbation (not scaled by √d: an L2 budget ε spreads as ε/√d per coordinate over d coordinates).
    Attacks: PGD (``steps`` iterations, step α = ``step_size``·ε·σ/``steps``, ``restarts`` runs per loss: the
    first from x, the others from uniform random starts in the ball; ``losses``: cross-entropy and DLR,
    −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3), the plain margin −(z_y − z_j) for two classes; then the targeted margin
    z_t − z_y against each of the ``targets`` most likely other classes) and, with ``square``, a Square-style random
    search on the margin. A sample broken at ε counts as broken at every larger ε; ε = 0 is clean accuracy.
    ``samples`` test rows are attacked (a subset drawn once with ``seed``; all rows when there are fewer).
    The metric's value is the robust accuracy at the middle ε (ε[n // 2] of the sorted grid) of the first norm;
    ``metrics.json`` holds
    every (norm, ε) as ``adversarial.<norm>.<ε>`` (mean ± std over the runs) and the clean accuracy of the
    attacked subset as ``adversarial.clean``."""

    smoke: ClassVar[dict[str, Any]] = {"steps": 2, "restarts": 1, "targets": 1, "samples": 20}
    kind: Literal["adversarial"] = "adversarial"
    norms: list[Norm] = Field(default_factory=lambda: ["linf", "l2"], min_length=1, max_length=2)
    eps_linf: list[NonNegativeFloat] = Field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.3], min_length=1, max_length=50,
        description="L∞ radii in units of the training inputs' global std.")
    eps_l2: list[NonNegativeFloat] = Field(
        default_factory=lambda: [0.25, 0.5, 1.0, 2.0], min_length=1, max_length=50,
        description="L2 radii (of the whole perturbation) in units of the training inputs' global std.")
    steps: PositiveInt = Field(50, le=100_000, description="PGD iterations.")
    restarts: PositiveInt = Field(1, le=1000, description=(
        "PGD runs per loss: the first from the clean point, each further one from a uniform random start."))
    step_size: PositiveFloat = Field(2.5, description="PGD step α = step_size · ε / steps.")
    losses: list[Literal["ce", "dlr"]] = Field(default_factory=lambda: ["ce", "dlr"], min_length=1, max_length=2)
    targets: NonNegativeInt = Field(3, le=1000, description=(
        "Targeted PGD runs: the margin z_t − z_y against each of this many classes with the highest clean "
        "logits after y's (fewer when there are fewer other classes; 0: untargeted losses only)."))
    box: Literal["auto"] | tuple[float, float] | None = Field("auto", description=(
        "Bounds on x + δ (raw units): `auto` is the training inputs' (min, max), [lo, hi] given, null none. A "
        "test value outside the box widens it for that coordinate, so the clean point stays feasible."))
    square: SquareAttack | None = Field(default_factory=SquareAttack, description=(
        "The black-box check (null: PGD only); the report flags every ε where it breaks a sample PGD did not."))
    samples: PositiveInt = Field(500, description="Test samples attacked: a fixed-seed subset when there are more.")
    seed: int = Field(0, ge=0, description="Seeds the subset, the random starts and the random search.")

    @field_validator("norms", "losses")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) < len(value):
            raise ValueError("each entry may appear once")
        return value

    @field_validator("box")
    @classmethod
    def _ordered(cls, value: Any) -> Any:
        if isinstance(value, tuple) and not value[0] < value[1]:
            raise ValueError(f"box must be [lo, hi] with lo < hi, got {list(value)}")
        return value

    def eps(self, norm: str) -> list[float]:
        """The ε grid of ``norm``, ascending, without repeats (units of the global std)."""
        return sorted(set(self.eps_linf if norm == "linf" else self.eps_l2))

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        yield from super().findings(analysis)
        if analysis.has("train:estimator") and not analysis.problem.evaluate.models:
            yield Finding(
                "METRIC_NEEDS_GRADIENT", "evaluate.metrics",
                f"`adversarial` runs PGD, which needs input gradients, but the evaluated model family is the "
                f"estimator of train `{analysis.kind('train')}` (no gradient)",
                "list differentiable networks under evaluate.models (e.g. [{kind: mlp}]), or drop adversarial "
                "from evaluate.metrics",
            )


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

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        if not (analysis.has("inputs:2d") or analysis.has("inputs:3d")):
            yield Finding(
                "CORRUPTION_SHAPE", "evaluate.corruptions",
                f"blur needs spatial inputs (C x L or C x H x W); data `{analysis.problem.data.kind}` has inputs "
                f"of shape {analysis.data.input_shape}",
                "remove the blur corruption for flat (tabular) data, or use noise / invert",
            )


@CORRUPTIONS.register(builder="ddspec.evaluate.corruptions:invert")
class InvertCorruption(SpecModel):
    """Colour inversion about the training range: x ↦ max + min − x (per dataset)."""

    kind: Literal["invert"] = "invert"


class EvaluateSpec(SpecModel):
    """Train each model in ``models`` from each seed on D̂; report final-epoch metrics, mean ± std, beside the
    same protocol's figures for the ``baselines``."""

    smoke: ClassVar[dict[str, Any]] = {"seeds": 1, "epochs": 2}
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
    metrics: list = Field(  # list[MetricUnion]; strings (here and in corruptions) are shorthand for {kind: name}
        default_factory=list, description=(
            "Metrics on the test set; empty means the defaults for the data's targets "
            "(accuracy, cluster_min for classes; rmse, r2 for real values).")
    )
    corruptions: list = Field(  # list[CorruptionUnion]
        default_factory=list,
        description="Corrupted copies of the test set, on which the primary metric (accuracy, or rmse) is measured.",
    )
    baselines: list[Baseline] = Field(default_factory=list, max_length=2, description=(
        "Reference figures under the same protocol: `random` (random real samples, as many per class as D̂ "
        "has, a new draw per seed) and `full` (all real training data; cached)."))

    @field_validator("metrics", "corruptions", mode="before")
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

    @field_validator("baselines")
    @classmethod
    def _unique_baselines(cls, value: list[str]) -> list[str]:
        if len(set(value)) < len(value):
            raise ValueError("each baseline may appear once")
        return value

    def metric_specs(self, targets: str) -> list[Any]:
        """``metrics``, or the defaults for ``targets`` ("classes" or "real") when it is empty."""
        return list(self.metrics) or default_metrics(targets)

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """The findings of the metrics (``metrics``, or the defaults for the data's targets) and corruptions."""
        for spec in [*self.metric_specs(analysis.data.targets), *self.corruptions]:
            yield from spec.findings(analysis)
