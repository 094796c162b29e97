"""Kaplan–Meier curves, the censoring distribution and IPCW estimates of P(event by τ).

For right-censored pairs (t_i, δ_i) (δ_i = 1: event at t_i; 0: censored at t_i), at the distinct event times
u_1 < u_2 < ... with d_k events and n_k = #{i : t_i ≥ u_k} at risk,

    Ŝ(t) = Π_{u_k ≤ t} (1 − d_k / n_k)            (Kaplan–Meier)
    Ĝ(t) = the same with the roles of events and censorings swapped (the censoring survival),

and the inverse-probability-of-censoring-weighted estimate of F(τ) = P(T ≤ τ) = 1 − S(τ):

    F̂(τ) = (1/n) Σ_i δ_i 1[t_i ≤ τ] / Ĝ(t_i−)

(Ĝ(t−) the left limit; with no censoring Ĝ ≡ 1 and F̂ is the empirical CDF). Censored patients are never dropped:
they count in the risk sets until their time, and in Ĝ. Patients pooled from several studies, each with its own
follow-up, get Ĝ_g of their own study g (``groups``): censoring need only be independent of T within a study.
"""

from __future__ import annotations

import numpy as np


def kaplan_meier(time: np.ndarray, event: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Ŝ at every point of ``grid`` (right-continuous: events at t count at t). An empty sample gives Ŝ ≡ 1."""
    time, event, grid = np.asarray(time, float), np.asarray(event, bool), np.asarray(grid, float)
    if len(time) == 0:
        return np.ones(len(grid))
    steps, factors = _product_limit(time, event)
    survival = np.concatenate([[1.0], np.cumprod(factors)])
    return survival[np.searchsorted(steps, grid, side="right")]


def _product_limit(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u_k, 1 − d_k/n_k) at the distinct times with at least one event."""
    order = np.argsort(time, kind="stable")
    t, d = time[order], event[order]
    unique, first = np.unique(t, return_index=True)
    at_risk = len(t) - first
    deaths = np.add.reduceat(d.astype(float), first)
    keep = deaths > 0
    return unique[keep], 1.0 - deaths[keep] / at_risk[keep]


def censoring_survival(time: np.ndarray, event: np.ndarray, at: np.ndarray, left: bool = False) -> np.ndarray:
    """Ĝ(at) (or the left limit Ĝ(at−) with ``left``): Kaplan–Meier of the censorings."""
    time, event, at = np.asarray(time, float), np.asarray(event, bool), np.asarray(at, float)
    steps, factors = _product_limit(time, ~event)
    survival = np.concatenate([[1.0], np.cumprod(factors)])
    return survival[np.searchsorted(steps, at, side="left" if left else "right")]


def ipcw_weights(time: np.ndarray, event: np.ndarray, tau: float, groups: np.ndarray | None = None) -> np.ndarray:
    """w_i = δ_i 1[t_i ≤ τ]/Ĝ(t_i−) + 1[t_i > τ]/Ĝ(τ): patients whose status at τ is known, weighted by the inverse
    probability of being uncensored that long; 0 for a censoring at or before τ. With ``groups`` (the study of each
    patient) Ĝ is estimated within each group."""
    time, event = np.asarray(time, float), np.asarray(event, bool)
    if groups is not None:
        groups, weights = np.asarray(groups), np.zeros(len(time))
        for g in np.unique(groups):
            weights[groups == g] = ipcw_weights(time[groups == g], event[groups == g], tau)
        return weights
    hit = event & (time <= tau)
    weights = np.zeros(len(time))
    weights[hit] = 1.0 / np.maximum(censoring_survival(time, event, time[hit], left=True), 1e-12)
    weights[time > tau] = 1.0 / max(float(censoring_survival(time, event, np.array([tau]))[0]), 1e-12)
    return weights


def ipcw_event_by(time: np.ndarray, event: np.ndarray, tau: float, groups: np.ndarray | None = None) -> float:
    """F̂(τ) = (1/n) Σ_i w_i δ_i 1[t_i ≤ τ] (:func:`ipcw_weights`, Ĝ within each of ``groups`` if given)."""
    hit = np.asarray(event, bool) & (np.asarray(time, float) <= tau)
    return float(np.sum(ipcw_weights(time, event, tau, groups)[hit]) / len(hit))


def time_grid(time: np.ndarray, event: np.ndarray, points: int, horizon: float) -> np.ndarray:
    """``points`` times from the first event time to the ``horizon`` quantile of the event times (evenly spaced):
    where a survival curve is compared."""
    events = np.asarray(time, float)[np.asarray(event, bool)]
    return np.linspace(events.min(), np.quantile(events, horizon), points)
