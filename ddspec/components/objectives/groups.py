"""Groups of real samples for the ``group_cvar`` risk: int64 group ids, deterministic (no torch RNG drawn).

Group ids are global: a group never mixes classes, and group g of class c has id c·G + g, where G is the
number of groups per class of the scheme (so ``num_groups`` = K·G; a class with fewer groups leaves ids
unused, which the group CVaR skips as empty groups).

- :func:`nearest_synthetic_groups`: the group of a real sample is its nearest synthetic point of its own
  class, argmin_j ‖f(x) − f(s_j)‖₂ (ties: the lowest j), in input space (f = flatten) or an embedding. With
  more than ``max_per_class`` synthetic points in a class, the centres are instead the ``max_per_class``
  k-means centres of those points (:func:`synthetic_centres`).
- :func:`kmeans_groups`: k-means clusters of each class's real training inputs, fitted once.
- :func:`attribute_groups`: the data's own group labels, within each class.

The ``risk.groups`` kinds (:mod:`ddspec.spec.risk`, registry :data:`ddspec.registry.GROUPS`) build a
:class:`GroupAssigner` with ``GROUPS.build(spec, data)``: :class:`FixedGroups` computed once (capability
``fixed``: kmeans, attribute) or :class:`NearestSyntheticAssigner`, assigned on the fly against the current
synthetic set (and network).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ddspec.errors import SpecError


def nearest_ids(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (Euclidean) of each point; ties go to the lowest index.

    ``points``: n x …, ``centres``: k x … (flattened to n x d, k x d); returns int64 (n,).
    """
    if len(centres) == 0:
        raise ValueError("nearest_ids needs at least one centre")
    a, b = points.detach().flatten(1).double(), centres.detach().flatten(1).double()
    dist = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    return dist.argmin(1).long()


def synthetic_centres(points: torch.Tensor, max_centres: int) -> torch.Tensor:
    """The synthetic points of one class themselves, or, when there are more than ``max_centres``, the
    ``max_centres`` k-means centres of them (scikit-learn KMeans, ``random_state=0``, one k-means++ init)."""
    if len(points) <= max_centres:
        return points.detach()
    from sklearn.cluster import KMeans

    flat = points.detach().flatten(1).double().cpu().numpy()
    fit = KMeans(n_clusters=max_centres, random_state=0, n_init=1).fit(flat)
    return torch.as_tensor(fit.cluster_centers_, dtype=points.dtype, device=points.device)


def nearest_synthetic_groups(
    real: torch.Tensor, labels: torch.Tensor, synthetic: Sequence[torch.Tensor], max_per_class: int,
) -> tuple[torch.Tensor, int]:
    """(group ids, num_groups) of real samples by their nearest synthetic point of their own class.

    ``real``: n x … features (inputs or embeddings) with class ``labels`` (n,); ``synthetic[c]``: the features
    of class c's synthetic points (possibly none, if no real sample has class c). G = min(max_per_class,
    largest class's synthetic count); a sample of class c gets c·G + (index of its nearest centre).
    """
    per_class = max(min(len(s), max_per_class) for s in synthetic)
    if per_class == 0:
        raise ValueError("nearest_synthetic_groups needs synthetic points")
    ids = torch.empty(len(real), dtype=torch.int64, device=real.device)
    for c in torch.unique(labels).tolist():
        rows = labels == c
        if len(synthetic[c]) == 0:
            raise ValueError(f"class {c} has real samples but no synthetic points to group them by")
        ids[rows] = c * per_class + nearest_ids(real[rows], synthetic_centres(synthetic[c], max_per_class))
    return ids, len(synthetic) * per_class


def kmeans_groups(x: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int, seed: int) -> tuple[torch.Tensor, int]:
    """(group ids, num_groups): k-means with k clusters of each class's inputs (flattened; scikit-learn KMeans,
    ``random_state=seed``, default inits), fitted once; the sample of class c in cluster j gets c·k + j."""
    from sklearn.cluster import KMeans

    ids = torch.empty(len(x), dtype=torch.int64)
    flat = x.detach().flatten(1).double().cpu().numpy()
    y = labels.cpu()
    for c in range(num_classes):
        rows = torch.nonzero(y == c).flatten()
        if len(rows) == 0:
            continue
        if len(rows) < k:
            raise ValueError(f"k-means with k = {k} clusters on class {c}, which has only {len(rows)} samples")
        fit = KMeans(n_clusters=k, random_state=seed).fit(flat[rows.numpy()])
        ids[rows] = c * k + torch.as_tensor(fit.labels_.astype(np.int64))
    return ids.to(x.device), num_classes * k


