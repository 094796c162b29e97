"""One comparison of two exactly fitted models: the model fitted to D̂ against the model fitted to all real data.

A closed-form backend (krr, convex) solves its inner problem on both sets and hands the two :class:`Fitted`
models to :func:`weight_metrics`, which reports

- ``w_rel_error`` = ‖W_S − W‖_F / ‖W‖_F over the weights each backend compares (KRR: W; convex: [W; bᵀ]);
- class targets: ``agreement`` (fraction of test points where the two models predict the same class) and
  both models' test accuracy (``accuracy_full_model``, ``accuracy_distilled_model``);
- real targets: both models' test RMSE (``rmse_full_model``, ``rmse_distilled_model``; the root of the mean
  squared error over test rows and outputs, in the data's target units) and ``prediction_rel_error`` =
  ‖F_S − F‖_F / ‖F‖_F for the test predictions F_S, F of the two models — the regression counterpart of
  agreement (0 exactly when the distilled model predicts what the full model does; class agreement has no
  meaning for real values).

Class predictions from scores: the argmax of the columns, or ``score > 0`` for one column (a binary model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddspec.components.models.kernel import flat64


@dataclass(frozen=True)
class Fitted:
    """A fitted model: the ``weights`` :func:`weight_metrics` compares, and its ``scores`` on float64 rows
    (n × d → n × m)."""

    weights: np.ndarray
    scores: Callable[[np.ndarray], np.ndarray]


def _relative(a: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(a - reference) / np.linalg.norm(reference))


def _classes(scores: np.ndarray) -> np.ndarray:
    return (scores[:, 0] > 0).astype(int) if scores.shape[1] == 1 else scores.argmax(1)


def weight_metrics(full: Fitted, distilled: Fitted, data: Any) -> dict[str, float]:
    """The metrics of the module docstring on ``data``'s test split (``data.num_classes`` 0: real targets)."""
    x_test = flat64(data.x_test)
    scores = [full.scores(x_test), distilled.scores(x_test)]
    truth = data.y_test.detach().cpu().double().numpy()
    out = {"w_rel_error": _relative(distilled.weights, full.weights)}
    if data.num_classes == 0:
        truth = truth.reshape(len(truth), -1)
        rmse = [float(np.sqrt(np.mean((s - truth) ** 2))) for s in scores]
        return out | {"rmse_full_model": rmse[0], "rmse_distilled_model": rmse[1],
                      "prediction_rel_error": _relative(scores[1], scores[0])}
    pred = [_classes(s) for s in scores]
    return out | {
        "agreement": float((pred[0] == pred[1]).mean()),
        "accuracy_full_model": float((pred[0] == truth).mean()),
        "accuracy_distilled_model": float((pred[1] == truth).mean()),
    }
