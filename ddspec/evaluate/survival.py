"""Evaluating a synthetic patient table on the held-out test patients, against baselines at the same size.

:class:`ConcordanceMetric` (metric ``c_index``, the protocol's primary figure for survival data): Harrell's C of the
Cox risk scores fitted on D̂ (value) and Uno's IPCW C up to the ``horizon`` quantile of the training times
(scikit-survival, figure ``uno``). When the sources come from several tables (studies), the test patients of each
table are held out from it with only the columns its sources record: Harrell's C compares pairs within a table
(a stratified C), Uno's is the mean over the tables, and a covariate a test patient's table lacks holds D's mean
of that column in its risk score.

:meth:`Reference.assess` gives the figures of one complete table T (covariates, time, event):

- ``c_index`` / ``c_index_uno``: the Cox model fitted on T (train ``cox``), scored on the test patients (Uno's up
  to the :data:`UNO_HORIZON` quantile);
- ``integrated_brier``: its integrated Brier score on the test patients (scikit-survival; S(t | x) with Breslow's
  baseline hazard from T) over 20 times between the 10th and 80th percentiles of the test times (NaN for a test set
  too small to hold two such times below its last time); with several tables, the mean over them;
- ``km_distance``: sup_t |Ŝ_T(t) − Ŝ_D(t)| on the grid of the first ``survival_curve`` analysis (D: all training
  patients; their times and events are in every source);
- ``source_c_index``: per source, the test C (its table's test patients) of the Cox model on the source's columns
  fitted on T — the baseline ``sources`` fits it on the source's own patients: each source's analysis, reproduced;
- with one table only (an oracle exists): ``cox_error``, ‖β_T − β_oracle‖₂, the Cox coefficients on every column
  (standardized by D's observed values), the oracle fitted on the training patients with all their columns (which
  no source has); ``bn_tv``, per evidence set, Σ_e P(e)·|P_T(O = 1 | e) − P_oracle(O = 1 | e)| of the Bayesian
  network (3 bins, naive structure) fitted on T and on the complete training patients.

:func:`survival_report` adds the baselines: ``random_em`` and ``random_mice`` (n̂ training patients, a random
subsample of each source in proportion to its size, completed by EM imputation or MICE; the median of each figure
over :data:`DRAWS` draws), ``em_full``, ``mice_full`` (every training patient, completed), ``sources`` (each
source's own Cox fit) and, with one table, ``oracle`` (every training patient, all columns).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ddspec.components.categorical.heuristic import largest_remainder
from ddspec.components.survival.analyses import Analyses, Standardized, build_analyses
from ddspec.components.survival.bayes_net import total_variation
from ddspec.components.survival.cox import cox_fitter, harrell_c, survival_functions
from ddspec.components.survival.data import SurvivalDataset, Table
from ddspec.components.survival.fusion import (
    Discretizer,
    em_complete,
    fit_fused_network,
    fit_network,
    mice_complete,
    naive_structure,
)
from ddspec.components.survival.kaplan_meier import kaplan_meier, time_grid
from ddspec.evaluate.metrics import Metric, Scored
from ddspec.registry import RISKS

#: Draws of the random baselines (the median of each figure is reported).
DRAWS = 20
#: Seed of the baselines' draws.
BASELINE_SEED = 0
#: Uno's C of the assessed tables: up to this quantile of the training times (the c_index metric's default).
UNO_HORIZON = 0.9


def structured(table: Table) -> np.ndarray:
    """scikit-survival's (event, time) structured array."""
    out = np.empty(len(table.time), dtype=[("event", bool), ("time", float)])
    out["event"], out["time"] = table.event, table.time
    return out


def uno_c(train: Table, test: Table, risk: np.ndarray, horizon: float) -> float:
    """Uno's C (scikit-survival) up to the ``horizon`` quantile of the training times."""
    from sksurv.metrics import concordance_index_ipcw

    tau = float(np.quantile(train.time, horizon))
    return float(concordance_index_ipcw(structured(train), structured(test), risk, tau=tau)[0])


def concordance(data: SurvivalDataset, risk: np.ndarray, horizon: float) -> tuple[float, float]:
    """(Harrell's C of the test ``risk`` scores over the pairs within each table, the mean over the tables of Uno's
    C with that table's training patients' censoring). One table: the plain Harrell and Uno C."""
    test = data.test_table()
    harrell = harrell_c(test.time, test.event, risk, data.groups_test.numpy())
    uno = [uno_c(train, test.rows(mask), risk[mask], horizon) for train, mask in data.table_groups()]
    return harrell, float(np.mean(uno))


