"""The classifiers the evaluation fits to categorical records (models ``naive_bayes``, ``logistic_onehot``,
``decision_tree``; each kind builds its scikit-learn estimator, :meth:`~ddspec.spec.categorical.CategoricalClassifier.
estimator`), called like torch models: codes (N x d float) → log p̃ (N x K), p̃ the predicted class probabilities
over all K classes floored at :data:`FLOOR` and renormalised (a class absent from the fit has p = 0; a fit on one
class predicts it with probability 1). Every level the data declares is known to the estimators, so a level absent
from D̂ is a valid input.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from ddspec.components.categorical.data import CategoricalDataset
from ddspec.components.training.estimators import FittedEstimator, _constant, _log_proba, floored_log

#: The smallest predicted probability.
FLOOR = 1e-12


class CategoricalClassifierFit:
    """Fits the scikit-learn classifier of ``spec`` to records of ``data``'s attributes."""

    def __init__(self, spec: Any, data: CategoricalDataset) -> None:
        self.spec, self.k = spec, data.num_classes
        self.sizes = [s for j, s in enumerate(data.sizes) if j != data.label]

    def fit(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> FittedEstimator:
        """The classifier fitted to codes ``x`` and labels ``y`` (``random_state`` = ``seed`` where it has one)."""
        rows = x.detach().cpu().double().reshape(len(x), -1).numpy()
        labels = y.detach().cpu().long().numpy()
        present = np.unique(labels)
        if len(present) == 1:
            return FittedEstimator(partial(_constant, floored_log(np.eye(self.k)[present], FLOOR)[0]))
        estimator = self.spec.estimator(self.sizes, seed).fit(rows, labels)
        return FittedEstimator(partial(_log_proba, estimator, self.k, FLOOR), estimator)


def build_classifier(spec: Any, data: CategoricalDataset) -> CategoricalClassifierFit:
    """The builder of the categorical model kinds."""
    return CategoricalClassifierFit(spec, data)
