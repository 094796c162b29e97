"""Survival tables as data (data ``survival``): loaders, column roles, the split into a test set and sources.

A table has covariates (numeric, or categorical encoded as level codes 0..L−1), a time and an event indicator
(1: the event was observed at the time; 0: censored then). The sources' patients come from one or more tables
(:meth:`~ddspec.spec.survival.SurvivalData.tables`): the data's, divided among the sources without a table of
their own, and each source's own (another study), whose columns its ``column_map`` renames to the shared names.
Every table is read (scikit-survival's loaders, the tables lifelines ships, or a CSV), its event column decoded by
its ``event_values`` (an undeclared value is an error, never a guess), its times scaled into the shared unit; the
covariates of all tables are encoded together (:func:`encode`: one level set per categorical column; codings that
cannot be one column are errors). Patients with a missing covariate among their table's sources' columns, or a
missing event, or a missing or non-positive time, are an error unless ``drop_incomplete`` leaves them out (the
data's ``describe`` then counts the tables before dropping). The split (numpy ``default_rng(seed)``, table by
table): a permutation; its first round(n·test_fraction) patients are the table's test patients (every column its
sources record; NaN for the others); the rest go to its sources in order, in proportion to their ``fraction``. A
source sees only its ``columns``: the others are missing for its patients (``observed`` False; stored as 0 in
``x_train``, never read as values); a test patient's missing columns (``observed_test`` False) hold D's mean of
the column's observed training values, which is where a model fitted on D̂ places them (the arrays stay finite).
``groups_train``/``groups_test`` are the table of each patient. With one table
the complete training covariates are kept as ``x_oracle`` for the oracle baselines of the evaluation only; with
several there is no oracle: no patient has every column.
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
from ddspec.spec.survival import SourceTable

#: The tables shipped with lifelines: (file in ``lifelines.datasets``, time column, event column).
LIFELINES = {"lung": ("lung.csv", "time", "status"), "actg175": ("ACTG175.csv", "days", "cens")}
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
    ``observed``: N x p bool; ``observed_test``: the same for the test patients; ``x_oracle``: the complete
    training covariates (evaluation baselines only; None with several tables)."""

    columns: tuple[str, ...] = ()
    levels: tuple[tuple[float, ...] | None, ...] = ()
    sources: tuple[str, ...] = ()
    source_columns: np.ndarray | None = None
    source_of: np.ndarray | None = None
    observed: np.ndarray | None = None
    observed_test: np.ndarray | None = None
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
        """The test patients, NaN where their table lacks a column."""
        return Table(np.where(self.observed_test, self.x_test.double().cpu().numpy(), np.nan), *_outcome(self.y_test))

    def oracle_table(self) -> Table:
        """The training patients with all their columns (what no source sees)."""
        return Table(self.x_oracle, *_outcome(self.y_train))

    def source_table(self, s: int) -> Table:
        """Source s: its rows and its columns only (the others NaN)."""
        return self.train_table().rows(self.source_of == s)

    def column_index(self, names: list[str] | tuple[str, ...]) -> list[int]:
        return [self.columns.index(c) for c in names]

    def table_groups(self) -> list[tuple[Table, np.ndarray]]:
        """Per table the sources came from: (its training patients, the mask of its test patients)."""
        train, train_of, test_of = self.train_table(), self.groups_train.numpy(), self.groups_test.numpy()
        return [(train.rows(train_of == k), test_of == k) for k in range(int(train_of.max()) + 1)]

    def source_test_mask(self, s: int) -> np.ndarray:
        """The test patients of source s's table."""
        return self.groups_test.numpy() == self.groups_train.numpy()[np.flatnonzero(self.source_of == s)[0]]


