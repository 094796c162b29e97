"""``optimize``: the outer optimizer over D̂ (gradient on the synthetic data, or subset selection).

``optimize.hypergradient`` (registry :data:`ddspec.registry.HYPERGRADIENTS`) says how the bilevel backend
differentiates through training. Its builder, called with (spec, :class:`~ddspec.components.training.unroll.
InnerRecipe`), returns (model, D̂, outer loss, θ_0) → (loss, dL/dD̂); the spec class says, without torch, how
many inner steps are alive at once (:meth:`HypergradientBase.tracked_steps`), what a scenario costs
(:meth:`HypergradientBase.scenario_flops`) and when it is ill-posed (``findings``). Capabilities: ``unrolls``
(it differentiates through the inner steps themselves, as trajectory matching needs) and ``differentiates_lr``
(the per-step inner lrs receive a gradient, so ``train.learn_lr`` is meaningful).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self, Union

from pydantic import Field

from ddspec.errors import Finding
from ddspec.registry import HYPERGRADIENTS, OPTIMIZERS, Registry
from ddspec.spec.base import LearningRate, Momentum, NonNegativeFloat, PositiveFloat, PositiveInt, SpecModel

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: Where hypergradient findings point.
HYPERGRADIENT_PATH = "optimize.hypergradient"


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


class HypergradientBase(SpecModel):
    """What every hypergradient kind shares. A new kind subclasses it with a ``kind: Literal[...]`` field, the
    methods below and a builder, and is registered with :data:`~ddspec.registry.HYPERGRADIENTS`."""

    normalize: bool = Field(
        False, description="Divide each scenario's hypergradient by its norm (over all learned tensors) before the "
        "risk combines them, so that no scenario with an exploding hypergradient dominates a step.",
    )
    #: Why the inner lrs get no gradient (kinds without the capability ``differentiates_lr``).
    lr_note: ClassVar[str] = "this hypergradient does not differentiate through the inner steps"

    def tracked_steps(self, steps: int) -> tuple[int, str]:
        """(inner steps whose activations are alive at once, how the hypergradient is taken) for K = ``steps``."""
        raise NotImplementedError

    def approximation(self) -> str:
        """How its hypergradient departs from the exact gradient of the outer objective, in words ("": it is
        exact, as :func:`ddspec.testing.check_hypergradient` can verify)."""
        return self._approximate("")

    def _approximate(self, why: str) -> str:
        """``why``, and that ``normalize`` rescales each scenario's hypergradient when it does."""
        return "; ".join(filter(None, ["each scenario's hypergradient is divided by its norm" if self.normalize else "",
                                       why]))

    def scenario_flops(self, steps: int, step: float, outer: float) -> float:
        """FLOPs of one scenario: K = ``steps`` inner steps of ``step`` FLOPs each (a forward and backward pass on
        the synthetic batch), the hypergradient's own work, and the outer loss (``outer`` FLOPs)."""
        raise NotImplementedError

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """Learned inner lrs need ``differentiates_lr``; trajectory matching (distance ``needs_unroll``) needs
        ``unrolls``."""
        if analysis.has("train:differentiable") and analysis.problem.train.learn_lr and \
                not HYPERGRADIENTS.has(self, "differentiates_lr"):
            yield Finding("LR_NOT_LEARNABLE", "train.learn_lr", self.lr_note,
                          "set train.learn_lr: false, or use optimize.hypergradient: {kind: unrolled}")
        if analysis.has("distance:needs_unroll") and not HYPERGRADIENTS.has(self, "unrolls"):
            yield Finding("TRAJECTORY_NEEDS_UNROLL", HYPERGRADIENT_PATH, f"`{analysis.kind('distance')}` compares the "
                          "parameters after N differentiable steps", "use optimize.hypergradient: {kind: unrolled}")


HYPERGRADIENTS.base = HypergradientBase


@HYPERGRADIENTS.register(builder="ddspec.components.training.unroll:unrolled",
                         capabilities=("unrolls", "differentiates_lr"))
