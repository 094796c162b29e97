"""The Cox proportional-hazards model: partial likelihood (Breslow ties) in torch, its Newton fit, the Breslow
baseline hazard and Harrell's concordance index.

With risk scores η_i = x_iᵀβ and risk sets R(t_i) = {j : t_j ≥ t_i},

    ℓ(β) = Σ_i δ_i [η_i − log Σ_{j ∈ R(t_i)} exp η_j]        (Breslow's partial log-likelihood)

is concave in β; the fit minimizes L(β) = −ℓ(β)/n + (λ/2)‖β‖² by Newton steps with backtracking (the score and
information in closed form, equal to torch's autograd of :func:`partial_log_likelihood`). Without tied event
times Breslow's and Efron's ℓ agree. The baseline cumulative
hazard is Ĥ₀(t) = Σ_{t_i ≤ t, δ_i = 1} 1 / Σ_{j ∈ R(t_i)} exp η_j and S(t | x) = exp(−Ĥ₀(t) exp(xᵀβ)). A censored
patient contributes to every risk set up to its time and to no numerator.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from ddspec.components.objectives.targets import Targets
from ddspec.components.training.estimators import FittedEstimator
from ddspec.errors import RunError

#: Newton iterations at most, and the gradient norm that stops them.
MAX_NEWTON, TOLERANCE = 100, 1e-10


def partial_log_likelihood(beta: torch.Tensor, x: torch.Tensor, time: torch.Tensor, event: torch.Tensor
                           ) -> torch.Tensor:
    """ℓ(β) of the module docstring (Breslow ties)."""
    eta = x @ beta
    at_risk = time[None, :] >= time[:, None]  # row i: R(t_i)
    log_risk = torch.logsumexp(torch.where(at_risk, eta[None, :], -torch.inf), dim=1)
    return torch.sum(event * (eta - log_risk))


def score_and_information(beta: np.ndarray, x: np.ndarray, time: np.ndarray, event: np.ndarray
                          ) -> tuple[float, np.ndarray, np.ndarray]:
    """(ℓ(β), ∇ℓ(β), −∇²ℓ(β)) in closed form (numpy): with w_j = exp η_j and the risk-set sums S0_i = Σ_{R(t_i)} w_j,
    x̄_i = Σ_{R(t_i)} w_j x_j / S0_i, ∇ℓ = Σ_i δ_i (x_i − x̄_i) and −∇²ℓ = Σ_i δ_i (Σ_{R(t_i)} w_j x_j x_jᵀ / S0_i −
    x̄_i x̄_iᵀ) — what ``torch.func`` gives for :func:`partial_log_likelihood`, without its overhead. The risk-set
    sums are reverse cumulative sums over the patients sorted by time (O(n p²))."""
    eta = x @ beta
    shift = eta.max()
    order = np.argsort(time, kind="stable")
    t, xs, w = time[order], x[order], np.exp(eta[order] - shift)
    rows = np.flatnonzero(event)
    first = np.searchsorted(t, time[rows], side="left")  # R(t_i) = sorted positions first.. (ties included)

    def from_each(a: np.ndarray) -> np.ndarray:
        return np.cumsum(a[::-1], axis=0)[::-1][first]

    s0 = from_each(w)
    mean = from_each(w[:, None] * xs) / s0[:, None]
    second = np.einsum("epq,e->pq", from_each(w[:, None, None] * xs[:, :, None] * xs[:, None, :]), 1.0 / s0)
    loglik = float(np.sum(eta[rows] - shift - np.log(s0)))
    return loglik, np.sum(x[rows] - mean, 0), second - mean.T @ mean


def fit_cox(x: np.ndarray | torch.Tensor, time: np.ndarray | torch.Tensor, event: np.ndarray | torch.Tensor,
            penalizer: float = 0.0) -> np.ndarray:
    """argmin_β L(β) by Newton's method with step halving from β = 0 (float64; the closed forms of
    :func:`score_and_information`). A sample without events gives β = 0."""
    x, time, event = (np.asarray(a, dtype=np.float64) for a in (x, time, event))
    event = event > 0.5
    n, p = x.shape
    beta = np.zeros(p)
    if not event.any():
        return beta

    def objective(b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        loglik, score, info = score_and_information(b, x, time, event)
        return -loglik / n + 0.5 * penalizer * b @ b, -score / n + penalizer * b, info / n + penalizer * np.eye(p)

    current, g, h = objective(beta)
    for _ in range(MAX_NEWTON):
        if np.linalg.norm(g) < TOLERANCE:
            break
        step = np.linalg.lstsq(h, g, rcond=None)[0]
        scale = 1.0
        while scale > 1e-8:
            candidate = beta - scale * step
            value, g_new, h_new = objective(candidate)
            if value <= current:
                break
            scale /= 2
        else:
            break
        beta, current, g, h = candidate, value, g_new, h_new
    return beta


def breslow_cumulative_hazard(eta: np.ndarray, time: np.ndarray, event: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Ĥ₀ at the times ``at`` from the training risk scores η."""
    eta, time, event = np.asarray(eta, float), np.asarray(time, float), np.asarray(event, bool)
    order = np.argsort(time, kind="stable")
    t, w, d = time[order], np.exp(eta[order]), event[order]
    at_risk = np.cumsum(w[::-1])[::-1]  # Σ_{j: t_j ≥ t_(i)} exp η_j, sorted order (ties: first of the tie)
    _, first = np.unique(t, return_index=True)
    tied_risk = np.repeat(at_risk[first], np.diff(np.append(first, len(t))))
    jumps = np.where(d, 1.0 / tied_risk, 0.0)
    cumulative = np.concatenate([[0.0], np.cumsum(jumps)])
    return cumulative[np.searchsorted(t, np.asarray(at, float), side="right")]


