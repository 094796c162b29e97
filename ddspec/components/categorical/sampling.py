"""Tables of m records drawn from the real data: the baselines D̂ is compared with.

- a random subsample: m real records without replacement;
- independent-marginal sampling: each attribute of each of m records drawn independently from its real 1-way
  marginal (what a table matching only the 1-way marginals looks like at random).

Draws: numpy ``default_rng(seed)``.
"""

from __future__ import annotations

import numpy as np


def random_subsample(codes: np.ndarray, m: int, seed: int) -> np.ndarray:
    """m records of ``codes`` (N x d) drawn without replacement (all of them, permuted, when m ≥ N)."""
    rng = np.random.default_rng(seed)
    return codes[rng.permutation(len(codes))[:m]]


def independent_marginals(codes: np.ndarray, sizes: tuple[int, ...], m: int, seed: int) -> np.ndarray:
    """m records whose attributes are drawn independently, attribute j from the real frequencies of its levels."""
    rng = np.random.default_rng(seed)
    columns = [rng.choice(size, size=m, p=np.bincount(codes[:, j], minlength=size) / len(codes))
               for j, size in enumerate(sizes)]
    return np.stack(columns, 1).astype(np.int64)
