"""A discrete Bayesian network on a fixed structure: Dirichlet (BDeu) counts, EM over rows with missing values
(exact E-step by enumeration), conditional queries.

Nodes i = 1..V with r_i states and parents pa(i); P(x) = Π_i θ_i[x_pa(i), x_i]. The fit maximizes the posterior
under the BDeu prior (equivalent sample size α, α_ijk = α/(q_i r_i), q_i the parent configurations):

    θ_i[j, k] = (N_ijk + α_ijk) / (N_ij + α/q_i)

with N the (weighted: each row counts its weight w_r, e.g. an IPCW weight) counts of complete rows. A row with
missing values (−1: a column its source lacks, or an outcome its
censoring hides) contributes expected counts: EM's E-step gives it the posterior P(x_miss | x_obs, θ) over every
configuration of its missing nodes, computed exactly from the joint table (enumeration); the M-step is the formula
above with N the expected counts. Each iteration does not decrease the weighted log-likelihood plus the log
prior; it stops when the log-likelihood gains less than ``tol`` per row. Queries P(x_t | x_E = e) are ratios of
sums of the joint table.
The joint table has Π r_i cells, which bounds the network's size (:data:`MAX_CELLS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: The largest joint table the exact enumeration builds.
MAX_CELLS = 5_000_000


class BayesNet:
    """``cards[i]`` states per node, ``parents[i]`` the parent indices of node i, ``ess`` the BDeu α."""

    def __init__(self, cards: Sequence[int], parents: Sequence[Sequence[int]], ess: float = 1.0) -> None:
        if math.prod(cards) > MAX_CELLS:
            raise ValueError(f"a joint table of {math.prod(cards)} cells exceeds {MAX_CELLS}; use fewer bins or nodes")
        self.cards, self.parents, self.ess = tuple(int(c) for c in cards), [list(p) for p in parents], float(ess)
        self.cpts = [np.full((*[self.cards[q] for q in pa], self.cards[i]), 1.0 / self.cards[i])
                     for i, pa in enumerate(self.parents)]

    def joint(self) -> np.ndarray:
        """P(x) over every configuration (an array of shape ``cards``)."""
        log = np.zeros(self.cards)
        for i, (pa, cpt) in enumerate(zip(self.parents, self.cpts)):
            axes = [*pa, i]
            order = np.argsort(axes)
            shape = [1] * len(self.cards)
            for axis in axes:
                shape[axis] = self.cards[axis]
            log = log + np.log(np.transpose(cpt, order)).reshape(shape)
        return np.exp(log)

    def _maximize(self, counts: np.ndarray) -> None:
        """θ from expected joint ``counts`` (the M-step, BDeu prior)."""
        for i, pa in enumerate(self.parents):
            others = tuple(a for a in range(len(self.cards)) if a not in (*pa, i))
            family = np.transpose(counts.sum(axis=others), np.argsort(np.argsort([*pa, i])))
            q = math.prod(self.cards[p] for p in pa)
            alpha = self.ess / (q * self.cards[i])
            self.cpts[i] = (family + alpha) / (family.sum(-1, keepdims=True) + alpha * self.cards[i])

    def expected_counts(self, codes: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(E[joint counts | observed], log-likelihood of the observed values): the E-step, by missingness pattern."""
        joint = self.joint()
        counts = np.zeros(self.cards)
        weights = np.ones(len(codes)) if weights is None else np.asarray(weights, float)
        missing = codes < 0
        loglik = 0.0
        patterns, which = np.unique(missing, axis=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            rows = which.ravel() == p
            obs = [a for a in range(len(self.cards)) if not pattern[a]]
            values = tuple(codes[rows][:, obs].T)
            view = np.moveaxis(joint, obs, range(len(obs)))[values]  # rows x (missing nodes' states)
            mass = view.reshape(len(view), -1).sum(1)
            trailing = [1] * (view.ndim - 1)
            posterior = view / mass.reshape(-1, *trailing) * weights[rows].reshape(-1, *trailing)
            np.add.at(np.moveaxis(counts, obs, range(len(obs))), values, posterior)
            loglik += float(np.sum(weights[rows] * np.log(mass)))
        return counts, loglik

    def fit(self, codes: np.ndarray, iterations: int = 200, tol: float = 1e-7,
            weights: np.ndarray | None = None) -> BayesNet:
        """Fit to integer ``codes`` (rows x V, −1 where missing): counts, or EM when values are missing."""
        codes = np.asarray(codes, dtype=np.int64)
        last = -np.inf
        for _ in range(iterations if (codes < 0).any() else 1):
            counts, loglik = self.expected_counts(codes, weights)
            self._maximize(counts)
            if loglik - last < tol * len(codes):
                break
            last = loglik
        return self

    def posterior(self, codes: np.ndarray) -> list[np.ndarray]:
        """Per row, P(x_miss | x_obs) over the configurations of its missing nodes (flattened, C order)."""
        joint = self.joint()
        out = []
        for row in np.asarray(codes, dtype=np.int64):
            obs = [a for a in range(len(self.cards)) if row[a] >= 0]
            view = np.moveaxis(joint, obs, range(len(obs)))[tuple(row[obs])].ravel()
            out.append(view / view.sum())
        return out

    def conditional(self, target: int, evidence: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(P(x_t | x_E = e), P(x_E = e)): arrays over the evidence configurations (C order), the first with the
        target's states last."""
        joint = self.joint()
        keep = [*evidence, target]
        marginal = np.transpose(joint.sum(axis=tuple(a for a in range(len(self.cards)) if a not in keep)),
                                np.argsort(np.argsort(keep)))
        p_e = marginal.sum(-1)
        return marginal / np.maximum(p_e[..., None], 1e-300), p_e


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """TV(p, q) = ½ Σ_k |p_k − q_k| over the last axis."""
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(-1)
