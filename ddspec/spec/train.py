"""``train``: the inner procedure O that fits the model family to (synthetic) data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ddspec.errors import Finding
from ddspec.registry import REGULARIZERS, TRAIN, Registry, import_object
from ddspec.spec.base import LearningRate, Momentum, NonNegativeFloat, PositiveInt, SpecModel
from ddspec.spec.regularizer import CurvatureRegularizer, RegularizerBase

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

    def describes_model(self) -> str | None:
        """The model family in words, when this procedure is the model family itself (None: ``model`` is)."""
        return None

    def describes_fit(self) -> str | None:
        """How the evaluation fits this procedure's own model family, in words (None: ``model`` is the family)."""
        return None

    def active_regularizers(self) -> list[RegularizerBase]:
        """The regularizers its training loss carries that are computed (λ > 0); none by default."""
        return []

    def update_cost(self) -> float:
        """The cost of one training update relative to a plain one: 1 + Σ_r (cost_r − 1) over the active
        regularizers."""
        return 1.0 + sum(r.update_cost() - 1.0 for r in self.active_regularizers())


TRAIN.base = TrainBase


@TRAIN.register(capabilities=("differentiable",))
class GradientTrain(TrainBase):
    """Gradient-based training (SGD or Adam) for ``steps`` steps on mini-batches of ``batch_size``, of the loss
    mean_i ℓ_i + Σ_r λ_r mean_i R_r,i with the ``regularizers`` R_r (per sample; none by default)."""

    nested: ClassVar[dict[str, Registry]] = {"regularizers": REGULARIZERS}
    smoke: ClassVar[dict[str, Any]] = {"steps": 2}
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
    regularizers: list[CurvatureRegularizer] = Field(
        default_factory=list, description="Penalties added to the per-sample training loss of every model the "
        "distillation trains (inner training, network updates, teachers, experts; not the evaluation).",
    )

    def inner_steps(self) -> int | None:
        return self.steps

    def active_regularizers(self) -> list[RegularizerBase]:
        return [r for r in self.regularizers if r.active()]

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """Learned lrs need an objective that differentiates through the inner steps: a surrogate distance does
        so only when it unrolls them (capability ``needs_unroll``). (Which hypergradients differentiate the lrs:
        ``optimize.hypergradient``'s findings.) Regularizers need a model trained by gradient steps: an embedding
        surrogate trains none, a closed-form model is fitted, not trained. The regularizers' own findings."""
        for r in self.regularizers:
            yield from r.findings(analysis)
        if self.active_regularizers():
            untrained = ""
            if analysis.has("distance:embedding"):
                untrained = f"distance `{analysis.kind('distance')}` compares embeddings of untrained networks"
            elif analysis.has("model:closed_form"):
                untrained = "the model is fitted in closed form"
            if untrained:
                yield Finding("REGULARIZER_UNUSED", "train.regularizers", f"{untrained}: no model is trained with "
                              "gradient steps, so the regularizers have no effect", "remove train.regularizers",
                              severity="warning")
        if self.learn_lr and analysis.has("distance:surrogate") and not analysis.has("distance:needs_unroll"):
            yield Finding("LR_NOT_LEARNABLE", "train.learn_lr", f"`{analysis.kind('distance')}` does not "
                          "differentiate through the inner steps, so their lrs receive no gradient",
                          "set train.learn_lr: false")


#: scikit-learn estimator parameter values (what ``train.params`` may hold).
EstimatorParam = int | float | str | bool | None


@TRAIN.register(builder="ddspec.components.training.estimators:estimator_fit",
                capabilities=("estimator", "not_differentiable"))
class SklearnTrain(TrainBase):
    """Fit a scikit-learn ``estimator`` on D̂ (a black box: no gradient); the estimator is the model family.

    Outputs on x (N x K for K classes): log p̃(x), p̃ = max(p, floor) / Σ max(p, floor) for p the estimator's
    ``predict_proba`` on all K classes (a class absent from D̂ has p = 0); ``ridge`` on classes is
    RidgeClassifier and outputs its ``decision_function`` scores (−1000 for absent classes). On real
    targets (N x T): ``predict``. ``params`` go to the constructor; ``random_state`` is the evaluation seed."""

    kind: Literal["sklearn"] = "sklearn"
    estimator: Literal["logistic_regression", "ridge", "decision_tree", "random_forest", "knn"] = "decision_tree"
    params: dict[str, EstimatorParam] = Field(
        default_factory=dict, description="Constructor arguments of the scikit-learn estimator (e.g. max_depth)."
    )
    proba_floor: float = Field(
        1e-3, gt=0, lt=0.5, description="Class probabilities are clipped below at this floor and renormalised "
        "before the log, so cross-entropy stays finite for 0/1 leaves."
    )

    #: The scikit-learn class of each estimator: (for class targets, for real targets); None: does not fit them.
    CLASSES: ClassVar[dict[str, tuple[str | None, str | None]]] = {
        "logistic_regression": ("sklearn.linear_model:LogisticRegression", None),
        "ridge": ("sklearn.linear_model:RidgeClassifier", "sklearn.linear_model:Ridge"),
        "decision_tree": ("sklearn.tree:DecisionTreeClassifier", "sklearn.tree:DecisionTreeRegressor"),
        "random_forest": ("sklearn.ensemble:RandomForestClassifier", "sklearn.ensemble:RandomForestRegressor"),
        "knn": ("sklearn.neighbors:KNeighborsClassifier", "sklearn.neighbors:KNeighborsRegressor"),
    }

    def estimator_class(self, targets: str) -> type | None:
        """The scikit-learn class fitted to ``targets`` ("classes" or "real"; imports scikit-learn), or None
        when this estimator does not fit them."""
        ref = self.CLASSES[self.estimator][targets == "real"]
        return None if ref is None else import_object(ref)

    def describes_model(self) -> str | None:
        return f"scikit-learn {self.estimator} (fitted by the library; no gradient)"

    def describes_fit(self) -> str | None:
        return "fitted by the library with random_state = seed"

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """The estimator is the model family (``model`` must be unset); it must fit the data's targets, and
        ``params`` must name constructor parameters of its class."""
        if analysis.problem.model is not None:
            yield Finding("ESTIMATOR_IS_THE_MODEL", "model",
                          f"train `{self.kind}` fits the scikit-learn estimator `{self.estimator}`, which is the "
                          "model family, so `model` has no role",
                          "remove `model`: the scikit-learn estimator is the model family (evaluate.models may "
                          "still list networks to evaluate on)")
        targets = analysis.data.targets
        cls = self.estimator_class(targets)
        if cls is None:
            fits = [name for name, pair in self.CLASSES.items() if pair[targets == "real"] is not None]
            yield Finding("ESTIMATOR_TARGETS", "train.estimator",
                          f"estimator `{self.estimator}` does not fit {targets} targets",
                          f"use one of: {', '.join(fits)}")
            return
        valid = sorted(cls().get_params())
        unknown = sorted(set(self.params) - set(valid))
        if unknown:
            yield Finding("ESTIMATOR_PARAMS", "train.params",
                          f"{cls.__name__} has no parameter {', '.join(unknown)}",
                          f"use only: {', '.join(valid)}")
