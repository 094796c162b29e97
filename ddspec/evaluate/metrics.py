"""Metrics (builders of the ``metric`` registry): ``METRICS.build(spec)`` returns a :class:`Metric`, which
scores a trained model's test-set outputs: ``metric(outputs, data) -> float`` and ``metric.details(outputs,
data)`` (per-run extras recorded next to its values).

A metric whose kind declares ``needs_model`` measures the trained model itself (e.g. attacks it):
``metric.of_model(model, data, device) -> Scored`` (its value, nested figures summarized over the runs like
the value, and per-run details); the protocol calls that instead of ``metric(outputs, data)``.

``outputs`` is the float N x num_outputs matrix f(x_test). Class metrics score the predicted classes
argmax_k f(x)_k against the int64 ``data.y_test``; real-valued metrics score f(x) itself against
``data.targets.rows(data.y_test)``. What each metric fits is declared by its registry capabilities
(``targets:classes`` / ``targets:real``; ``fraction`` for values in [0, 1]; see :mod:`ddspec.spec.evaluate`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ddspec.components.data.base import Dataset
from ddspec.errors import SpecError
from ddspec.registry import DATA
from ddspec.spec.evaluate import ClusterMinMetric, WorstGroupMetric

_CACHE_SIZE = 8
_ASSIGNMENTS: dict[tuple[int, int, int], tuple[weakref.ref, np.ndarray]] = {}


#: Nested figures of one run: name → float, or name → nested figures (e.g. ``{"linf": {"0.1": 0.8}}``).
Figures = dict[str, Any]


@dataclass
class Scored:
    """What a ``needs_model`` metric measures on one trained model: its ``value``, nested ``figures`` that the
    protocol summarizes leaf by leaf as mean ± std over the runs, and per-run ``details`` (recorded as lists)."""

    value: float
    figures: Figures = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Metric:
    """A figure of a trained model on the test set, built from its spec."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def __call__(self, outputs: torch.Tensor, data: Dataset) -> float:
        """The figure of the test-set outputs (N x num_outputs)."""
        raise NotImplementedError

    def details(self, outputs: torch.Tensor, data: Dataset) -> dict[str, list]:
        """Per-run extras recorded next to the metric's values (none by default)."""
        return {}

    def scored(self, outputs: torch.Tensor, data: Dataset) -> Scored:
        """The figure of the test-set outputs with its nested figures (none by default) and details."""
        return Scored(self(outputs, data), details=self.details(outputs, data))

    def of_model(self, model: Callable[[torch.Tensor], torch.Tensor], data: Dataset,
                 device: torch.device | str) -> Scored:
        """The metric measured on the trained ``model`` itself (kinds with capability ``needs_model``)."""
        raise NotImplementedError(f"{type(self).__name__} scores test outputs, not a model")


def predicted_classes(outputs: torch.Tensor) -> torch.Tensor:
    """argmax_k outputs_k per row (int64, on the CPU)."""
    return outputs.argmax(1).cpu()