def attribute_groups(labels: torch.Tensor, attributes: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, int]:
    """(group ids, num_groups): the samples of class c with attribute a (an int ≥ 0) form group c·A + a,
    A = max attribute + 1 (for ``digits_shift``, whose attribute is 2·label + cue, only 2 of them per class
    are non-empty)."""
    if attributes.shape != labels.shape:
        raise ValueError(f"attributes have shape {tuple(attributes.shape)}, labels {tuple(labels.shape)}")
    if attributes.numel() and int(attributes.min()) < 0:
        raise ValueError("attribute group labels must be ≥ 0")
    a = int(attributes.max()) + 1 if attributes.numel() else 1
    return labels.long() * a + attributes.long(), num_classes * a


class GroupAssigner:
    """Gives real training rows their group ids (global: ``num_groups`` ids, a group never mixes classes)."""

    def of_rows(self, data: Any, rows: torch.Tensor, synthetic: torch.Tensor, synthetic_labels: torch.Tensor,
                net: torch.nn.Module) -> tuple[torch.Tensor, int]:
        """(group ids, num_groups) of the real training rows ``rows`` of any classes; ``synthetic`` (inputs, class
        indices ``synthetic_labels``) and the current network ``net`` serve groups assigned on the fly."""
        raise NotImplementedError

    def in_class(self, data: Any, rows: torch.Tensor, real: torch.Tensor, syn: torch.Tensor,
                 syn_inputs: torch.Tensor) -> torch.Tensor:
        """Group ids of the real rows ``rows`` of one class (only their equality matters): ``real`` / ``syn`` are the
        features a class distance compares, ``syn_inputs`` the class's synthetic inputs."""
        raise NotImplementedError


@dataclass(frozen=True)
class FixedGroups(GroupAssigner):
    """Groups computed once: ``ids[i]`` is the group of training row i."""

    ids: torch.Tensor
    num_groups: int

    def of_rows(self, data: Any, rows: torch.Tensor, synthetic: torch.Tensor, synthetic_labels: torch.Tensor,
                net: torch.nn.Module) -> tuple[torch.Tensor, int]:
        return self.ids[rows], self.num_groups

    def in_class(self, data: Any, rows: torch.Tensor, real: torch.Tensor, syn: torch.Tensor,
                 syn_inputs: torch.Tensor) -> torch.Tensor:
        return self.ids[rows]


@dataclass(frozen=True)
class NearestSyntheticAssigner(GroupAssigner):
    """Each real row's nearest synthetic point (or k-means centre, :func:`synthetic_centres`) of its class, in
    ``space`` ``input`` (un-augmented inputs) or ``embedding`` (the network's embedding, no gradient)."""

    space: str
    max_per_class: int

    def of_rows(self, data: Any, rows: torch.Tensor, synthetic: torch.Tensor, synthetic_labels: torch.Tensor,
                net: torch.nn.Module) -> tuple[torch.Tensor, int]:
        """:func:`nearest_synthetic_groups` of the rows' inputs, or of their embeddings by ``net``."""
        real, syn = data.x_train[rows], synthetic.detach()
        if self.space == "embedding":
            with torch.no_grad():
                real, syn = net.embed(real), net.embed(syn)
        per_class = [syn[synthetic_labels == c] for c in range(data.num_classes)]
        return nearest_synthetic_groups(real, data.y_train[rows], per_class, self.max_per_class)

    def in_class(self, data: Any, rows: torch.Tensor, real: torch.Tensor, syn: torch.Tensor,
                 syn_inputs: torch.Tensor) -> torch.Tensor:
        """The nearest of the compared features (embedding space, no extra forward pass) or of the inputs."""
        if self.space == "input":
            real, syn = data.x_train[rows], syn_inputs
        return nearest_ids(real, synthetic_centres(syn, self.max_per_class))


def build_nearest_synthetic(spec: Any, data: Any) -> NearestSyntheticAssigner:
    return NearestSyntheticAssigner(spec.space, spec.max_per_class)


def build_kmeans(spec: Any, data: Any) -> FixedGroups:
    """:func:`kmeans_groups` of the training inputs, fitted here, once."""
    return FixedGroups(*kmeans_groups(data.x_train, data.y_train, data.num_classes, spec.k, spec.seed))


def build_attribute(spec: Any, data: Any) -> FixedGroups:
    """:func:`attribute_groups` of the data's group labels (SpecError ``GROUPS_MISSING`` when it has none)."""
    if data.groups_train is None:
        raise SpecError.one(
            "GROUPS_MISSING", "risk.groups",
            f"risk.groups `attribute` needs the data's group labels, which data `{data.name}` does not provide",
            "use a data kind with groups (e.g. digits_shift), or risk.groups: {kind: nearest_synthetic} or "
            "{kind: kmeans}",
        )
    return FixedGroups(*attribute_groups(data.y_train, data.groups_train, data.num_classes))