def _outcome(y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    y = y.double().cpu().numpy()
    return y[:, 0], y[:, 1] > 0.5


def read_table(table: SourceTable, path: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """(covariates DataFrame, time, event) of a table: scikit-survival's loaders, lifelines' tables, or a CSV;
    times in the shared unit (× ``time_scale``), NaN where missing; events from the event column's
    ``event_values`` (None where missing). ``path``: the spec path of the table's section, for errors."""
    import pandas as pd

    if table.dataset in LOADERS:
        import sksurv.datasets

        frame, y = getattr(sksurv.datasets, LOADERS[table.dataset])()
        event_name = next(n for n in y.dtype.names if y.dtype[n] == bool)
        time_name = next(n for n in y.dtype.names if n != event_name)
        return frame, np.asarray(y[time_name], float) * table.time_scale, np.asarray(y[event_name], object)
    if table.dataset == "csv":
        file = Path(table.path)
        if not file.is_file():
            raise SpecError.one("DATA_FILE", f"{path}.path", f"no file {file}", "give the path of a CSV table")
        frame, (time_name, event_name) = pd.read_csv(file), (table.time_column, table.event_column)
    else:
        from importlib.resources import files

        frame = pd.read_csv(files("lifelines.datasets").joinpath(LIFELINES[table.dataset][0]))
        time_name, event_name = LIFELINES[table.dataset][1:]
    missing = [c for c in (time_name, event_name) if c not in frame.columns]
    if missing:
        role = "time_column" if missing[0] == time_name else "event_column"
        raise SpecError.one("SURVIVAL_COLUMNS", f"{path}.{role}", f"{table.label} has no column {missing[0]}",
                            f"name the time and event columns (the file has {', '.join(frame.columns)})")
    time = pd.to_numeric(frame.pop(time_name), errors="coerce").to_numpy(float) * table.time_scale
    return frame, time, event_codes(frame.pop(event_name), table, f"{path}.event_values")


def event_codes(column: Any, table: SourceTable, path: str) -> np.ndarray:
    """True / False where the event column holds ``event_values`` (event, censored), None where it is missing; any
    other value is an error (a coding the spec has not declared is never guessed)."""
    values = column.to_numpy(object)
    present = column.notna().to_numpy()
    event, censored = (_label(v) for v in table.event_values)
    labels = np.array([_label(v) for v in values[present]], object)
    unknown = sorted(set(labels) - {event, censored})
    if unknown:
        raise SpecError.one("SURVIVAL_EVENT_CODING", path, f"the event column of {table.label} holds "
                            f"{', '.join(unknown[:5])}, which event_values {list(table.event_values)} do not name",
                            f"set event_values: [value for an event, value for a censoring] (it holds "
                            f"{', '.join(sorted(set(labels)))})")
    out = np.full(len(values), None, object)
    out[present] = labels == event
    return out


def _label(value: Any) -> str:
    """A value as a level label: numbers by their float value (1, 1.0 and True agree), other values as text."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def shared_frame(spec: Any, table: SourceTable, path: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """A table's covariates under their shared names (the columns its sources record, through each source's
    ``column_map``), with its time and event."""
    frame, time, event = read_table(table, path)
    mapping: dict[str, str] = {}
    for i in table.sources:
        source = spec.sources[i]
        for name in source.columns:
            mapping.setdefault(name, source.table_column(name))
    unknown = [c for c in mapping.values() if c not in frame.columns]
    if unknown:
        raise SpecError.one("SURVIVAL_COLUMNS", f"data.sources.{table.sources[0]}.columns",
                            f"{table.label} has no column {unknown[0]}",
                            f"use columns of: {', '.join(frame.columns)} (or map a shared name onto one in column_map)")
    return frame[list(mapping.values())].set_axis(list(mapping), axis=1), time, event


def encode(frames: list[Any], columns: list[str], spec: Any,
           labels: list[str]) -> tuple[list[np.ndarray], list[tuple[float, ...] | None]]:
    """Every table's covariates as floats over the shared ``columns`` (NaN where a table lacks one). A categorical
    column (non-numeric in some table, or named in ``spec.categorical``) becomes codes 0..L−1 over the levels of
    every table (the loader's order when the tables agree on it, else sorted). Codings that cannot be one column
    are errors: categorical in one table and numeric in another, level sets with nothing in common, numeric ranges
    that do not overlap (different units)."""
    out = [np.full((len(f), len(columns)), np.nan) for f in frames]
    levels: list[tuple[float, ...] | None] = []
    for j, name in enumerate(columns):
        held = [(t, f[name]) for t, f in enumerate(frames) if name in f.columns]
        kinds = {t: c.dtype.name in ("category", "object", "bool") for t, c in held}
        if name in spec.categorical or all(kinds.values()):
            order = _levels([c for _, c in held], [labels[t] for t, _ in held], name)
            lookup = {label: float(k) for k, label in enumerate(order)}
            for t, col in held:
                out[t][:, j] = [lookup[_label(v)] if v == v and v is not None else np.nan for v in col]
            levels.append(tuple(lookup.values()))
            continue
        if any(kinds.values()):
            mixed = [labels[t] for t, k in kinds.items() if k]
            raise SpecError.one("SURVIVAL_CODING", "data.sources", f"column `{name}` is categorical in {mixed[0]} and "
                                "numeric in another table", f"name `{name}` in data.categorical if its numbers are "
                                "codes, or record it in one table only")
        ranges = []
        for t, col in held:
            out[t][:, j] = col.to_numpy(float)
            ranges.append((np.nanmin(out[t][:, j]), np.nanmax(out[t][:, j]), labels[t]))
        low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
        if low > high:
            raise SpecError.one("SURVIVAL_CODING", "data.sources", f"column `{name}` ranges over "
                                + ", ".join(f"[{a:g}, {b:g}] in {t}" for a, b, t in ranges) + ", which do not overlap",
                                "map a column in the same units onto it, or record it in one table only")
        levels.append(None)
    return out, levels


def _levels(columns: list[Any], labels: list[str], name: str) -> list[str]:
    """The level labels of a categorical column over its tables (an error when two tables share none)."""
    per = [[_label(v) for v in (c.cat.categories if c.dtype.name == "category" else c.dropna().unique())]
           for c in columns]
    for a in range(len(per)):
        for b in range(a):
            if not set(per[a]) & set(per[b]):
                raise SpecError.one("SURVIVAL_CODING", "data.sources", f"column `{name}` has levels "
                                    f"{per[b][:6]} in {labels[b]} and {per[a][:6]} in {labels[a]}: none in common",
                                    "recode one table's column (a CSV) or record the column in one table only")
    if all(p == per[0] for p in per) and columns[0].dtype.name == "category":
        return per[0]
    union = set().union(*per)
    numeric = all(_is_number(v) for v in union)
    return sorted(union, key=float if numeric else str)


def _is_number(label: str) -> bool:
    try:
        float(label)
    except ValueError:
        return False
    return True


def build_survival(spec: Any) -> SurvivalDataset:
    """The dataset of a ``survival`` data spec (see the module docstring)."""
    tables = spec.tables()
    paths = ["data" if spec.sources[t.sources[0]].dataset is None else f"data.sources.{t.sources[0]}" for t in tables]
    read = [shared_frame(spec, t, path) for t, path in zip(tables, paths)]
    columns = list(dict.fromkeys(c for source in spec.sources for c in source.columns))
    xs, levels = encode([f for f, _, _ in read], columns, spec, [t.label for t in tables])
    rng = np.random.default_rng(spec.seed)
    source_columns = np.array([[c in s.columns for c in columns] for s in spec.sources])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("x_train", "y_train", "x_test", "y_test", "source_of",
                                                          "table_train", "table_test")}
    for k, (table, x, (_, time, event), path) in enumerate(zip(tables, xs, read, paths)):
        recorded = source_columns[list(table.sources)].any(0)
        keep = np.isfinite(x[:, recorded]).all(1) & np.isfinite(time) & (time > 0) & (event != None)  # noqa: E711
        if not keep.all() and not spec.drop_incomplete:
            raise SpecError.one("SURVIVAL_INCOMPLETE", path,
                                f"{int((~keep).sum())} patients of {table.label} have missing covariates, a missing "
                                "event or a missing or non-positive time", "choose columns without missing values, "
                                "or set data.drop_incomplete: true to leave those patients out")
        x, y = x[keep], np.stack([time[keep], event[keep].astype(float)], 1)
        order = rng.permutation(len(x))
        n_test = round(len(x) * spec.test_fraction)
        test, train = order[:n_test], order[n_test:]
        shares = np.array([spec.sources[i].fraction for i in table.sources])
        ends = np.round(np.cumsum(shares / shares.sum()) * len(train)).astype(int)
        parts["source_of"].append(np.asarray(table.sources)[np.searchsorted(ends, np.arange(len(train)), "right")])
        parts["x_train"].append(x[train])
        parts["y_train"].append(y[train])
        parts["x_test"].append(np.where(recorded, x[test], np.nan))
        parts["y_test"].append(y[test])
        parts["table_train"].append(np.full(len(train), k))
        parts["table_test"].append(np.full(len(test), k))
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    observed = source_columns[joined["source_of"]]
    x_train, x_test = joined["x_train"], joined["x_test"]
    mean = np.nanmean(np.where(observed, x_train, np.nan), 0)
    return SurvivalDataset(
        f"survival:{'+'.join(t.label for t in tables)}", torch.as_tensor(np.where(observed, x_train, 0.0)),
        torch.as_tensor(joined["y_train"]), torch.as_tensor(np.where(np.isnan(x_test), mean, x_test)),
        torch.as_tensor(joined["y_test"]), 0,
        groups_train=torch.as_tensor(joined["table_train"]), groups_test=torch.as_tensor(joined["table_test"]),
        columns=tuple(columns), levels=tuple(levels), sources=tuple(s.name for s in spec.sources),
        source_columns=source_columns, source_of=joined["source_of"], observed=observed,
        observed_test=~np.isnan(x_test), x_oracle=x_train if len(tables) == 1 else None)
