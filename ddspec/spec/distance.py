"""``distance``: how the task outputs (or a surrogate of them) are compared. Surrogates carry the
capability ``surrogate`` and name, in ``approximates``, the exact objective they stand for.

Every distance builder takes ``(spec, ctx)`` (``DISTANCES.build(spec, ctx)``, ``ctx`` the run's
:class:`~ddspec.runtime.context.RunContext`; a surrogate that needs nothing from the run ignores it). The
matching backend runs the surrogates that subclass :class:`MatchingDistance` and have a builder
(:mod:`ddspec.components.objectives.distances`). Which of its two algorithms runs is a capability:

- ``embedding``: the builder returns ``d(real_features, synthetic_features) -> scalar`` over the
  embeddings of random, untrained networks, one class at a time (DM, MMD);
- ``needs_network_training``: the builder returns ``d(real_gradients, synthetic_gradients) -> scalar``
  over per-layer gradients, with the network trained on D̂ between synthetic steps (DC / DSA).

A :class:`MatchingDistance` also says, light and without torch, which synthetic learning rate and which
(``optimize.outer_loop``, ``train.steps``) schedule the backend resolves when the spec leaves them unset.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ddspec.errors import Finding
from ddspec.registry import DISTANCES
from ddspec.spec.base import LearningRate, Momentum, PositiveFloat, PositiveInt, SpecModel

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis
    from ddspec.spec.data import DataInfo

#: DC's (images per class, outer_loop, train.steps) schedule; interpolated linearly in between.
DC_SCHEDULE = ((1, 1, 1), (10, 10, 50), (20, 20, 25), (30, 30, 20), (40, 40, 15), (50, 50, 10))


def dc_schedule(images_per_class: float) -> tuple[int, int]:
    """(outer_loop, train.steps) of :data:`DC_SCHEDULE`, linear between its rows, clamped outside."""
    ipcs = [row[0] for row in DC_SCHEDULE]
    if images_per_class <= ipcs[0]:
        return DC_SCHEDULE[0][1:]
    if images_per_class >= ipcs[-1]:
        return DC_SCHEDULE[-1][1:]
    hi = bisect.bisect_left(ipcs, images_per_class)
    (x0, o0, s0), (x1, o1, s1) = DC_SCHEDULE[hi - 1], DC_SCHEDULE[hi]
    t = (images_per_class - x0) / (x1 - x0)
    return round(o0 + t * (o1 - o0)), round(s0 + t * (s1 - s0))


class DistanceBase(SpecModel):
    """What a distance declares without torch: a surrogate (capability ``surrogate``) names in ``approximates``
    the exact objective it stands for; :meth:`approximation` says how the gradient its backend steps along
    departs from the exact gradient of the distance itself."""

    #: The exact objective a surrogate stands for, in words ("" for a distance that is not a surrogate).
    approximates: ClassVar[str] = ""

    def approximation(self) -> str:
        """How the gradient of this distance that its backend steps along departs from the exact gradient of its
        value, in words ("": it is exact, as :func:`ddspec.testing.check_hypergradient` verifies)."""
        return ""


DISTANCES.base = DistanceBase


class MatchingDistance(DistanceBase):
    """Base of the surrogates the matching backend runs: the defaults it resolves for them. Subclass it (with a
    ``kind: Literal[...]`` field) to add a matching distance; register it with capabilities ``surrogate`` and
    ``embedding`` (or ``needs_network_training``) and a builder."""

    #: The synthetic-data learning rate (SGD, momentum 0.5, on standardized inputs) resolved when optimize.lr is unset.
    reference_lr: ClassVar[float] = 1.0
    approximates: ClassVar[str] = (
        "test_error after training on D̂: real and synthetic data of each class look alike to the model family"
    )

    @classmethod
    def schedule(cls, images_per_class: float) -> tuple[int, int]:
        """(optimize.outer_loop, train.steps) resolved when unset: one synthetic step per network, no training."""
        return 1, 1


@DISTANCES.register(builder="ddspec.components.objectives.distances:build_gradient_match",
                    capabilities=("surrogate", "needs_network_training"))
class GradientMatchDistance(MatchingDistance):
    """Gradient matching (DC): Σ_layers Σ_out-channels (1 − cos(∇θℓ(real), ∇θℓ(syn)))."""

    kind: Literal["gradient_match"] = "gradient_match"
    skip_bias_and_norm: bool = Field(True, description="Ignore 1-D parameters (biases, norm scales), as DC does.")
    reference_lr: ClassVar[float] = 0.1
    approximates: ClassVar[str] = (
        "test_error after training on D̂: matching per-step gradients of real and synthetic batches makes "
        "SGD on D̂ follow the trajectory SGD on D would take (first-order surrogate of the bilevel objective)"
    )

    @classmethod
    def schedule(cls, images_per_class: float) -> tuple[int, int]:
        """DC's schedule (:func:`dc_schedule`): more synthetic steps, and fewer network steps between them, as
        images per class grow."""
        return dc_schedule(images_per_class)


@DISTANCES.register(builder="ddspec.components.objectives.distances:build_feature_mean",
                    capabilities=("surrogate", "embedding"))
class FeatureMeanDistance(MatchingDistance):
    """Distribution matching (DM): Σ_c ‖mean φ(real_c) − mean φ(syn_c)‖² in a random network's embedding."""

    kind: Literal["feature_mean"] = "feature_mean"
    approximates: ClassVar[str] = (
        "test_error after training on D̂: equal class-conditional embedding means under random networks "
        "(an MMD with a linear kernel) make D̂ and D look alike to the model family at initialisation"
    )


