"""The differentiable relaxation of a categorical table (RAP-style), for domains too large for the integer program.

Record i's attribute j is a distribution P_ij = softmax(θ_ij/τ) over its L_j levels instead of a one-hot code; the
relaxed statistics of a marginal S are Σ_i ⊗_{j∈S} P_ij (the product of the record's attribute distributions, its
cells flattened first attribute slowest, as :class:`~ddspec.components.categorical.statistics.Statistics` orders
them), which equal the counts of the table when every P_ij is one-hot. The loss is the count program's objective
Σ_r w_r |s_r(P) − m t_r| at these relaxed statistics. The temperature τ falls geometrically from 1 to τ_T over
the steps (:func:`temperature`), so the records end near one-hot; rounding takes the argmax level of every attribute.
"""

from __future__ import annotations

import numpy as np
import torch

from ddspec.components.categorical.objective import TableObjective

#: The probability the initial logits give a record's own level (the rest is spread evenly over the others).
INITIAL_WEIGHT = 0.5


def initial_logits(codes: np.ndarray, sizes: tuple[int, ...]) -> torch.Tensor:
    """θ (m x Σ L_j, float64) starting at the records ``codes``: log of INITIAL_WEIGHT·onehot +
    (1 − INITIAL_WEIGHT)/L_j."""
    blocks = []
    for j, size in enumerate(sizes):
        p = np.full((len(codes), size), (1 - INITIAL_WEIGHT) / size)
        p[np.arange(len(codes)), codes[:, j]] += INITIAL_WEIGHT
        blocks.append(np.log(p))
    return torch.as_tensor(np.concatenate(blocks, 1), dtype=torch.float64)


def temperature(step: int, steps: int, final: float) -> float:
    """τ at ``step`` of ``steps``: final^(step/(steps − 1)), 1 at the first step and ``final`` at the last."""
    return final ** (step / max(steps - 1, 1))


def relaxed_statistics(logits: torch.Tensor, objective: TableObjective, tau: float = 1.0) -> torch.Tensor:
    """s(P) at temperature ``tau``: the relaxed statistics (R), differentiable in the logits."""
    sizes = objective.statistics.sizes
    probs = [torch.softmax(p / tau, 1) for p in torch.split(logits, list(sizes), dim=1)]
    parts = []
    for s in objective.statistics.marginals:
        joint = probs[s[0]]
        for j in s[1:]:
            joint = (joint[:, :, None] * probs[j][:, None, :]).reshape(len(logits), -1)
        parts.append(joint.sum(0))
    return torch.cat(parts)


def relaxed_loss(logits: torch.Tensor, objective: TableObjective, tau: float = 1.0) -> torch.Tensor:
    """Σ_r w_r |s_r(P) − m t_r| at temperature ``tau``."""
    target = torch.as_tensor(objective.target, dtype=logits.dtype, device=logits.device)
    weights = torch.as_tensor(objective.weights, dtype=logits.dtype, device=logits.device)
    return weights @ (relaxed_statistics(logits, objective, tau) - target).abs()


def rounded(logits: torch.Tensor, sizes: tuple[int, ...]) -> np.ndarray:
    """The table of the argmax level of every attribute of every record (m x d int64)."""
    return np.stack([p.argmax(1).cpu().numpy() for p in torch.split(logits.detach(), list(sizes), dim=1)], 1)
