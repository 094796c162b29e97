"""``optimize``: the outer optimizer over D̂ (gradient on the synthetic data, or subset selection)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

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


class HypergradientBase(SpecModel):
    """What every hypergradient kind shares."""

    normalize: bool = Field(
        False, description="Divide each scenario's hypergradient by its norm (over all learned tensors) before the "
        "risk combines them, so that no scenario with an exploding hypergradient dominates a step.",
    )


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


HypergradientUnion = Annotated[Union[UnrolledHypergradient, ImplicitHypergradient, RidgeHeadHypergradient], Field(discriminator="kind")]  # noqa: UP007


@OPTIMIZERS.register(capabilities=("gradient",))
class GradientOptimize(SpecModel):
    """First-order optimization of the synthetic tensors (matching or hypergradient steps)."""

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


@OPTIMIZERS.register(capabilities=("selection",))
class SelectOptimize(SpecModel):
    """Coreset selection: pick real samples per class instead of synthesizing them (baselines)."""

    kind: Literal["select"] = "select"
    method: Literal["random", "herding", "kcenter"] = "random"
    space: Literal["input", "embedding"] = Field(
        "input", description="Where distances are measured: raw inputs or a random network's embedding."
    )