class UnrolledHypergradient(HypergradientBase):
    """Differentiate through the K inner steps (reverse mode through the unrolled training).

    ``truncate``: backpropagate through the last T steps only (the first K − T run without a graph).
    ``checkpoint_every``: keep the inner state every S steps only and recompute each segment during
    the backward pass: memory O(K/S + S) steps instead of O(K), the same hypergradient."""

    kind: Literal["unrolled"] = "unrolled"
    engine: Literal["torch_func", "higher"] = Field(
        "torch_func", description="torch_func: functional_call + torch.func; higher: higher.innerloop_ctx."
    )
    truncate: PositiveInt | None = Field(None, description="Backpropagate through the last T inner steps only.")
    checkpoint_every: PositiveInt | None = Field(
        None, description="Gradient checkpointing: segment length S in inner steps (engine torch_func)."
    )

    def approximation(self) -> str:
        return self._approximate(f"only the last {self.truncate} inner steps are differentiated" if self.truncate else "")

    def shrunk(self) -> UnrolledHypergradient:
        """At smoke size (K = 2 inner steps) truncation and checkpointing stay on: T = S = 1 (after the nested
        sections and :attr:`smoke` budgets of :meth:`SpecModel.shrunk`)."""
        small = super().shrunk()
        return small.model_copy(update={"truncate": None if small.truncate is None else 1,
                                        "checkpoint_every": None if small.checkpoint_every is None else 1})

    def tracked_steps(self, steps: int) -> tuple[int, str]:
        """T = min(truncate, K) tracked steps; with checkpointing ⌈T/S⌉ segment starts plus one segment of S."""
        tracked = min(self.truncate or steps, steps)
        how = f"unrolled ({self.engine}" + (f", last {tracked} steps tracked" if self.truncate else "")
        if self.checkpoint_every:
            s = self.checkpoint_every
            return math.ceil(tracked / s) + min(s, tracked), how + f", checkpoint every {s} steps)"
        return tracked, how + ")"

    def scenario_flops(self, steps: int, step: float, outer: float) -> float:
        """K steps, each with its double backward (2x a step); checkpointing recomputes them once more."""
        return steps * 2 * step * (2 if self.checkpoint_every is not None else 1) + outer

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        yield from super().findings(analysis)
        if self.checkpoint_every is not None and self.engine == "higher":
            yield Finding("CHECKPOINT_NEEDS_TORCH_FUNC", f"{HYPERGRADIENT_PATH}.checkpoint_every",
                          "gradient checkpointing is implemented for the torch_func engine only",
                          f"set {HYPERGRADIENT_PATH}.engine: torch_func")
        steps = analysis.problem.train.steps if analysis.has("train:differentiable") else None
        if self.truncate is not None and steps is not None and self.truncate >= steps:
            yield Finding("TRUNCATE_NOT_BELOW_STEPS", f"{HYPERGRADIENT_PATH}.truncate",
                          f"truncate {self.truncate} >= train.steps {steps} tracks every step (no truncation)",
                          f"use truncate < {steps}, or remove truncate")


@HYPERGRADIENTS.register(builder="ddspec.components.training.implicit:implicit")
class ImplicitHypergradient(HypergradientBase):
    """Implicit function theorem at the trained inner solution θ* (∇θ L_train(θ*, D̂) = 0):

    dL/dD̂ = ∂L/∂D̂ − ∂²L_train/∂D̂∂θ · v,  with (H + δI) v = ∇θ L_out(θ*),  H = ∇²θ L_train(θ*, D̂),

    v from conjugate gradient or a Neumann series α Σ_j (I − αH)^j ∇θ L_out on Hessian-vector
    products; memory independent of the number of inner steps."""

    kind: Literal["implicit"] = "implicit"
    solver: Literal["cg", "neumann"] = "cg"
    iterations: PositiveInt = Field(20, le=10_000, description="CG iterations or Neumann terms.")
    damping: NonNegativeFloat = Field(0.0, description="δ added to the Hessian's diagonal.")
    neumann_step: float = Field(0.01, gt=0, description="α of the Neumann series (needs α·λ_max(H) < 2).")
    lr_note: ClassVar[str] = ("the implicit hypergradient differentiates the trained solution, which does not "
                              "depend on the inner lrs")
    smoke: ClassVar[dict[str, Any]] = {"iterations": 2}

    def tracked_steps(self, steps: int) -> tuple[int, str]:
        return 1, f"implicit ({self.solver}, {self.iterations} Hessian-vector products)"

    def approximation(self) -> str:
        return self._approximate(f"the implicit function theorem at θ_K assumes converged inner training, and the "
                                 f"linear solve stops after {self.iterations} iterations")

    def scenario_flops(self, steps: int, step: float, outer: float) -> float:
        """K plain steps, the outer loss, and one Hessian-vector product (2x a step) per solver iteration."""
        return steps * step + outer + 2 * self.iterations * 2 * step


