"""Risk measures R_ω: differentiable maps from a vector of per-scenario losses to one scalar.

Backends take ∂R/∂ℓ (by autograd) as the per-scenario weights, so every risk here is a differentiable
(sub)gradient-carrying function of the loss tensor; none leaves torch.

CVaR (upper tail). For losses ℓ ∈ ℝⁿ and α ∈ (0, 1], with k = αn, m = ⌊k⌋ and ℓ₍₁₎ ≥ ℓ₍₂₎ ≥ … sorted
in decreasing order::

    CVaR_α(ℓ) = min_η  η + (1/k) Σ_i (ℓ_i − η)₊                       (Rockafellar–Uryasev)
              = (1/k) [ Σ_{j≤m} ℓ₍ⱼ₎ + (k − m) ℓ₍ₘ₊₁₎ ]              (sorted top-k form)

the mean of the worst α-fraction, with a fractional weight on the boundary sample when αn is not an
integer. CVaR_1 is the mean; as α → 0 it tends to the max. Its gradient is the weight vector
(1/k on the m largest losses, (k − m)/k on the next one, 0 elsewhere); tied losses share their
weights equally (a valid subgradient, and the same for every ordering of the ties).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

#: αn within this relative distance of an integer is taken as that integer (0.55·100 = 55.00000000000001).
_SNAP = 1e-9


class RiskMeasure:
    """A built risk (what ``RISKS.build(spec)`` returns). Backends call it in two places:

    - :meth:`over_scenarios` (also ``risk(losses)``): R_ω over the vector of per-scenario losses; backends take
      ∂R/∂ℓ_s (by autograd) as the scenarios' weights, so it must be differentiable in ``losses``;
    - :meth:`within`: how the per-sample losses ℓ_i of one scenario on a real batch become that scenario's
      loss — their mean, unless the risk is ``grouped`` (capability ``groups``: it acts on groups of the real
      data, and ``groups`` / ``num_groups`` give each sample's group);
    - :meth:`over_groups` (``grouped`` risks only): how one class's per-group distances d_g and its plain,
      ungrouped distance become that class's distance, where a matching backend compares embeddings.

    A risk that sets ``grouped = True`` implements both :meth:`within` (with groups) and :meth:`over_groups`."""

    grouped: bool = False

    def over_scenarios(self, losses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        return self.over_scenarios(losses)

    def within(self, losses: torch.Tensor, groups: torch.Tensor | None = None, num_groups: int = 0) -> torch.Tensor:
        """(1/n) Σ_i ℓ_i."""
        return losses.mean()

    def over_groups(self, distances: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
        """One class's distance from ``distances`` (1-D: one distance per non-empty group of the class's real
        batch, each to the class's whole synthetic set) and ``whole`` (the plain distance of the whole real batch,
        a scalar); differentiable in both. The matching backend calls it for every ``grouped`` risk."""
        raise NotImplementedError(
            f"{type(self).__name__} is grouped but does not define over_groups(distances, whole), which the matching "
            "backend's embedding distances call for a grouped risk: implement it (see GroupCVaR.over_groups)"
            if self.grouped else
            f"{type(self).__name__} is not grouped: over_groups applies only to risks with grouped = True "
            "(capability `groups`)"
        )


@dataclass(frozen=True)
class ScenarioRisk(RiskMeasure):
    """A risk over scenarios given by a function of the loss vector; per-sample losses are averaged."""

    fn: Callable[[torch.Tensor], torch.Tensor]

    def over_scenarios(self, losses: torch.Tensor) -> torch.Tensor:
        return self.fn(losses)


def mean(spec: Any) -> ScenarioRisk:
    """R(ℓ) = (1/S) Σ_s ℓ_s."""
    return ScenarioRisk(lambda losses: losses.mean())


def worst(spec: Any) -> ScenarioRisk:
    """R(ℓ) = max_s ℓ_s (subgradient: the indicator of the maximizer; tied maximizers share it equally)."""
    return ScenarioRisk(lambda losses: losses.max())


def cvar_risk(spec: Any) -> ScenarioRisk:
    """R(ℓ) = CVaR_α(ℓ), the mean of the worst (largest) α-fraction of the losses; ``spec.alpha`` is α."""
    alpha = float(spec.alpha)
    _check_alpha(alpha)
    return ScenarioRisk(lambda losses: cvar(losses, alpha))


def cvar(losses: torch.Tensor, alpha: float) -> torch.Tensor:
    """CVaR_α(ℓ) = min_η η + (1/(αn)) Σ_i (ℓ_i − η)₊ = mean of the worst α-fraction (module docstring).

    ``losses``: 1-D, non-empty. ``alpha`` ∈ (0, 1]: the fraction of the largest losses kept (1: the mean).
    Differentiable in ``losses``; the gradient is the top-k weight vector (ties share their weights).
    """
    if losses.dim() != 1 or losses.numel() == 0:
        raise ValueError(f"cvar needs a non-empty 1-D tensor of losses, got shape {tuple(losses.shape)}")
    groups = torch.zeros(losses.numel(), dtype=torch.long, device=losses.device)
    return _segment_cvars(losses, groups, 1, alpha)[0][0]


@dataclass(frozen=True)
class GroupCVaRs:
    """Per-group CVaR_α values. ``values[g]`` is CVaR_α of the losses of group g, 0 (and not a
    CVaR) where the group is empty: select with ``mask``."""

    values: torch.Tensor
    counts: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """Boolean (G,): which groups have at least one sample."""
        return self.counts > 0

    @property
    def num_nonempty(self) -> int:
        return int(self.mask.sum())

    @property
    def num_empty(self) -> int:
        return int(self.counts.numel() - self.mask.sum())

    def nonempty(self) -> torch.Tensor:
        """The CVaR values of the non-empty groups, in group order."""
        return self.values[self.mask]


def group_cvars(losses: torch.Tensor, groups: torch.Tensor, num_groups: int, alpha: float) -> GroupCVaRs:
    """CVaR_α(ℓ restricted to group g) for g = 0 … num_groups−1, computed at once (one sort).

    ``groups``: int64 group id in [0, num_groups) per loss. A one-sample group's CVaR is its loss; an empty
    group gets the placeholder 0 and ``counts[g] = 0`` (see :class:`GroupCVaRs`); no sample is dropped.
    """
    if losses.dim() != 1:
        raise ValueError(f"group_cvars needs a 1-D tensor of losses, got shape {tuple(losses.shape)}")
    if groups.shape != losses.shape:
        raise ValueError(f"groups has shape {tuple(groups.shape)}, losses {tuple(losses.shape)}: one id per loss")
    if groups.dtype.is_floating_point or groups.dtype.is_complex or groups.dtype == torch.bool:
        raise TypeError(f"groups must hold integer group ids, got {groups.dtype}")
    if num_groups < 1:
        raise ValueError(f"num_groups must be ≥ 1, got {num_groups}")
    if losses.numel() and (int(groups.min()) < 0 or int(groups.max()) >= num_groups):
        raise ValueError(f"group ids must lie in [0, {num_groups}), got [{int(groups.min())}, {int(groups.max())}]")
    values, counts = _segment_cvars(losses, groups.long(), num_groups, alpha)
    return GroupCVaRs(values, counts)


def group_cvar(
    losses: torch.Tensor,
    groups: torch.Tensor,
    num_groups: int,
    alpha: float,
    mean_weight: float = 1.0,
    max_weight: float = 1.0,
) -> torch.Tensor:
    """R(ℓ) = mean_weight · mean_g CVaR_α(ℓ_g) + max_weight · max_g CVaR_α(ℓ_g), over the non-empty groups G⁺.

    ℓ_g are the losses with ``groups == g``. Empty groups are skipped (:func:`group_cvars` reports how many
    there are); at least one group must be non-empty. Differentiable in ``losses``.
    """
    for name, w in (("mean_weight", mean_weight), ("max_weight", max_weight)):
        if not (w >= 0 and w < float("inf")):
            raise ValueError(f"{name} must be finite and ≥ 0, got {w}")
    per_group = group_cvars(losses, groups, num_groups, alpha).nonempty()
    if per_group.numel() == 0:
        raise ValueError("group_cvar needs at least one non-empty group (got no losses)")
    return mean_weight * per_group.mean() + max_weight * per_group.max()


def _check_alpha(alpha: float) -> None:
    if not (0.0 < alpha <= 1.0):
        raise ValueError(f"CVaR alpha must lie in (0, 1], got {alpha}")


def _segment_cvars(
    losses: torch.Tensor, segments: torch.Tensor, num_segments: int, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """CVaR_α per segment (the one implementation behind :func:`cvar` and :func:`group_cvars`).

    Sorts by (segment, loss descending); the j-th largest loss (j = 0, 1, …) of a segment with c samples
    gets weight 1/k if j < m, (k − m)/k if j = m, else 0, with k = αc and m = ⌊k⌋; equal losses of a
    segment then share their weights equally. Returns (values (num_segments,), counts (num_segments,)),
    values[s] = Σ weights · losses of segment s (0 for an empty segment).
    """
    _check_alpha(float(alpha))
    n = losses.numel()
    device = losses.device
    counts = torch.bincount(segments, minlength=num_segments)
    values = torch.zeros(num_segments, dtype=losses.dtype, device=device)
    if n == 0:
        return values, counts
    with torch.no_grad():
        by_loss = torch.argsort(losses.detach(), descending=True, stable=True)
        order = by_loss[torch.argsort(segments[by_loss], stable=True)]
        seg = segments[order]
        sorted_detached = losses.detach()[order]
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(n, device=device) - starts[seg]
        k = float(alpha) * counts[seg].to(torch.float64)
        k_int = k.round()
        k = torch.where(((k - k_int).abs() <= _SNAP * k) & (k_int >= 1), k_int, k)
        m = k.floor()
        r = rank.to(torch.float64)
        w = torch.where(r < m, 1.0 / k, torch.where(r == m, (k - m) / k, torch.zeros_like(k)))
        # Ties: runs of equal losses within a segment share the sum of their weights equally.
        new_run = torch.ones(n, dtype=torch.bool, device=device)
        new_run[1:] = (seg[1:] != seg[:-1]) | (sorted_detached[1:] != sorted_detached[:-1])
        run = torch.cumsum(new_run.long(), 0) - 1
        runs = int(run[-1]) + 1
        run_weight = torch.zeros(runs, dtype=torch.float64, device=device).index_add_(0, run, w)
        run_size = torch.bincount(run, minlength=runs).to(torch.float64)
        w = (run_weight / run_size)[run].to(losses.dtype)
    picked = losses[order]
    # Only positive weights contribute (0 · (−inf) would be nan); the gradient w.r.t. the losses is w.
    terms = torch.where(w > 0, w * picked, torch.zeros_like(picked))
    return values.index_add(0, seg, terms), counts


# -- group_cvar (Group-CVaR DRO over groups of real data) ------------------------------------------------------
@dataclass(frozen=True)
class GroupCVaR(RiskMeasure):
    """Risk ``group_cvar``: it acts within each scenario, on groups of the real data (:func:`group_objective` on
    per-sample losses, :func:`group_distance` on per-group distances); the scenarios are averaged."""

    spec: Any
    grouped = True

    def over_scenarios(self, losses: torch.Tensor) -> torch.Tensor:
        """(1/S) Σ_s ℓ_s: the robustness is inside each scenario's loss."""
        return losses.mean()

    def within(self, losses: torch.Tensor, groups: torch.Tensor | None = None, num_groups: int = 0) -> torch.Tensor:
        if groups is None:
            raise ValueError("group_cvar needs the group id of every loss")
        return group_objective(losses, groups, num_groups, self.spec)

    def over_groups(self, distances: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
        """:func:`group_distance` of one distance per non-empty group and the plain distance ``whole``."""
        return group_distance(distances, whole, self.spec)


def group_cvar_risk(spec: Any) -> GroupCVaR:
    """The :class:`GroupCVaR` of a ``group_cvar`` spec (α checked)."""
    _check_alpha(float(spec.alpha))
    return GroupCVaR(spec)


def group_objective(losses: torch.Tensor, groups: torch.Tensor, num_groups: int, spec: Any) -> torch.Tensor:
    """The network-update loss of ``group_cvar`` over per-sample losses ℓ (1-D) with group ids ``groups``::

        mean_weight · mean_{g∈G⁺} CVaR_α(ℓ_g) + max_weight · max_{g∈G⁺} CVaR_α(ℓ_g) + ce_weight · mean_i ℓ_i

    G⁺: the non-empty groups (empty ones skipped, one-sample groups count with CVaR = their loss).
    Differentiable in ``losses`` through every term.
    """
    robust = group_cvar(losses, groups, num_groups, float(spec.alpha), float(spec.mean_weight), float(spec.max_weight))
    return robust + float(spec.ce_weight) * losses.mean()


def group_distance(distances: torch.Tensor, whole: torch.Tensor, spec: Any) -> torch.Tensor:
    """The class distance of ``group_cvar`` in distribution matching, from one distance d_g per non-empty group
    and the plain (ungrouped) class distance d::

        D = mean_weight · CVaR_α(d_g) + max_weight · max_g d_g + ce_weight · d

    (α = 1: the paper's mean + max over groups, each group's "CVaR" being its single distance; α < 1 keeps the
    mean term on the worst α-fraction of the groups; the plain term plays the part of the paper's plain
    cross-entropy). Differentiable in ``distances`` (1-D, non-empty) and ``whole`` (a scalar).
    """
    if distances.dim() != 1 or distances.numel() == 0:
        raise ValueError(f"group_distance needs a non-empty 1-D tensor, got shape {tuple(distances.shape)}")
    robust = float(spec.mean_weight) * cvar(distances, float(spec.alpha)) + float(spec.max_weight) * distances.max()
    return robust + float(spec.ce_weight) * whole