class ConcordanceMetric(Metric):
    """Harrell's C of the test risk scores (outputs[:, 0]); figure ``uno`` (see the module docstring)."""

    def __call__(self, outputs: torch.Tensor, data: SurvivalDataset) -> float:
        test = data.test_table()
        return harrell_c(test.time, test.event, outputs[:, 0].double().cpu().numpy(), data.groups_test.numpy())

    def scored(self, outputs: torch.Tensor, data: SurvivalDataset) -> Scored:
        harrell, uno = concordance(data, outputs[:, 0].double().cpu().numpy(), self.spec.horizon)
        return Scored(harrell, {"uno": uno})


class Reference:
    """What every assessed table is compared with: D's Kaplan–Meier curve, the oracle's Cox coefficients and
    conditionals, the test patients."""

    def __init__(self, problem: Any, data: SurvivalDataset) -> None:
        self.problem, self.data = problem, data
        self.fit = cox_fitter(problem.train)
        self.z = Standardized(data)
        self.train, self.test = data.train_table(), data.test_table()
        oracle = data.oracle_table() if data.x_oracle is not None else None
        grids = [g for g in (a.curve_grid() for a in problem.task.analyses) if g is not None]
        points, horizon = grids[0] if grids else (50, 0.9)
        self.grid = time_grid(self.train.time, self.train.event, points, horizon)
        self.km = kaplan_meier(self.train.time, self.train.event, self.grid)
        self.disc = Discretizer.of(data, 3, None)
        self.parents = naive_structure(len(data.columns))
        if oracle is not None:
            self.beta = self.fit(self.z(oracle.x), oracle.time, oracle.event)
            names = [e for a in problem.task.analyses for e in a.query_evidence(problem.data)]
            self.sets = {",".join(e): data.column_index(e) for e in names}
            network = fit_network(oracle, self.disc, self.parents, 1.0)
            self.conditionals = {k: network.conditional(len(data.columns), e) for k, e in self.sets.items()}
        self.groups = [(train, mask, brier_times(self.test.rows(mask))) for train, mask in data.table_groups()]
        self.source_columns = [np.flatnonzero(c) for c in data.source_columns]
        self.source_tests = [data.source_test_mask(s) for s in range(len(data.sources))]

    def source_concordance(self, table_of: Callable[[int], Table]) -> dict[str, float]:
        """Per source s: Harrell's C, on the test patients of s's table, of the Cox model on s's columns fitted on
        ``table_of(s)`` — the source's own analysis, reproduced (or not) by another table."""
        z_test, out = self.z(self.test.x), {}
        for s, (name, cols, mask) in enumerate(zip(self.data.sources, self.source_columns, self.source_tests)):
            table = table_of(s)
            beta = self.fit(self.z(table.x)[:, cols], table.time, table.event)
            out[name] = harrell_c(self.test.time[mask], self.test.event[mask], z_test[mask][:, cols] @ beta)
        return out

    def assess(self, table: Table) -> dict[str, Any]:
        """The figures of the module docstring for a complete ``table``."""
        from sksurv.metrics import integrated_brier_score

        z = self.z(table.x)
        beta = self.fit(z, table.time, table.event)
        z_test = np.nan_to_num(self.z(self.test.x))  # a column a test patient's table lacks: at D's mean
        harrell, uno = concordance(self.data, z_test @ beta, UNO_HORIZON)
        brier = [float(integrated_brier_score(structured(train), structured(self.test.rows(mask)),
                                              survival_functions(beta, z, table.time, table.event, z_test[mask], at),
                                              at)) if len(at) > 1 else float("nan")
                 for train, mask, at in self.groups]
        figures = {
            "c_index": harrell,
            "c_index_uno": uno,
            "integrated_brier": float(np.mean(brier)),
            "km_distance": float(np.max(np.abs(kaplan_meier(table.time, table.event, self.grid) - self.km))),
            "source_c_index": self.source_concordance(lambda s: table),
        }
        if self.data.x_oracle is None:
            return figures
        network = fit_network(table, self.disc, self.parents, 1.0)
        tv = {}
        for key, e in self.sets.items():
            (ref, p_e), mine = self.conditionals[key], network.conditional(len(self.data.columns), e)[0]
            tv[key] = float(np.sum(p_e * total_variation(mine, ref)))
        return figures | {"cox_error": float(np.linalg.norm(beta - self.beta)), "bn_tv": tv}