@HYPERGRADIENTS.register(builder="ddspec.components.training.ridge_head:ridge_head_builder")
class RidgeHeadHypergradient(HypergradientBase):
    """The last layer in closed form (FRePo's neural feature regression): K inner steps without a graph, then
    the linear head replaced by the ridge solution on the synthetic features,

    W̃ = Φᵀ (Φ Φᵀ + λ̃ I)⁻¹ s·P,  Φ = [φ_θK(x), 1],  λ̃ = λ · tr(Φ Φᵀ)/n,  P: the label probabilities;

    the hypergradient flows through W̃ and φ_θK(x) (θ_K itself is held constant). Cheap: no second-order
    terms, memory of one forward pass; pair it with ``scenarios.pool`` so the features keep training."""

    kind: Literal["ridge_head"] = "ridge_head"
    ridge: float = Field(1e-4, gt=0, le=10, description="λ, relative to the mean squared feature norm tr(ΦΦᵀ)/n.")
    target_scale: float = Field(
        10.0, gt=0, le=1000, description="s: the head regresses s times the label probabilities, so its logits span "
        "the range of a trained classifier's (s = 1 keeps the outer cross-entropy near log C).",
    )
    lr_note: ClassVar[str] = ("the ridge-head hypergradient holds the trained body constant, so the inner lrs "
                              "receive no gradient")

    def tracked_steps(self, steps: int) -> tuple[int, str]:
        return 1, (f"ridge head (last layer in closed form, λ = {self.ridge:g}, target scale {self.target_scale:g}; "
                   "K steps without a graph)")

    def approximation(self) -> str:
        return self._approximate("the trained body θ_K is held constant")

    def scenario_flops(self, steps: int, step: float, outer: float) -> float:
        """K plain steps, one more pass for the features, and the outer loss."""
        return (steps + 1) * step + outer

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """The head regresses s x label probabilities: class targets only."""
        yield from super().findings(analysis)
        if analysis.has("targets:real"):
            yield Finding("RIDGE_HEAD_NEEDS_CLASSES", HYPERGRADIENT_PATH,
                          f"the ridge head regresses {self.target_scale:g} x the label probabilities of a classifier, "
                          f"but data `{analysis.problem.data.kind}` has real-valued targets",
                          "use optimize.hypergradient: {kind: unrolled} or {kind: implicit}")


HypergradientUnion = Annotated[Union[UnrolledHypergradient, ImplicitHypergradient, RidgeHeadHypergradient], Field(discriminator="kind")]  # noqa: UP007


class OptimizeBase(SpecModel):
    """What every outer optimizer answers without torch."""

    def augmentation_ops(self) -> AugmentationSpec | None:
        """The DSA augmentation it declares (the evaluation's ``augment`` reuses its ops); None if none."""
        return None

    def outer_iterations(self) -> int | None:
        """The outer iterations a run records (one row of ``history.json`` each); None for an optimizer without an
        iterative loop (a closed form, a selection)."""
        return None

    def with_real_batch_at_most(self, per_class: int) -> Self:
        """This optimizer with real batches of at most ``per_class`` samples per class (itself when it draws
        none); for the tiny instance of :func:`ddspec.testing.check_hypergradient`."""
        return self


OPTIMIZERS.base = OptimizeBase


