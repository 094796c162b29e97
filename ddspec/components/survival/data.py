"""Survival tables as data (data ``survival``): loaders, column roles, the split into a test set and sources.

A table has covariates (numeric, or categorical encoded as level codes 0..L−1 in the loader's level order), a time
and an event indicator (1: the event was observed at the time; 0: censored then). Patients with a missing covariate
among the sources' columns, or a missing or non-positive time, are an error unless ``drop_incomplete`` leaves them
out (the data's ``describe`` then counts the table before dropping). The split (numpy
``default_rng(seed)``): a permutation; its first round(n·test_fraction) patients are the test set (all columns);
the rest go to the sources in order, in proportion to their ``fraction``. A source sees only its ``columns``: the
others are missing for its patients (``observed`` False; stored as 0 in ``x_train``, never read as values). The
complete training covariates are kept as ``x_oracle`` for the oracle baselines of the evaluation only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddspec.components.data.base import Dataset
from ddspec.components.objectives.targets import Targets
from ddspec.errors import SpecError

#: The scikit-survival loader of each built-in dataset.
LOADERS = {
    "gbsg2": "load_gbsg2", "whas500": "load_whas500", "aids": "load_aids",
    "veterans": "load_veterans_lung_cancer", "flchain": "load_flchain",
}


@dataclass(frozen=True)
class SurvivalTargets(Targets):
    """(time, event) rows: what a synthetic patient carries besides its covariates; scored by the survival
    metrics (C-index, integrated Brier score), not by a loss."""

    kind = "survival"

    @property
    def num_outputs(self) -> int:
        return 2

    def rows(self, y: torch.Tensor) -> torch.Tensor:
        return y.double()


@dataclass(frozen=True)
class Table:
    """A complete or partly observed table: covariates x (N x p, NaN where missing), time, event (bool)."""

    x: np.ndarray
    time: np.ndarray
    event: np.ndarray

    def rows(self, index: np.ndarray) -> Table:
        return Table(self.x[index], self.time[index], self.event[index])


@dataclass(frozen=True)
class SurvivalDataset(Dataset):
    """A :class:`Dataset` of patients: ``y_*`` = (time, event) rows, ``x_train`` the stacked sources.

    ``columns``: covariate names; ``levels``: per column the category codes (None: numeric); ``sources``: names;
    ``source_columns``: S x p bool (the columns each source has); ``source_of``: the source of each training row;
    ``observed``: N x p bool; ``x_oracle``: the complete training covariates (evaluation baselines only)."""

    columns: tuple[str, ...] = ()
    levels: tuple[tuple[float, ...] | None, ...] = ()
    sources: tuple[str, ...] = ()
    source_columns: np.ndarray | None = None
    source_of: np.ndarray | None = None
    observed: np.ndarray | None = None
    x_oracle: np.ndarray | None = None

    @property
    def targets(self) -> Targets:
        return SurvivalTargets()

    def input_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per column, the mean and std of its observed training values."""
        x = self.train_table().x
        mean, std = np.nanmean(x, 0), np.nanstd(x, 0)
        return torch.as_tensor(mean), torch.as_tensor(np.where(std > 0, std, 1.0))

    def train_table(self) -> Table:
        """The stacked sources, NaN where a source lacks a column."""
        x = np.where(self.observed, self.x_train.double().cpu().numpy(), np.nan)
        return Table(x, *_outcome(self.y_train))

    def test_table(self) -> Table:
        return Table(self.x_test.double().cpu().numpy(), *_outcome(self.y_test))

    def oracle_table(self) -> Table:
        """The training patients with all their columns (what no source sees)."""
        return Table(self.x_oracle, *_outcome(self.y_train))

    def source_table(self, s: int) -> Table:
        """Source s: its rows and its columns only (the others NaN)."""
        return self.train_table().rows(self.source_of == s)

    def column_index(self, names: list[str] | tuple[str, ...]) -> list[int]:
        return [self.columns.index(c) for c in names]


