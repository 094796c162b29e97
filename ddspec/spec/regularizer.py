"""``train.regularizers``: penalties added to the per-sample training loss of every model the distillation
learns from (registry :data:`ddspec.registry.REGULARIZERS`, a list inside train ``gradient``).

With regularizers r = 1..m, the training loss of a batch B is mean_{i∈B} ℓ_i + Σ_r λ_r mean_{i∈B} R_r,i; a risk
that aggregates per-sample losses (``within``) receives ℓ_R,i = ℓ_i + Σ_r λ_r R_r,i instead. A regularizer with
λ = 0 is skipped entirely (never computed), so the run is bit-identical to one without it. With ``fraction`` f < 1
R is computed on k = ⌈f·N⌉ random rows of each batch (torch's global RNG, checkpointed with the run) and those
rows carry (N/k)·λR_i (the others 0): unbiased for the batch mean and per sample, at a fraction of the cost.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ddspec.registry import REGULARIZERS
from ddspec.spec.base import SpecModel

#: A plain update (forward + backward) in units of one forward pass on the batch (the compiler's TRAIN_FACTOR).
PLAIN_UPDATE = 3.0


class RegularizerBase(SpecModel):
    """What every regularizer answers without torch: its weight λ and the cost of a regularized update."""

    lam: float = Field(1.0, ge=0, le=1e6, description="λ, the weight of R in ℓ + λR; 0 skips the regularizer "
                       "(bit-identical to leaving it out).")
    fraction: float = Field(1.0, gt=0, le=1, description="f, the share of each batch's rows R is computed on: "
                            "k = ⌈f·N⌉ random rows (torch's global RNG), weighted N/k (unbiased); 1: every row, "
                            "nothing drawn. Bounds the regularized update's cost to 1 + (c − 1)·f.")

    def active(self) -> bool:
        """Whether it is computed at all (λ > 0)."""
        return self.lam > 0

    def update_cost(self) -> float:
        """The cost of one regularized network update relative to a plain one (1: free)."""
        return 1.0

    def describe(self) -> str:
        return f"{self.kind} (λ = {self.lam:g})"  # type: ignore[attr-defined]


REGULARIZERS.base = RegularizerBase


@REGULARIZERS.register(builder="ddspec.components.training.regularizers:curvature")
class CurvatureRegularizer(RegularizerBase):
    """Curvature of the loss in input space (GUARD; CURE's finite difference), per sample:

    R(x) = ‖∇ᵤℓ(u + h z) − ∇ᵤℓ(u)‖²,  z = ∇ᵤℓ(u)/‖∇ᵤℓ(u)‖ held fixed (no gradient through it; z = 0 where
    ∇ᵤℓ = 0, so R = 0 there), u = x/σ the input in units of σ, the global std of the real training inputs
    (so h and λ mean the same on any data: R = σ²‖∇ₓℓ(x + hσz) − ∇ₓℓ(x)‖² ≈ h²‖H z‖², H the input Hessian).
    ``direction: sign``: z = sign(∇ℓ)/‖sign(∇ℓ)‖ (CURE). ``form: loss_difference``: R = |ℓ(u + hz) − ℓ(u)|
    ≈ h‖∇ᵤℓ‖ + ½h² zᵀHz — first order: a gradient-norm penalty, not curvature (cheaper). A hypergradient
    through regularized steps differentiates the training step as it is taken — ∂_θ(ℓ + λR) at z fixed, z = z(θ, D̂)
    — including its dependence on D̂ and earlier θ through z (exact; for ``sign`` dz = 0 almost everywhere)."""

    kind: Literal["curvature"] = "curvature"
    h: float = Field(1.0, gt=0, le=100, description="The finite-difference step h, in units of the data's global "
                     "std (an L2 move of h·σ; 1 is the middle of an L2 attack grid 0.25-2σ).")
    direction: Literal["normalized", "sign"] = Field(
        "normalized", description="z = ∇ℓ/‖∇ℓ‖ (GUARD), or sign(∇ℓ)/‖sign(∇ℓ)‖ (CURE)."
    )
    form: Literal["gradient_difference", "loss_difference"] = Field(
        "gradient_difference", description="‖∇ℓ(u + hz) − ∇ℓ(u)‖² (curvature), or |ℓ(u + hz) − ℓ(u)| (first order: "
        "a gradient-norm penalty).",
    )

    def update_cost(self) -> float:
        """In forward passes f of the batch (a plain update: forward + backward = 3f). gradient_difference:
        forward and input gradient with a graph at x (3f, the forward shared with ℓ) and at x + hz (3f), then the
        parameter gradient back through both first-order graphs (double backward, 2 x 3f each): 18f = 6x.
        loss_difference: forward and input gradient at x (3f), forward at x + hz (1f), backward through both
        forwards (4f): 8f ≈ 2.7x. With ``fraction`` f the regularized part runs on f of the rows and the rest
        is a plain update: 1 + (c − 1)·f."""
        if not self.active():
            return 1.0
        c = (18.0 if self.form == "gradient_difference" else 8.0) / PLAIN_UPDATE
        return 1.0 + (c - 1.0) * self.fraction

    def describe(self) -> str:
        return (f"curvature ({self.form}, {self.direction} direction, h = {self.h:g}σ, λ = {self.lam:g}"
                f"{'' if self.fraction >= 1 else f', on {self.fraction:g} of each batch'}; "
                f"{self.update_cost():.1f}x per network update)")