@OPTIMIZERS.register(capabilities=("gradient",))
class GradientOptimize(OptimizeBase):
    """First-order optimization of the synthetic tensors (matching or hypergradient steps)."""

    nested: ClassVar[dict[str, Registry]] = {"hypergradient": HYPERGRADIENTS}
    smoke: ClassVar[dict[str, Any]] = {"iterations": 2, "outer_loop": 2}
    kind: Literal["gradient"] = "gradient"
    optimizer: Literal["sgd", "adam"] | None = Field(
        None, description="None: the backend's reference (matching: sgd; bilevel: adam)."
    )
    lr: LearningRate | None = Field(None, description="None: the backend's reference value for the distance.")
    momentum: Momentum = 0.5
    weight_decay: NonNegativeFloat = 0.0
    iterations: PositiveInt = 1000
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="The outer lr over the iterations t = 0..T−1: constant, or cosine decay lr·½(1 + cos(πt/T)) "
        "from lr towards 0.",
    )
    outer_loop: PositiveInt | None = Field(
        None, description="Synthetic updates per network initialisation (gradient matching); None: DC's schedule."
    )
    real_batch_per_class: PositiveInt = 256
    augmentation: AugmentationSpec = Field(default_factory=AugmentationSpec)
    hypergradient: HypergradientUnion | None = Field(
        None, description="How the bilevel backend differentiates through training; None: unrolled, torch_func."
    )

    def augmentation_ops(self) -> AugmentationSpec | None:
        return self.augmentation

    def outer_iterations(self) -> int | None:
        return self.iterations

    def with_real_batch_at_most(self, per_class: int) -> Self:
        return self.model_copy(update={"real_batch_per_class": min(self.real_batch_per_class, per_class)})

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """The hypergradient's own findings."""
        if self.hypergradient is not None:
            yield from self.hypergradient.findings(analysis)


@OPTIMIZERS.register(capabilities=("selection",))
class SelectOptimize(OptimizeBase):
    """Baselines that pick D̂ instead of synthesizing it: real samples per class (``random``, ``herding``,
    ``kcenter``), or, for data with a domain (PDE collocation points), draws from the points' box (``uniform``;
    ``lhs``, ``sobol``, ``halton``: scipy.stats.qmc, scrambled) or residual-based adaptive sampling (``rad``:
    the points of a PINN trained while resampling them every ``resample_every`` steps from a pool of ``pool``
    uniform points with p(x) ∝ |r(x)|^k / mean|r|^k + c)."""

    #: The methods that draw points from the data's domain instead of picking real samples.
    DOMAIN_METHODS: ClassVar[tuple[str, ...]] = ("uniform", "lhs", "sobol", "halton", "rad")
    smoke: ClassVar[dict[str, Any]] = {"resample_every": 1, "pool": 256}
    kind: Literal["select"] = "select"
    method: Literal["random", "herding", "kcenter", "uniform", "lhs", "sobol", "halton", "rad"] = "random"
    space: Literal["input", "embedding"] = Field(
        "input", description="Where distances are measured: raw inputs or a random network's embedding."
    )
    rad_k: PositiveFloat = Field(1.0, description="RAD: the exponent k of |r|.")
    rad_c: NonNegativeFloat = Field(1.0, description="RAD: the constant c added to the normalized |r|^k.")
    resample_every: PositiveInt = Field(1000, description="RAD: training steps between resamplings.")
    pool: PositiveInt = Field(8192, description="RAD: uniform candidate points per resampling.")

    def describe(self) -> str:
        """What the selection does, in words (for ``explain``)."""
        if self.draws_points():
            return f"draw points in the data's domain ({self.method})"
        return f"select real samples ({self.method}, in {self.space} space)"

    def draws_points(self) -> bool:
        """Whether the method draws points from the data's domain (else it picks real samples)."""
        return self.method in self.DOMAIN_METHODS

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """An embedding needs a network: a model family that is a library estimator has none. Domain samplers
        need data with a domain."""
        if self.space == "embedding" and analysis.has("train:estimator"):
            yield Finding("EMBEDDING_NEEDS_NETWORK", "optimize.space", f"the model family is the estimator of train "
                          f"`{analysis.kind('train')}`, which has no embedding", "set optimize.space: input")
        if self.draws_points() and not analysis.has("data:pde"):
            yield Finding("SAMPLER_NEEDS_DOMAIN", "optimize.method", f"`{self.method}` draws points from the data's "
                          f"domain, and data `{analysis.kind('data')}` has none (it is not a PDE problem)",
                          "use optimize.method: random, herding or kcenter")


