"""Closed-form and convex model families: kernel ridge regression on a feature map, the
``closed_form`` and ``convex`` inner procedures, and the ``exact`` outer optimizer.

KRR: f(x) = W φ(x), W = argmin ‖Y − W φ(X)‖² + λ‖W‖² = Y φ_λ(X)⁺ (one-hot class rows, or real-valued
target rows: the theorem holds for any Y), solved exactly. The feature maps φ (``model.features``) are
the kinds of the :data:`~ddspec.registry.FEATURES` registry; each declares its dimension p = ``dim(d)``
and where the closed-form theory refuses it (its findings).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Union

from pydantic import Field, model_validator

from ddspec.errors import Finding
from ddspec.registry import FEATURES, MODELS, OPTIMIZERS, TRAIN, Registry
from ddspec.spec.base import NonNegativeFloat, PositiveFloat, PositiveInt, SpecModel
from ddspec.spec.model import ModelBase
from ddspec.spec.optimize import OptimizeBase
from ddspec.spec.train import TrainBase

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis
    from ddspec.spec.data import DataInfo

class FeaturesBase(SpecModel):
    """A feature map φ: R^d → R^p (``model.features``); its builder returns the numpy map
    (:class:`ddspec.components.closed_form.krr.FeatureMap`, with its torch twin)."""

    def layers(self, d: int) -> list[int]:
        """The widths after the input (d) of the map's layers; the last is p."""
        raise NotImplementedError

    def dim(self, d: int) -> int:
        """p, the number of features on d-dimensional inputs."""
        return self.layers(d)[-1]


FEATURES.base = FeaturesBase


@FEATURES.register(builder="ddspec.components.models.kernel:linear_features")
class LinearFeatures(FeaturesBase):
    """φ(x) = x (flattened): linear ridge regression; p = d."""

    kind: Literal["linear"] = "linear"

    def layers(self, d: int) -> list[int]:
        return [d]


@FEATURES.register(builder="ddspec.components.models.kernel:random_fourier_features")
class RandomFourierFeatures(FeaturesBase):
    """φ(x) = √(2/p) cos(A x + b), A_ij ~ N(0, σ⁻²), b ~ U[0, 2π) from ``seed``: an RBF kernel of bandwidth σ
    as p → ∞. Invertible (surjective onto its range) only for p ≤ d with rank A = p."""

    kind: Literal["rff"] = "rff"
    features: PositiveInt = Field(32, description="p, the number of features (p ≤ d for exact distillation).")
    bandwidth: PositiveFloat = Field(4.0, description="σ of the RBF kernel the features approximate.")
    seed: int = Field(0, ge=0)

    def layers(self, d: int) -> list[int]:
        return [self.features]

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """p > d: x ↦ Ax + b spans a d-dimensional subspace of R^p, so φ is not onto its target space."""
        d = math.prod(analysis.data.input_shape)
        if self.features > d:
            yield Finding(
                "KRR_NOT_SURJECTIVE", "model.features.features",
                f"random Fourier features with p = {self.features} > d = {d}: x ↦ Ax + b spans only a "
                f"{d}-dimensional subspace of R^p, so the features cannot reach the targets an exact set needs",
                f"use features <= {d}, or the linear feature map",
            )


@FEATURES.register(builder="ddspec.components.models.kernel:leaky_relu_features")
class LeakyReLUFeatures(FeaturesBase):
    """φ(x) = σ(W_L … σ(W_1 x + b_1) … + b_L), σ = LeakyReLU(slope), random full-rank weights from ``seed``.
    Surjective when the widths do not increase (d ≥ h_1 ≥ … ≥ h_L = p)."""

    kind: Literal["leaky_relu_mlp"] = "leaky_relu_mlp"
    widths: list[PositiveInt] = Field(default_factory=lambda: [32, 32], min_length=1, max_length=16)
    slope: float = Field(0.1, gt=0, lt=1, description="LeakyReLU negative slope (invertible for slope > 0).")
    seed: int = Field(0, ge=0)

    def layers(self, d: int) -> list[int]:
        return list(self.widths)

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """A layer R^a → R^b with b > a is not onto."""
        d = math.prod(analysis.data.input_shape)
        widths = [d, *self.widths]
        if any(b > a for a, b in itertools.pairwise(widths)):
            yield Finding(
                "KRR_NOT_SURJECTIVE", "model.features.widths",
                f"widths {widths[1:]} after d = {d} increase somewhere: a layer R^a → R^b with b > a is not onto, "
                "so some feature vectors have no input (one point per class is then not enough in general)",
                f"use non-increasing widths starting at most at {d}",
            )


