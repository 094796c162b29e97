"""Closed-form and convex model families: kernel ridge regression on a feature map, the
``closed_form`` and ``convex`` inner procedures, and the ``exact`` outer optimizer.

KRR: f(x) = W φ(x), W = argmin ‖Y − W φ(X)‖² + λ‖W‖² = Y φ_λ(X)⁺ (one-hot Y), solved exactly.
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from ddspec.registry import MODELS, OPTIMIZERS, TRAIN
from ddspec.spec.base import NonNegativeFloat, PositiveFloat, PositiveInt, SpecModel
from ddspec.spec.model import ModelBase


class LinearFeatures(SpecModel):
    """φ(x) = x (flattened): linear ridge regression; p = d."""

    kind: Literal["linear"] = "linear"

    def dim(self, d: int) -> int:
        return d


class RandomFourierFeatures(SpecModel):
    """φ(x) = √(2/p) cos(A x + b), A_ij ~ N(0, σ⁻²), b ~ U[0, 2π) from ``seed``: an RBF kernel of bandwidth σ
    as p → ∞. Invertible (surjective onto its range) only for p ≤ d with rank A = p."""

    kind: Literal["rff"] = "rff"
    features: PositiveInt = Field(32, description="p, the number of features (p ≤ d for exact distillation).")
    bandwidth: PositiveFloat = Field(4.0, description="σ of the RBF kernel the features approximate.")
    seed: int = Field(0, ge=0)

    def dim(self, d: int) -> int:
        return self.features


class LeakyReLUFeatures(SpecModel):
    """φ(x) = σ(W_L … σ(W_1 x + b_1) … + b_L), σ = LeakyReLU(slope), random full-rank weights from ``seed``.
    Surjective when the widths do not increase (d ≥ h_1 ≥ … ≥ h_L = p)."""

    kind: Literal["leaky_relu_mlp"] = "leaky_relu_mlp"
    widths: list[PositiveInt] = Field(default_factory=lambda: [32, 32], min_length=1, max_length=16)
    slope: float = Field(0.1, gt=0, lt=1, description="LeakyReLU negative slope (invertible for slope > 0).")
    seed: int = Field(0, ge=0)

    def dim(self, d: int) -> int:
        return self.widths[-1]


FeatureUnion = Annotated[Union[LinearFeatures, RandomFourierFeatures, LeakyReLUFeatures],  # noqa: UP007
                         Field(discriminator="kind")]


@MODELS.register(builder="ddspec.components.models.kernel:build_kernel_ridge", capabilities=("closed_form", "kernel"))
class KernelRidgeSpec(ModelBase):
    """Kernel ridge regression f(x) = W φ(x) on one-hot targets with ridge λ (``lam``); predicts argmax."""

    kind: Literal["kernel_ridge"] = "kernel_ridge"
    features: FeatureUnion = Field(default_factory=LinearFeatures)
    lam: NonNegativeFloat = Field(1e-3, description="λ of the model fitted to the real data.")

    def cost(self, shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
        d = math.prod(shape)
        p = self.features.dim(d)
        widths = [d, *getattr(self.features, "widths", [p])]
        flops = 2 * sum(a * b for a, b in itertools.pairwise(widths)) + 2 * p * num_classes
        return p * num_classes, flops, sum(widths) + num_classes


@TRAIN.register(capabilities=("closed_form",))
class ClosedFormTrain(SpecModel):
    """Fit the kernel ridge model exactly: W_S = Y_S φ_λS(X_S)⁺ with ridge ``lam_synthetic`` (λ_S ≥ 0)."""

    kind: Literal["closed_form"] = "closed_form"
    lam_synthetic: NonNegativeFloat = Field(0.0, description="λ_S of the model fitted to the synthetic data.")


@TRAIN.register(capabilities=("convex",))
class ConvexTrain(SpecModel):
    """A convex inner problem over a linear model (W, b), solved exactly with cvxpy:

    logistic: (1/n) Σ CE + penalty;  svm: (1/n) Σ hinge (one-vs-rest) + (λ/2)‖W‖²;
    squared (ridge): (1/n)‖XWᵀ + b − Y‖² + λ‖W‖² with an optional constraint on W."""

    kind: Literal["convex"] = "convex"
    loss: Literal["logistic", "svm", "squared"] = "logistic"
    penalty: Literal["l2", "l1"] = "l2"
    lam: PositiveFloat = Field(1e-2, description="Regularization strength λ (l2: (λ/2)‖W‖²; l1: λ‖W‖₁).")
    constraint: Literal["none", "nonnegative", "box"] = "none"
    box: PositiveFloat = Field(1.0, description="|W_ij| ≤ box when constraint is box.")

    @model_validator(mode="after")
    def _combination(self) -> ConvexTrain:
        if self.penalty == "l1" and self.loss != "logistic":
            raise ValueError("penalty l1 is implemented for loss logistic only")
        if self.constraint != "none" and self.loss != "squared":
            raise ValueError("constraints are implemented for loss squared (ridge) only")
        return self


@OPTIMIZERS.register(capabilities=("exact",))
class ExactOptimize(SpecModel):
    """Construct D̂ in closed form so that the model fitted to it equals the model fitted to the real data.

    The free part is Z = φ_λS(X̂)⁺ of the starting points X̂ (``synthetic.init``: real samples give the
    close-to-real variant, noise a random Z); ``labels``: one-hot classes, or the original model's
    predictions on X̂; ``label_only``: keep X̂ as the inputs and solve for the labels only (needs m ≥ p)."""

    kind: Literal["exact"] = "exact"
    labels: Literal["onehot", "model"] = "onehot"
    label_only: bool = False