def _outcome(y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    y = y.double().cpu().numpy()
    return y[:, 0], y[:, 1] > 0.5


def read_frame(spec: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """(covariates DataFrame, time, event) of ``spec.dataset`` (scikit-survival) or the CSV ``spec.path``."""
    import pandas as pd

    if spec.dataset == "csv":
        path = Path(spec.path)
        if not path.is_file():
            raise SpecError.one("DATA_FILE", "data.path", f"no file {path}", "give the path of a CSV table")
        frame = pd.read_csv(path)
        missing = [c for c in (spec.time_column, spec.event_column) if c not in frame.columns]
        if missing:
            raise SpecError.one("SURVIVAL_COLUMNS", "data.time_column", f"{path} has no column {missing[0]}",
                                f"name the time and event columns (the file has {', '.join(frame.columns)})")
        time, event = frame.pop(spec.time_column).to_numpy(float), frame.pop(spec.event_column).to_numpy(float) > 0
        return frame, time, event
    import sksurv.datasets

    frame, y = getattr(sksurv.datasets, LOADERS[spec.dataset])()
    names = y.dtype.names
    event_name = next(n for n in names if y.dtype[n] == bool)
    time_name = next(n for n in names if n != event_name)
    return frame, np.asarray(y[time_name], float), np.asarray(y[event_name], bool)


def encode(frame: Any, categorical: list[str]) -> tuple[np.ndarray, list[tuple[float, ...] | None]]:
    """Covariates as floats: categorical columns (non-numeric ones, and those named in ``categorical``) become codes
    0..L−1 (the loader's level order; sorted values for a numeric column)."""
    columns, levels = [], []
    for name in frame.columns:
        col = frame[name]
        if col.dtype.name in ("category", "object", "bool") or name in categorical:
            cat = col.astype("category")
            columns.append(cat.cat.codes.to_numpy(float))
            levels.append(tuple(float(i) for i in range(len(cat.cat.categories))))
        else:
            columns.append(col.to_numpy(float))
            levels.append(None)
    return np.stack(columns, 1), levels


def build_survival(spec: Any) -> SurvivalDataset:
    """The dataset of a ``survival`` data spec (see the module docstring)."""
    frame, time, event = read_frame(spec)
    columns = list(dict.fromkeys(c for source in spec.sources for c in source.columns))
    unknown = [c for c in columns if c not in frame.columns]
    if unknown:
        raise SpecError.one("SURVIVAL_COLUMNS", "data.sources", f"{spec.dataset} has no column {unknown[0]}",
                            f"use columns of: {', '.join(frame.columns)}")
    x, levels = encode(frame[columns], spec.categorical)
    keep = np.isfinite(x).all(1) & np.isfinite(time) & (time > 0)
    if not keep.all() and not spec.drop_incomplete:
        raise SpecError.one("SURVIVAL_INCOMPLETE", "data.sources",
                            f"{int((~keep).sum())} patients of {spec.dataset} have missing covariates or a missing or "
                            "non-positive time", "choose columns without missing values, or set "
                            "data.drop_incomplete: true to leave those patients out")
    x, time, event = x[keep], time[keep], event[keep]
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(x))
    n_test = round(len(x) * spec.test_fraction)
    test, train = order[:n_test], order[n_test:]
    shares = np.array([s.fraction for s in spec.sources]) / sum(s.fraction for s in spec.sources)
    ends = np.round(np.cumsum(shares) * len(train)).astype(int)
    source_of = np.searchsorted(ends, np.arange(len(train)), side="right")
    source_columns = np.array([[c in s.columns for c in columns] for s in spec.sources])
    observed = source_columns[source_of]
    y = np.stack([time, event.astype(float)], 1)
    return SurvivalDataset(
        f"survival:{spec.dataset}", torch.as_tensor(np.where(observed, x[train], 0.0)), torch.as_tensor(y[train]),
        torch.as_tensor(x[test]), torch.as_tensor(y[test]), 0,
        columns=tuple(columns), levels=tuple(levels), sources=tuple(s.name for s in spec.sources),
        source_columns=source_columns, source_of=source_of, observed=observed, x_oracle=x[train])