#: ``model.features``: a tagged union over the :data:`~ddspec.registry.FEATURES` kinds registered so far.
FeatureUnion = Annotated[Union[tuple(FEATURES.specs())], Field(discriminator="kind")]  # noqa: UP007


@MODELS.register(builder="ddspec.components.models.kernel:build_kernel_ridge", capabilities=("closed_form", "kernel"))
class KernelRidgeSpec(ModelBase):
    """Kernel ridge regression f(x) = W φ(x) with ridge λ (``lam``) on one-hot class rows (predicts argmax)
    or on real-valued targets (predicts f(x))."""

    nested: ClassVar[dict[str, Registry]] = {"features": FEATURES}
    kind: Literal["kernel_ridge"] = "kernel_ridge"
    features: FeatureUnion = Field(default_factory=LinearFeatures)
    lam: NonNegativeFloat = Field(1e-3, description="λ of the model fitted to the real data.")

    def feature_dim(self, shape: tuple[int, ...]) -> int:
        """p, the number of features of inputs of per-sample ``shape``."""
        return self.features.dim(math.prod(shape))

    def cost(self, shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
        d = math.prod(shape)
        p = self.features.dim(d)
        widths = [d, *self.features.layers(d)]
        flops = 2 * sum(a * b for a, b in itertools.pairwise(widths)) + 2 * p * num_classes
        return p * num_classes, flops, sum(widths) + num_classes

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """The feature map's own findings (where the closed-form theory says no exact set exists)."""
        return self.features.findings(analysis)


@TRAIN.register(capabilities=("closed_form",))
class ClosedFormTrain(TrainBase):
    """Fit the kernel ridge model exactly: W_S = Y_S φ_λS(X_S)⁺ with ridge ``lam_synthetic`` (λ_S ≥ 0)."""

    kind: Literal["closed_form"] = "closed_form"
    lam_synthetic: NonNegativeFloat = Field(0.0, description="λ_S of the model fitted to the synthetic data.")

    def synthetic_ridge(self) -> float | None:
        return self.lam_synthetic


@dataclass(frozen=True)
class ConvexLossFacts:
    """What a ``train: convex`` loss is, known without numpy or cvxpy (its loss object in
    :mod:`ddspec.components.closed_form.convex` reads these facts).

    ``fixed_labels``: its targets are hard classes with no derivative (the hinge's t = 2y − 1), so learned
    labels would receive no gradient. ``binary_columns``: the weight columns m of a binary (K = 2) model — one
    score (logistic, hinge) or one column per class (ridge on one-hot rows); a K > 2 class model has K columns,
    a model of T real targets T."""

    fixed_labels: bool
    binary_columns: int

    def columns(self, num_classes: int, num_outputs: int) -> int:
        """m, the weight columns of W (d × m) for ``num_classes`` classes (0: real targets) and ``num_outputs``."""
        return self.binary_columns if num_classes == 2 else num_outputs


@TRAIN.register(capabilities=("convex",))
class ConvexTrain(TrainBase):
    """A convex inner problem over a linear model (W, b), solved exactly with cvxpy:

    logistic: (1/n) Σ CE + penalty;  svm: (1/n) Σ hinge (one-vs-rest) + (λ/2)‖W‖²;
    squared (ridge): (1/n)‖XWᵀ + b − Y‖² + λ‖W‖² with an optional constraint on W (class rows or
    real-valued targets; logistic and svm take classes only)."""

    kind: Literal["convex"] = "convex"
    loss: Literal["logistic", "svm", "squared"] = "logistic"
    penalty: Literal["l2", "l1"] = "l2"
    lam: PositiveFloat = Field(1e-2, description="Regularization strength λ (l2: (λ/2)‖W‖²; l1: λ‖W‖₁).")
    constraint: Literal["none", "nonnegative", "box"] = "none"
    box: PositiveFloat = Field(1.0, description="|W_ij| ≤ box when constraint is box.")

    #: The facts of each loss (:class:`ConvexLossFacts`).
    LOSSES: ClassVar[dict[str, ConvexLossFacts]] = {
        "logistic": ConvexLossFacts(fixed_labels=False, binary_columns=1),
        "svm": ConvexLossFacts(fixed_labels=True, binary_columns=1),
        "squared": ConvexLossFacts(fixed_labels=False, binary_columns=2),
    }

    @property
    def facts(self) -> ConvexLossFacts:
        """The facts of this loss."""
        return self.LOSSES[self.loss]

    def weight_columns(self, info: DataInfo) -> int:
        """m, the columns of W (d × m) on data ``info`` (:meth:`ConvexLossFacts.columns`)."""
        return self.facts.columns(info.num_classes, info.num_outputs)

    @model_validator(mode="after")
    def _combination(self) -> ConvexTrain:
        if self.penalty == "l1" and self.loss != "logistic":
            raise ValueError("penalty l1 is implemented for loss logistic only")
        if self.constraint != "none" and self.loss != "squared":
            raise ValueError("constraints are implemented for loss squared (ridge) only")
        return self

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """Real-valued targets need the squared loss: cross-entropy and the hinge compare scores with classes;
        a loss of fixed labels (the hinge) gives learned labels no gradient."""
        if self.facts.fixed_labels and analysis.has("synthetic:learned_targets"):
            yield Finding(
                "LABELS_NOT_LEARNABLE", "synthetic.learn_labels",
                f"loss `{self.loss}` fits fixed class labels (t = 2y − 1), so learned labels receive no gradient",
                "set synthetic.learn_labels: false, or use train.loss: logistic or squared (soft labels)",
            )
        if analysis.has("targets:real") and self.loss != "squared":
            yield Finding(
                "CONVEX_LOSS_NEEDS_CLASSES", "train.loss",
                f"loss `{self.loss}` compares scores with class labels, but the data's targets are real values",
                "use train.loss: squared (ridge regression), or data with class labels",
            )


@OPTIMIZERS.register(capabilities=("exact",))
class ExactOptimize(OptimizeBase):
    """Construct D̂ in closed form so that the model fitted to it equals the model fitted to the real data.

    The free part is Z = φ_λS(X̂)⁺ of the starting points X̂ (``synthetic.init``: real samples give the
    close-to-real variant, noise a random Z); ``labels``: the starting points' targets (one-hot classes, or
    their real values), or the original model's predictions on X̂; ``label_only``: keep X̂ as the inputs and
    solve for the labels only (needs m ≥ p)."""

    kind: Literal["exact"] = "exact"
    labels: Literal["onehot", "model"] = "onehot"
    label_only: bool = False

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """W_S = Y_S φ(X_S)⁺ has rank ≤ m, so m ≥ k outputs (classes or target values) are needed; label-only
        needs features of rank p (m ≥ p)."""
        k, m = analysis.data.num_outputs, analysis.n_synthetic
        if m < k:
            yield Finding(
                "KRR_TOO_FEW_POINTS", "synthetic.total",
                f"{m} synthetic points for {k} outputs: W_S = Y_S φ(X_S)⁺ has rank ≤ m < k, so it "
                "cannot equal the full-data W in general", f"use at least {k} points (one per class or output)",
            )
        if not (self.label_only and analysis.has("model:kernel")):
            return
        p = analysis.problem.model.feature_dim(analysis.data.input_shape)
        if m < p:
            yield Finding(
                "KRR_LABEL_ONLY_TOO_FEW", "optimize.label_only",
                f"label-only distillation solves Y_S φ_λ(X_S)⁺ = W with X_S fixed, which needs m >= p features of "
                f"rank p; m = {m} < p = {p}",
                f"use at least {p} synthetic points, or set optimize.label_only: false",
            )
