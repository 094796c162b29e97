"""``train: sklearn``: a scikit-learn estimator fitted on D̂, called like a torch model.

Inputs are flattened to float64 rows (N x d). Outputs (N x K float32, on the input's device):

- class targets, an estimator with ``predict_proba``: log p̃, p̃_k = max(p_k, ε) / Σ_j max(p_j, ε) with ε the
  ``proba_floor`` and p the probabilities over all K classes (p_k = 0 for a class absent from the fit);
- class targets, RidgeClassifier: its ``decision_function`` scores on the classes of the fit (two classes:
  −s, s for its one score s), :data:`LOW` on the others;
- real targets: ``predict`` (N x T).

A fit on one class is the constant prediction of that class: probability 1 on it, floored and renormalised as
above (RidgeClassifier: score 0 on it, :data:`LOW` on the others).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from ddspec.components.objectives.targets import Targets

#: The score of a class the fitted estimator never saw (score outputs).
LOW = -1e3


@dataclass(frozen=True)
class FittedEstimator:
    """A fitted estimator as a model: ``outputs`` maps float64 rows (N x d) to outputs (N x K); ``estimator``
    is the scikit-learn object (None for a constant prediction)."""

    outputs: Callable[[np.ndarray], np.ndarray]
    estimator: Any = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.outputs(_rows(x)))).to(device=x.device, dtype=torch.float32)

    def eval(self) -> FittedEstimator:
        return self

    def to(self, *args: Any, **kwargs: Any) -> FittedEstimator:
        return self


class EstimatorFit:
    """The scikit-learn estimator of ``spec`` (a :class:`~ddspec.spec.train.SklearnTrain`) for ``targets``."""

    def __init__(self, spec: Any, targets: Targets) -> None:
        cls = spec.estimator_class(targets.kind)
        if cls is None:
            raise ValueError(f"estimator {spec.estimator!r} does not fit {targets.kind} targets")
        self.spec, self.targets, self.cls = spec, targets, cls
        self.classes = targets.kind == "classes"

    def fit(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> FittedEstimator:
        """Fit on (x, y) with ``random_state = seed`` where the estimator has one. y: class indices (N) or
        probability rows (N x K, their argmax), or real values (N or N x T)."""
        rows = _rows(x)
        params = dict(self.spec.params)
        if "random_state" in self.cls().get_params():
            params["random_state"] = seed
        estimator = self.cls(**params)
        k, floor = self.targets.num_outputs, self.spec.proba_floor
        scores = not hasattr(estimator, "predict_proba")
        if not self.classes:
            values = y.detach().cpu().double().reshape(len(y), -1).numpy()
            estimator.fit(rows, values[:, 0] if values.shape[1] == 1 else values)
            return FittedEstimator(partial(_predict, estimator, k), estimator)
        labels = (y.argmax(1) if y.dim() == 2 else y).detach().cpu().long().numpy()
        present = np.unique(labels)
        if len(present) == 1:
            if scores:
                row = np.full(k, LOW)
                row[present[0]] = 0.0
            else:  # probability 1 on the class, floored and renormalised like every prediction
                row = floored_log(np.eye(k)[present[:1]], floor)[0]
            return FittedEstimator(partial(_constant, row))
        estimator.fit(rows, labels)
        outputs = partial(_scores, estimator, k) if scores else partial(_log_proba, estimator, k, floor)
        return FittedEstimator(outputs, estimator)


def estimator_fit(spec: Any, targets: Targets) -> EstimatorFit:
    """The builder of ``train: sklearn``: fits ``spec``'s estimator to data with these ``targets``."""
    return EstimatorFit(spec, targets)


def floored_log(proba: np.ndarray, floor: float) -> np.ndarray:
    """log p̃, p̃ = max(p, floor) renormalised to sum to 1 per row."""
    clipped = np.maximum(proba, floor)
    return np.log(clipped / clipped.sum(1, keepdims=True))


def _rows(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().reshape(len(x), -1).numpy()


def _log_proba(estimator: Any, k: int, floor: float, rows: np.ndarray) -> np.ndarray:
    proba = np.zeros((len(rows), k))
    proba[:, estimator.classes_] = estimator.predict_proba(rows)
    return floored_log(proba, floor)


def _scores(estimator: Any, k: int, rows: np.ndarray) -> np.ndarray:
    found = estimator.decision_function(rows)
    if found.ndim == 1:  # two classes: one score s for classes_[1]
        found = np.stack([-found, found], 1)
    out = np.full((len(rows), k), LOW)
    out[:, estimator.classes_] = found
    return out


def _constant(row: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.tile(row, (len(rows), 1))


def _predict(estimator: Any, k: int, rows: np.ndarray) -> np.ndarray:
    return np.asarray(estimator.predict(rows)).reshape(len(rows), k)