@OPTIMIZERS.register(capabilities=("zero_order",))
class ZeroOrderOptimize(OptimizeBase):
    """Zero-order optimization of D̂ by Gaussian smoothing: it needs objective values only.

    The step follows ĝ ≈ ∇L_σ(S), L_σ(S) = E_v L(S + σv), v ~ N(0, I), S the learned tensors (inputs held
    standardized, so σ is in units of the data's standard deviation):
    forward ĝ = (1/M) Σ_l [L(S+σv_l) − L(S)] v_l/σ (M + 1 evaluations), antithetic ĝ = (1/M) Σ_l [L(S+σv_l) −
    L(S−σv_l)] v_l/(2σ) (2M evaluations). All evaluations of a step share the scenarios ω, their seeds and the real
    batch (common random numbers); the directions come from the run's generator."""

    smoke: ClassVar[dict[str, Any]] = {"iterations": 2, "samples": 2}
    kind: Literal["zero_order"] = "zero_order"
    estimator: Literal["forward", "antithetic"] = Field(
        "antithetic", description="antithetic: 2M evaluations, no σ² curvature term in the variance; forward: M + 1.")
    directions: Literal["gaussian", "orthogonal"] = Field(
        "gaussian", description="orthogonal: blocks of at most d exactly orthogonal directions (QR of a Gaussian "
        "matrix), each rescaled to a chi-distributed norm; lower variance for the same M.")
    samples: PositiveInt = Field(16, le=100_000, description="M, directions per step.")
    sigma: float = Field(0.1, gt=0, le=100, description="σ, the smoothing radius, in units of the data's std.")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="The step on ĝ: plain (sgd) or Adam.")
    lr: LearningRate = Field(0.1, description="s₀, the step size (in standardized units for sgd).")
    lr_schedule: Literal["inv_sqrt", "constant"] = Field(
        "inv_sqrt", description="inv_sqrt: s₀/√(1+E) at iteration E (the reference schedule); constant: s₀.")
    momentum: Momentum = 0.0
    weight_decay: NonNegativeFloat = 0.0
    iterations: PositiveInt = 200
    shaping: Literal["none", "centered_rank"] = Field(
        "none", description="centered_rank: the values replaced by their centred ranks before combining (robust "
        "to outliers and scale, but a biased estimate of ∇L_σ).")
    bounds: tuple[float, float] | None = Field(
        None, description="Box [lo, hi] in data units: after every step the inputs are projected onto it.")
    real_batch_per_class: PositiveInt = 256
    evaluations: Literal["auto", "batched", "loop"] = Field(
        "auto", description="batched: the evaluations of a step as one torch.func.vmap over the perturbed sets "
        "(inner procedures with torch training); loop: one at a time; auto: batched where the inner procedure "
        "allows it.")
    chunk: PositiveInt | None = Field(
        None, description="Perturbed sets per vmapped batch (bounds the memory of batched evaluations); None: all.")

    def per_step(self) -> int:
        """Objective evaluations per step and scenario: M + 1 (forward) or 2M (antithetic)."""
        return self.samples + 1 if self.estimator == "forward" else 2 * self.samples

    def outer_iterations(self) -> int | None:
        return self.iterations

    def with_real_batch_at_most(self, per_class: int) -> Self:
        return self.model_copy(update={"real_batch_per_class": min(self.real_batch_per_class, per_class)})

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """A box must be non-empty; learned inner lrs need a hypergradient; ``batched`` needs torch training."""
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            yield Finding("EMPTY_BOUNDS", "optimize.bounds", f"the box {list(self.bounds)} is empty",
                          "give bounds as [lo, hi] with lo < hi (data units), or remove them")
        if analysis.has("train:differentiable") and analysis.problem.train.learn_lr:
            yield Finding("LR_NOT_LEARNABLE", "train.learn_lr", "the zero-order optimizer learns D̂ only",
                          "set train.learn_lr: false")
        if self.evaluations == "batched" and not analysis.has("train:differentiable"):
            yield Finding("NOT_BATCHABLE", "optimize.evaluations", f"the inner procedure `{analysis.kind('train')}` "
                          "is not torch training, so its fits cannot be vmapped", "set optimize.evaluations: auto")
