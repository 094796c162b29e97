"""Collocation samplers on a box: i.i.d. uniform and the scrambled quasi-Monte Carlo designs of scipy.stats.qmc."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.stats import qmc

SAMPLERS = ("uniform", "lhs", "sobol", "halton")


def sample_box(method: str, m: int, low, high, seed: int) -> torch.Tensor:
    """m points in the box [low, high] ⊂ R^D, (m, D) float64, a deterministic function of ``seed``.

    uniform: numpy default_rng(seed).uniform; lhs / sobol / halton: qmc.LatinHypercube / Sobol / Halton
    (scramble=True, seeded) on [0, 1)^D, mapped affinely by qmc.scale. Sobol at m not a power of 2 loses its
    balance property (scipy warns; the warning is silenced here, the points are still valid).
    """
    low = np.asarray(low, dtype=np.float64).reshape(-1)
    high = np.asarray(high, dtype=np.float64).reshape(-1)
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {SAMPLERS}")
    if low.shape != high.shape or not (high > low).all():
        raise ValueError(f"the box needs low < high of one length, got low={low.tolist()}, high={high.tolist()}")
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    d = low.size
    if method == "uniform":
        return torch.from_numpy(np.random.default_rng(seed).uniform(low, high, size=(m, d)))
    engines = {"lhs": qmc.LatinHypercube, "sobol": qmc.Sobol, "halton": qmc.Halton}
    engine = engines[method](d, scramble=True, rng=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*balance properties of Sobol.*", category=UserWarning)
        unit = engine.random(m)
    return torch.from_numpy(qmc.scale(unit, low, high))
