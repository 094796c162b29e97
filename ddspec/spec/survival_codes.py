"""The categorical table of a survival set (data ``survival_categorical``): numpy and pandas only, no torch.

Declared covariates of a scikit-survival table become integer codes: a categorical column keeps its levels (the
loader's order, named as the loader names them); a numeric column with k bins is cut at the quantiles
1/k, …, (k−1)/k of its training values into right-closed intervals (``<=a``, ``(a, b]``, ``>b``; tied quantiles
merge, so a column with few distinct values may get fewer than k levels). The outcome ``event_by_tau`` = 1[T ≤ τ]
is known for a patient whose event was observed at t ≤ τ (``yes``) or whose time is t ≥ τ, event or not (``no``:
T > τ, or censored at τ or later); a patient censored before τ has an unknown outcome and is excluded, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ddspec.errors import SpecError
from ddspec.spec.categorical_tables import YES_NO, CategoricalTable

#: The outcome attribute: did the event happen by τ (levels no, yes).
OUTCOME = "event_by_tau"
#: The scikit-survival loader of each table (the same tables as data ``survival``).
LOADERS = {"gbsg2": "load_gbsg2", "whas500": "load_whas500", "aids": "load_aids",
           "veterans": "load_veterans_lung_cancer", "flchain": "load_flchain"}


@dataclass(frozen=True)
class SurvivalCodes:
    """A survival set's categorical table and what making it left out: ``tau`` (None without the outcome),
    ``censored`` = (training, test) patients censored before τ, ``incomplete`` = patients with a missing value."""

    table: CategoricalTable
    tau: float | None
    censored: tuple[int, int]
    incomplete: int


@lru_cache(maxsize=8)
def load_survival(dataset: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """(covariates DataFrame, time, event as bool) of a scikit-survival table."""
    import sksurv.datasets

    frame, y = getattr(sksurv.datasets, LOADERS[dataset])()
    event_name = next(n for n in y.dtype.names if y.dtype[n] == bool)
    time_name = next(n for n in y.dtype.names if n != event_name)
    return frame, np.asarray(y[time_name], float), np.asarray(y[event_name], bool)


def is_numeric(column: Any) -> bool:
    """A numeric column (binned), not a categorical, boolean or text one (levels as they are)."""
    return column.dtype.name not in ("category", "object", "bool")


def quantile_edges(values: np.ndarray, k: int) -> np.ndarray:
    """The distinct quantiles i/k (i = 1 … k−1) of ``values`` (numpy's linear interpolation), increasing."""
    return np.unique(np.quantile(values, np.arange(1, k) / k))


def interval_names(edges: np.ndarray) -> tuple[str, ...]:
    """The names of the right-closed bins cut at ``edges`` (at least one): ``<=e0``, ``(e0, e1]``, …, ``>e_last``."""
    inner = [f"({a:g}, {b:g}]" for a, b in zip(edges[:-1], edges[1:])]
    return (f"<={edges[0]:g}", *inner, f">{edges[-1]:g}")


def outcome_known(time: np.ndarray, event: np.ndarray, tau: float) -> np.ndarray:
    """Whether 1[T ≤ τ] is known: an observed event, or a time at or after τ (only censoring before τ hides it)."""
    return event | (time >= tau)


@lru_cache(maxsize=8)
def survival_codes(dataset: str, attributes: tuple[str, ...], bins: tuple[tuple[str, int], ...], tau: float | None,
                   test_fraction: float, seed: int, drop_incomplete: bool) -> SurvivalCodes:
    """The table of ``attributes`` (covariates of ``dataset``, and :data:`OUTCOME` where it is one) with ``bins``
    (column, k) for the numeric covariates. Order: the patients with every covariate (the others are a SpecError
    ``SURVIVAL_INCOMPLETE`` unless ``drop_incomplete``); a permutation of numpy ``default_rng(seed)``, its first
    round(N·test_fraction) patients to test; τ (None: the median of the training patients' observed event times);
    the patients censored before τ left out of both splits; the bins' quantiles from the remaining training
    patients."""
    frame, time, event = load_survival(dataset)
    covariates = [a for a in attributes if a != OUTCOME]
    complete = frame[covariates].notna().all(axis=1).to_numpy()
    incomplete = int((~complete).sum())
    if incomplete and not drop_incomplete:
        raise SpecError.one("SURVIVAL_INCOMPLETE", "data.columns", f"{incomplete} patients of {dataset} have a "
                            "missing value in the declared columns", "choose columns without missing values, or set "
                            "data.drop_incomplete: true to leave those patients out (counted)")
    frame, time, event = frame[complete].reset_index(drop=True), time[complete], event[complete]
    order = np.random.default_rng(seed).permutation(len(frame))
    n_test = round(len(order) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    censored = (0, 0)
    if OUTCOME in attributes:
        if tau is None:
            tau = float(np.median(time[train][event[train]]))
        known = outcome_known(time, event, tau)
        censored = (int((~known[train]).sum()), int((~known[test]).sum()))
        train, test = train[known[train]], test[known[test]]
    k = dict(bins)
    levels, columns = [], []
    for name in attributes:
        if name == OUTCOME:
            levels.append(YES_NO)
            columns.append((event & (time <= tau)).astype(np.int64))
        elif name in k:
            values = frame[name].to_numpy(float)
            edges = quantile_edges(values[train], k[name])
            levels.append(interval_names(edges))
            columns.append(np.searchsorted(edges, values, side="left").astype(np.int64))
        else:
            column = frame[name].astype("category")
            levels.append(tuple(str(v) for v in column.cat.categories))
            columns.append(column.cat.codes.to_numpy(np.int64))
    codes = np.stack(columns, 1)
    return SurvivalCodes(CategoricalTable(attributes, tuple(levels), codes[train], codes[test]), tau, censored,
                         incomplete)
