"""Metrics (builders of the ``metric`` registry): ``f(spec, pred, data) -> float``.

``pred`` is the int64 vector of predicted classes on ``data.x_test``. Every metric here is a
fraction in [0, 1] (:data:`FRACTIONS`; the report shows those as percentages).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

from ddspec.components.data.base import Dataset
from ddspec.errors import SpecError
from ddspec.registry import DATA
from ddspec.spec.evaluate import AccuracyMetric, ClusterMinMetric, WorstGroupMetric

#: Metric kinds whose values are fractions in [0, 1].
FRACTIONS = frozenset({"accuracy", "cluster_min", "worst_group"})

_CACHE_SIZE = 8
_ASSIGNMENTS: dict[tuple[int, int, int], tuple[weakref.ref, np.ndarray]] = {}


def correct(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Boolean vector 1[pred_i = target_i] (on the CPU)."""
    return (pred.cpu() == target.cpu()).numpy()


def accuracy(spec: AccuracyMetric, pred: torch.Tensor, data: Dataset) -> float:
    """(1/n) Σ_i 1[pred_i = y_i] over the test set."""
    return float(correct(pred, data.y_test).mean())


def cluster_assignment(data: Dataset, clusters: int, seed: int) -> np.ndarray:
    """k-means labels (k = ``clusters``, ``random_state = seed``, 10 restarts) of the raw flattened test
    inputs, labels ignored. Cached per (test tensor, clusters, seed) while that tensor is alive."""
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


def metric_details(spec: Any, pred: torch.Tensor, data: Dataset) -> dict[str, list]:
    """Per-run extras recorded next to a metric's values (per-cluster sizes/accuracies for cluster_min,
    per-group ids/sizes/accuracies for worst_group)."""
    if isinstance(spec, ClusterMinMetric):
        sizes, accs = cluster_accuracies(spec, pred, data)
        return {"cluster_sizes": sizes, "cluster_accuracies": accs}
    if isinstance(spec, WorstGroupMetric):
        ids, sizes, accs = group_accuracies(spec, pred, data)
        return {"group_ids": ids, "group_sizes": sizes, "group_accuracies": accs}
    return {}