def survival_functions(beta: np.ndarray, x_fit: np.ndarray, time: np.ndarray, event: np.ndarray, x: np.ndarray,
                       at: np.ndarray) -> np.ndarray:
    """S(t | x) = exp(−Ĥ₀(t) exp(xᵀβ)) for every row of ``x`` (N x len(at)), Ĥ₀ from the fit's data."""
    h0 = breslow_cumulative_hazard(x_fit @ beta, time, event, at)
    return np.exp(-np.exp(x @ beta)[:, None] * h0[None, :])


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Harrell's C: over the comparable pairs — δ_i = 1 and t_i < t_j, or t_i = t_j with δ_j = 0 (an event precedes a
    censoring at the same time) — the fraction with risk_i > risk_j (ties in risk count ½); 0.5 when no pair is
    comparable. With ``groups``, only pairs within the same group are compared (a stratified C)."""
    time, event, risk = np.asarray(time, float), np.asarray(event, bool), np.asarray(risk, float)
    later = (time[:, None] < time[None, :]) | ((time[:, None] == time[None, :]) & ~event[None, :])
    comparable = event[:, None] & later
    if groups is not None:
        comparable &= np.asarray(groups)[:, None] == np.asarray(groups)[None, :]
    if not comparable.any():
        return 0.5
    score = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    return float(score[comparable].sum() / comparable.sum())


def fit_lifelines(x: np.ndarray, time: np.ndarray, event: np.ndarray, penalizer: float = 0.0) -> np.ndarray:
    """β of lifelines' ``CoxPHFitter(penalizer)`` (a black box; Efron ties); a failed fit is a RunError."""
    import pandas as pd
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    if not np.any(event):
        return np.zeros(x.shape[1])
    columns = [f"x{j}" for j in range(x.shape[1])]
    frame = pd.DataFrame(x, columns=columns).assign(_time=time, _event=np.asarray(event, float))
    try:
        fitted = CoxPHFitter(penalizer=penalizer).fit(frame, "_time", "_event")
    except ConvergenceError as err:
        raise RunError.one("COX_NOT_CONVERGED", "train.solver", f"lifelines' Cox fit failed: {err}",
                           "raise train.penalizer, or use train.solver: newton") from err
    return fitted.params_.to_numpy()


#: A Cox fit: (x, time, event) ↦ β.
CoxFitter = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def cox_fitter(spec: Any) -> CoxFitter:
    """The fit of a ``train: cox`` spec: :func:`fit_cox` or :func:`fit_lifelines` with its penalizer."""
    return partial(fit_lifelines if spec.solver == "lifelines" else fit_cox, penalizer=spec.penalizer)


class CoxFit:
    """``train: cox`` as the evaluation's model family: fit on (x, (time, event)) rows, outputs the risk score
    xᵀβ (N x 1) with x standardized by the fitted table's mean and std (deterministic: the seed is unused)."""

    def __init__(self, spec: Any) -> None:
        self.fit_beta = cox_fitter(spec)

    def fit(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> FittedEstimator:
        rows, outcome = x.double().cpu().numpy(), y.double().cpu().numpy()
        mean, std = rows.mean(0), rows.std(0)
        std = np.where(std > 0, std, 1.0)
        beta = self.fit_beta((rows - mean) / std, outcome[:, 0], outcome[:, 1] > 0.5)
        return FittedEstimator(lambda r: (((r - mean) / std) @ beta)[:, None])


def cox_estimator(spec: Any, targets: Targets) -> CoxFit:
    """The builder of ``train: cox``."""
    return CoxFit(spec)