def correct(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Boolean vector 1[pred_i = target_i] (on the CPU)."""
    return (pred.cpu() == target.cpu()).numpy()


# -- classes ------------------------------------------------------------------------------------
def accuracy(spec: Any, pred: torch.Tensor, data: Dataset) -> float:
    """(1/n) Σ_i 1[pred_i = y_i] over the test set, ``pred`` the predicted classes."""
    return float(correct(pred, data.y_test).mean())


class Accuracy(Metric):
    """Test accuracy of the predicted classes."""

    def __call__(self, outputs: torch.Tensor, data: Dataset) -> float:
        return accuracy(self.spec, predicted_classes(outputs), data)


def cluster_assignment(data: Dataset, clusters: int, seed: int) -> np.ndarray:
    """k-means labels (k = ``clusters``, ``random_state = seed``, 10 restarts) of the raw flattened test
    inputs, labels ignored. Cached per (test tensor, clusters, seed) while that tensor is alive. Validation
    refuses more clusters than the described test samples (``ClusterMinMetric.findings``); the check here
    covers a loaded test set smaller than its description, and callers that skip validation."""
    key = (id(data.x_test), clusters, seed)
    hit = _ASSIGNMENTS.get(key)
    if hit is not None and hit[0]() is data.x_test:
        return hit[1]
    from sklearn.cluster import KMeans

    points = data.x_test.detach().cpu().reshape(len(data.x_test), -1).double().numpy()
    if len(points) < clusters:
        raise SpecError.one(
            "METRIC_CLUSTERS", "evaluate.metrics",
            f"cluster_min asks for {clusters} clusters but the test set has {len(points)} samples",
            "lower the metric's `clusters`",
        )
    labels = KMeans(n_clusters=clusters, random_state=seed, n_init=10).fit_predict(points)
    if len(_ASSIGNMENTS) >= _CACHE_SIZE:
        _ASSIGNMENTS.pop(next(iter(_ASSIGNMENTS)))
    _ASSIGNMENTS[key] = (weakref.ref(data.x_test), labels)
    return labels


def cluster_accuracies(spec: ClusterMinMetric, pred: torch.Tensor, data: Dataset) -> tuple[list[int], list[float]]:
    """(size, accuracy) of every non-empty k-means cluster g: acc_g = mean of 1[pred_i = y_i] over i ∈ g."""
    labels = cluster_assignment(data, spec.clusters, spec.seed)
    hits = correct(pred, data.y_test)
    groups = [labels == g for g in range(spec.clusters) if (labels == g).any()]
    return [int(g.sum()) for g in groups], [float(hits[g].mean()) for g in groups]


def cluster_min(spec: ClusterMinMetric, pred: torch.Tensor, data: Dataset) -> float:
    """min over k-means clusters g of acc_g (the worst-group accuracy of the group-CVaR paper)."""
    return min(cluster_accuracies(spec, pred, data)[1])


class ClusterMin(Metric):
    """The lowest per-cluster accuracy; details: every cluster's size and accuracy."""

    def __call__(self, outputs: torch.Tensor, data: Dataset) -> float:
        return cluster_min(self.spec, predicted_classes(outputs), data)

    def details(self, outputs: torch.Tensor, data: Dataset) -> dict[str, list]:
        sizes, accs = cluster_accuracies(self.spec, predicted_classes(outputs), data)
        return {"cluster_sizes": sizes, "cluster_accuracies": accs}


def group_accuracies(
    spec: WorstGroupMetric, pred: torch.Tensor, data: Dataset
) -> tuple[list[int], list[int], list[float]]:
    """(id, size, accuracy) of every test group g with at least one sample, in id order:
    acc_g = mean of 1[pred_i = y_i] over the test samples i with ``data.groups_test[i] = g``.
    SpecError ``METRIC_NEEDS_GROUPS`` when the data has no groups, ``METRIC_EMPTY_TEST`` when it has no
    test samples."""
    if data.groups_test is None:
        kinds = [kind for kind in DATA.kinds() if "groups" in DATA[kind].capabilities]
        raise SpecError.one(
            "METRIC_NEEDS_GROUPS", "evaluate.metrics",
            f"worst_group needs subgroup labels, but data {data.name!r} has none "
            f"(data kinds with groups: {', '.join(kinds)})",
            f"use a data kind with groups ({', '.join(kinds)}), or remove worst_group from evaluate.metrics",
        )
    groups = data.groups_test.cpu().numpy()
    if not groups.size:
        raise SpecError.one("METRIC_EMPTY_TEST", "evaluate.metrics", "worst_group: the test set has no samples",
                            "use data with a non-empty test split")
    hits = correct(pred, data.y_test)
    ids = np.unique(groups)
    masks = [groups == g for g in ids]
    return [int(g) for g in ids], [int(m.sum()) for m in masks], [float(hits[m].mean()) for m in masks]


def worst_group(spec: WorstGroupMetric, pred: torch.Tensor, data: Dataset) -> float:
    """min over the non-empty test groups g of acc_g (worst-group accuracy)."""
    return min(group_accuracies(spec, pred, data)[2])


class WorstGroup(Metric):
    """The lowest per-group accuracy; details: every non-empty group's id, size and accuracy."""

    def __call__(self, outputs: torch.Tensor, data: Dataset) -> float:
        return worst_group(self.spec, predicted_classes(outputs), data)

    def details(self, outputs: torch.Tensor, data: Dataset) -> dict[str, list]:
        ids, sizes, accs = group_accuracies(self.spec, predicted_classes(outputs), data)
        return {"group_ids": ids, "group_sizes": sizes, "group_accuracies": accs}


# -- real values --------------------------------------------------------------------------------
def residuals(outputs: torch.Tensor, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(f(x_i) − y_i, y_i) as float64 N x T arrays over the test set."""
    y = data.targets.rows(data.y_test).detach().cpu().double().numpy()
    return outputs.detach().cpu().double().numpy().reshape(y.shape) - y, y


def rmse(outputs: torch.Tensor, data: Dataset) -> float:
    """√((1/n) Σ_i ‖f(x_i) − y_i‖²), the squared error summed over the T outputs."""
    res, _ = residuals(outputs, data)
    return float(np.sqrt((res**2).sum(1).mean()))


def r2(outputs: torch.Tensor, data: Dataset) -> float:
    """(1/T) Σ_t (1 − SS_res,t / SS_tot,t), SS_res,t = Σ_i (f_t(x_i) − y_it)², SS_tot,t = Σ_i (y_it − ȳ_t)²;
    an output with SS_tot,t = 0 scores 1 if it is predicted exactly, else 0 (scikit-learn's ``r2_score``)."""
    res, y = residuals(outputs, data)
    ss_res, ss_tot = (res**2).sum(0), ((y - y.mean(0)) ** 2).sum(0)
    constant = ss_tot == 0
    scores = np.where(constant, (ss_res == 0).astype(float), 1 - ss_res / np.where(constant, 1.0, ss_tot))
    return float(scores.mean())


class Rmse(Metric):
    """Root mean squared error of the predicted values."""

    def __call__(self, outputs: torch.Tensor, data: Dataset) -> float:
        return rmse(outputs, data)


class R2(Metric):
    """Coefficient of determination of the predicted values."""

    def __call__(self, outputs: torch.Tensor, data: Dataset) -> float:
        return r2(outputs, data)