@DISTANCES.register(builder="ddspec.components.objectives.distances:build_mmd", capabilities=("surrogate", "embedding"))
class MMDDistance(MatchingDistance):
    """Class-wise MMD² with an RBF kernel (sum over ``bandwidths``) on random-network embeddings."""

    kind: Literal["mmd"] = "mmd"
    bandwidths: list[PositiveFloat] | None = Field(
        None, description="RBF bandwidths σ (k(a,b)=exp(−‖a−b‖²/(2σ²)), summed); None: median heuristic × {0.5, 1, 2}."
    )
    approximates: ClassVar[str] = (
        "test_error after training on D̂: class-conditional distributions of random-network embeddings of "
        "D̂ and D match in every moment the RBF kernel sees"
    )

    def approximation(self) -> str:
        """With the median heuristic (``bandwidths`` None) the bandwidths are recomputed from X ∪ Y at every
        evaluation but not differentiated."""
        return "" if self.bandwidths is not None else "the median bandwidth is held constant (not differentiated)"


@DISTANCES.register(capabilities=("exact", "distributions"))
class KLDistance(DistanceBase):
    """KL(p_teacher ‖ p_student) of the softmax predictions (at ``temperature``) on a real batch; task ``predictions``."""

    kind: Literal["kl"] = "kl"
    temperature: PositiveFloat = Field(1.0, le=100)

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """KL compares predictive distributions: the task must produce them (capability ``distributions``). On
        real-valued targets there are none (task ``predictions`` is refused there too), so the fix is to drop
        the distance and measure the test error."""
        if analysis.has("task:distributions"):
            return
        if analysis.has("targets:real"):
            fix = "remove `distance`" + ("" if analysis.problem.task is not None else
                                         " and set task: {kind: test_error}")
            yield Finding("DISTANCE_NEEDS_TASK", "distance", f"`{self.kind}` compares predictive class distributions, "
                          f"but data `{analysis.problem.data.kind}` has real-valued targets (there is no class "
                          "distribution to compare; task test_error measures their squared error)", fix)
            return
        yield Finding("DISTANCE_NEEDS_TASK", "distance", f"`{self.kind}` compares predictive distributions, which "
                      f"only task `predictions` produces (task is {analysis.kind('task') or 'unset'})",
                      "set task: {kind: predictions}")


@DISTANCES.register(builder="ddspec.components.training.experts:trajectory",
                    capabilities=("surrogate", "needs_unroll", "needs_experts"))
class TrajectoryDistance(DistanceBase):
    """Trajectory matching (MTT): from expert epoch t, the student trains ``train.steps`` = N steps on D̂;
    d = ‖θ̂_{t+N} − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖², θ* the parameters of experts trained on the real data with
    the targets' loss (cross-entropy, or squared error for real-valued targets; once, cached in the run
    directory as ``experts.safetensors``), t uniform in [0, max_start_epoch], M = ``expert_span``."""

    smoke: ClassVar[dict[str, Any]] = {"experts": 1, "expert_epochs": 2, "max_start_epoch": 1, "expert_span": 1}
    kind: Literal["trajectory"] = "trajectory"
    experts: PositiveInt = Field(5, le=1000, description="Expert trajectories trained on the real data.")
    expert_epochs: PositiveInt = Field(20, le=10_000, description="Epochs per expert (one checkpoint per epoch).")
    expert_lr: LearningRate = 0.01
    expert_momentum: Momentum = 0.0
    expert_batch_size: PositiveInt = 256
    max_start_epoch: int = Field(10, ge=0, le=10_000, description="Largest expert epoch t a student starts from.")
    expert_span: PositiveInt = Field(2, le=10_000, description="M: expert epochs the student's N steps must cover.")
    approximates: ClassVar[str] = (
        "test_error after training on D̂: N student steps on D̂ from an expert checkpoint land where M epochs "
        "on D took the expert, so training on D̂ retraces the real training trajectory"
    )

    def preparation(self, info: DataInfo, flops: float, params: int) -> tuple[float, int, str]:
        """(FLOPs, bytes, description) of the experts: ``experts`` x ``expert_epochs`` epochs on the real data
        (training costs ``flops`` per sample), E + 1 float32 snapshots of ``params`` parameters each kept."""
        return (self.experts * self.expert_epochs * info.n_train * flops,
                4 * params * self.experts * (self.expert_epochs + 1),
                f"first {self.experts} experts x {self.expert_epochs} epochs on the real data")

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """The student's start epoch plus the span must exist. (Experts train with the targets' loss and the
        distance compares parameters, so real-valued targets are fine.)"""
        if self.max_start_epoch + self.expert_span > self.expert_epochs:
            yield Finding(
                "TRAJECTORY_SPAN", "distance.max_start_epoch",
                f"a student starting at epoch {self.max_start_epoch} needs expert epoch "
                f"{self.max_start_epoch + self.expert_span}, but experts train {self.expert_epochs} epochs",
                f"set distance.max_start_epoch <= {max(self.expert_epochs - self.expert_span, 0)} or raise "
                "distance.expert_epochs",
            )