def brier_times(test: Table) -> np.ndarray:
    """20 times between the 10th and 80th percentiles of the test times, below the last (scikit-survival's
    follow-up range)."""
    times = np.linspace(*np.quantile(test.time, [0.1, 0.8]), 20)
    return times[times < test.time.max()]


def median_figures(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every (nested) figure over draws."""
    first = figures[0]
    return {k: median_figures([f[k] for f in figures]) if isinstance(first[k], dict)
            else float(np.median([f[k] for f in figures])) for k in first}


def baselines(reference: Reference, n: int, draws: int = DRAWS, seed: int = BASELINE_SEED) -> dict[str, Any]:
    """The figures of the baselines of the module docstring at n̂ = ``n`` patients (with the task objective of the
    random ones, ``objective``)."""
    data, train = reference.data, reference.train
    rng = np.random.default_rng(seed)
    network = fit_fused_network(data, reference.disc, reference.parents, 1.0)
    em_full = Table(em_complete(train, data, reference.disc, network, rng), train.time, train.event)
    mice_full = Table(mice_complete(train, data, seed), train.time, train.event)
    analyses = build_analyses(reference.problem.task, data, reference.problem)
    objective = task_objective(reference.problem, analyses)
    out: dict[str, Any] = {}
    for name, pool in (("random_em", em_full), ("random_mice", mice_full)):
        tables = [pool.rows(per_source_draw(data.source_of, n, rng)) for _ in range(draws)]
        figures = [reference.assess(t) | {"objective": objective(t)} for t in tables]
        out[name] = median_figures(figures) | {"draws": draws}
    out["em_full"] = reference.assess(em_full)
    out["mice_full"] = reference.assess(mice_full)
    out["sources"] = {"source_c_index": reference.source_concordance(data.source_table)}
    if data.x_oracle is not None:
        out["oracle"] = reference.assess(data.oracle_table())
    return out


def per_source_draw(source_of: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """min(n, N) of the N training patients without replacement, a random subsample of each source: source s gives
    n_s of its N_s patients, n_s the largest-remainder rounding of n N_s / N (so Σ n_s = n and |n_s − n N_s/N| < 1)."""
    sources, sizes = np.unique(source_of, return_counts=True)
    n = min(n, len(source_of))
    takes = largest_remainder(n * sizes / sizes.sum(), n)
    return np.concatenate([rng.choice(np.flatnonzero(source_of == s), k, replace=False)
                           for s, k in zip(sources, takes, strict=True)])


def task_objective(problem: Any, analyses: Analyses) -> Callable[[Table], float]:
    """table ↦ the task's objective R_ω[weighted distances] (the problem's risk over the analyses)."""
    risk = RISKS.build(problem.risk)
    return lambda table: float(risk.over_scenarios(torch.as_tensor(analyses.distances(table))))


def survival_report(problem: Any, data: SurvivalDataset, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """The distilled table's figures, its per-analysis distances, and the baselines at its size."""
    reference = Reference(problem, data)
    y = y.double().cpu().numpy()
    table = Table(x.double().cpu().numpy(), y[:, 0], y[:, 1] > 0.5)
    analyses = build_analyses(problem.task, data, problem)
    distances = analyses.distances(table)
    return {
        "distilled": reference.assess(table) | {"objective": task_objective(problem, analyses)(table),
                                                "analyses": dict(zip(analyses.names, distances.tolist()))},
        "baselines": baselines(reference, len(table.time)),
        "patients": len(table.time),
        "km_grid": reference.grid.tolist(),
        "km_curves": {"real": reference.km.tolist(),
                      "distilled": kaplan_meier(table.time, table.event, reference.grid).tolist(),
                      "random": random_curves(reference, len(table.time))},
    }


def random_curves(reference: Reference, n: int, count: int = 5) -> list[list[float]]:
    """Kaplan–Meier curves of ``count`` random n-patient subsets of the training patients (for the report)."""
    rng = np.random.default_rng(BASELINE_SEED)
    train = reference.train
    subsets = [rng.choice(len(train.time), min(n, len(train.time)), replace=False) for _ in range(count)]
    return [kaplan_meier(train.time[s], train.event[s], reference.grid).tolist() for s in subsets]
