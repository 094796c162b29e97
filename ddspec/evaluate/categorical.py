"""How well a categorical D̂ keeps the real table's marginals: total variation beside two kinds of random tables.

For a set of marginals S (attribute subsets), TV_S = ½ Σ_v |p̂_S(v) − p_S(v)| between D̂'s and the real training
table's distributions of S; reported as the mean and the max over the set, for

- ``optimized``: the task's marginals (what the program matched), and
- ``held_out``: every marginal one order higher over the same attributes (3-way for a 1- and 2-way task), which
  the program never saw;

each for D̂ (``distilled``), for random subsamples of m real records (``random``) and for tables of m records with
independently drawn attributes (``independent``, each attribute from its real 1-way marginal) — the median over
:data:`DRAWS` draws (numpy seeds 0 .. DRAWS − 1) of each figure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ddspec.components.categorical.data import CategoricalDataset
from ddspec.components.categorical.sampling import independent_marginals, random_subsample
from ddspec.components.categorical.statistics import Statistics

#: Random tables drawn per baseline.
DRAWS = 20


def tv_figures(statistics: Statistics, reference: np.ndarray, codes: np.ndarray) -> dict[str, float]:
    """Mean and max over the marginals of the TV between the table ``codes`` and the ``reference`` statistics."""
    tv = statistics.tv(statistics.counts(codes), reference)
    return {"mean_tv": float(tv.mean()), "max_tv": float(tv.max())}


def median_figures(draw: Callable[[int], np.ndarray], statistics: Statistics, reference: np.ndarray
                   ) -> dict[str, float]:
    """The median over :data:`DRAWS` tables ``draw(seed)`` of each of :func:`tv_figures`."""
    figures = [tv_figures(statistics, reference, draw(seed)) for seed in range(DRAWS)]
    return {key: float(np.median([f[key] for f in figures])) for key in figures[0]}


def marginal_figures(problem: Any, data: CategoricalDataset, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """The figures of the module docstring for D̂ = (x, y): ``{optimized: {...}, held_out: {...}, draws}``."""
    real, codes = data.train_records(), data.records(x, y)
    label = data.attributes[data.label]
    out: dict[str, Any] = {"draws": DRAWS}
    sets = {"optimized": problem.task.marginals(data.attributes, label),
            "held_out": problem.task.held_out(data.attributes, label)}
    for name, marginals in sets.items():
        if not marginals:
            continue
        statistics = Statistics(data.sizes, tuple(marginals))
        reference = statistics.counts(real)
        out[name] = {
            "marginals": len(marginals),
            "orders": sorted({len(s) for s in marginals}),
            "distilled": tv_figures(statistics, reference, codes),
            "random": median_figures(lambda seed: random_subsample(real, len(codes), seed), statistics, reference),
            "independent": median_figures(lambda seed: independent_marginals(real, data.sizes, len(codes), seed),
                                          statistics, reference),
        }
    return out
