"""The analyses I of a survival table and their distances (task ``survival_analyses``).

Each analysis is built once from the real data D (the stacked sources) and measures a complete table D̂:
``distances(table)`` gives, per scenario ω it contributes, weight_ω · dist_ω(I_ω(D̂), I_ω(D)).

- :class:`SurvivalCurve`: Kaplan–Meier curves on a fixed time grid, overall or per stratum (a categorical column's
  levels; a numeric column's halves at its median), dist sup_t or mean_t of |Ŝ_D̂ − Ŝ_D|, the largest over strata
  (D's curve of a stratum from the patients whose source records the column).
- :class:`CoxCoefficients`: β of the Cox fit on a source's columns (standardized by D's observed values), on that
  source's patients vs on D̂; dist ‖β̂ − β‖₂.
- :class:`BnConditionals`: P(O = 1 | x_E = e) of the network of :mod:`.fusion`, fused over the sources by EM vs
  fitted on D̂; dist Σ_e P_D(e)·|P_D̂(O = 1 | e) − P_D(O = 1 | e)| (the total variation of the binary conditional,
  weighted by D's evidence distribution), per evidence set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ddspec.components.survival.bayes_net import total_variation
from ddspec.components.survival.cox import CoxFitter, cox_fitter
from ddspec.components.survival.data import SurvivalDataset, Table
from ddspec.components.survival.fusion import Discretizer, fit_fused_network, fit_network, structure_of
from ddspec.components.survival.kaplan_meier import kaplan_meier, time_grid
from ddspec.registry import SURVIVAL_ANALYSES


class Analysis:
    """An analysis bound to D (built from its spec, D, the Cox fit and the data spec): its scenario names and the
    weighted distances of a table's outputs to D's."""

    names: list[str]

    def distances(self, table: Table) -> list[float]:
        raise NotImplementedError


def strata_masks(data: SurvivalDataset, column: str, x: np.ndarray) -> list[np.ndarray]:
    """Row masks of the strata of ``column`` in covariates ``x`` (NaN rows belong to none)."""
    j = data.columns.index(column)
    values = x[:, j]
    if data.levels[j] is not None:
        return [values == level for level in data.levels[j]]
    cut = np.nanmedian(data.train_table().x[:, j])
    return [values <= cut, values > cut]


class SurvivalCurve(Analysis):
    def __init__(self, spec: Any, data: SurvivalDataset, fit: CoxFitter, problem_data: Any) -> None:
        self.spec, self.data = spec, data
        train = data.train_table()
        self.grid = time_grid(train.time, train.event, spec.points, spec.horizon)
        self.names = [f"survival_curve[{','.join(spec.strata) or 'all'}]"]
        self.reference = self.curves(train)

    def curves(self, table: Table) -> list[np.ndarray]:
        masks = [np.ones(len(table.time), bool)]
        for column in self.spec.strata:
            masks = [m & s for m in masks for s in strata_masks(self.data, column, table.x)]
        return [kaplan_meier(table.time[m], table.event[m], self.grid) for m in masks]

    def distances(self, table: Table) -> list[float]:
        gaps = [np.abs(a - b) for a, b in zip(self.curves(table), self.reference)]
        reduce = np.max if self.spec.distance == "sup" else np.mean
        return [self.spec.weight * float(max(reduce(g) for g in gaps))]


class Standardized:
    """Covariates standardized by D's observed values: z = (x − μ)/σ."""

    def __init__(self, data: SurvivalDataset) -> None:
        mean, std = data.input_stats()
        self.mean, self.std = mean.numpy(), std.numpy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


class CoxCoefficients(Analysis):
    def __init__(self, spec: Any, data: SurvivalDataset, fit: CoxFitter, problem_data: Any) -> None:
        self.spec, self.fit, self.z = spec, fit, Standardized(data)
        sources = [spec.source] if spec.source is not None else list(data.sources)
        self.names = [f"cox_coefficients[{s}]" for s in sources]
        self.columns = [np.flatnonzero(data.source_columns[data.sources.index(s)]) for s in sources]
        self.reference = []
        for s, cols in zip(sources, self.columns):
            table = data.source_table(data.sources.index(s))
            self.reference.append(fit(self.z(table.x)[:, cols], table.time, table.event))

    def coefficients(self, table: Table) -> list[np.ndarray]:
        z = self.z(table.x)
        return [self.fit(z[:, cols], table.time, table.event) for cols in self.columns]

    def distances(self, table: Table) -> list[float]:
        return [self.spec.weight * float(np.linalg.norm(b - r)) for b, r in zip(self.coefficients(table),
                                                                                 self.reference)]


class BnConditionals(Analysis):
    def __init__(self, spec: Any, data: SurvivalDataset, fit: CoxFitter, problem_data: Any) -> None:
        self.spec, self.data = spec, data
        self.disc = Discretizer.of(data, spec.bins, spec.tau)
        self.parents = structure_of(data.columns, spec.structure)
        self.sets = [data.column_index(e) for e in spec.evidence_sets(problem_data)]
        self.names = [f"bn_conditionals[{','.join(e)}]" for e in spec.evidence_sets(problem_data)]
        self.network = fit_fused_network(data, self.disc, self.parents, spec.ess)
        self.reference = [self.network.conditional(len(data.columns), e) for e in self.sets]

    def conditionals(self, table: Table) -> list[np.ndarray]:
        net = fit_network(table, self.disc, self.parents, self.spec.ess)
        return [net.conditional(len(self.data.columns), e)[0] for e in self.sets]

    def distances(self, table: Table) -> list[float]:
        return [self.spec.weight * float(np.sum(p_e * total_variation(p, ref)))
                for p, (ref, p_e) in zip(self.conditionals(table), self.reference)]


class Analyses:
    """Every analysis of a ``survival_analyses`` task, bound to D: ``names`` (the scenarios ω) and
    ``distances(table)`` (one per scenario)."""

    def __init__(self, task: Any, data: SurvivalDataset, problem_data: Any, fit: CoxFitter) -> None:
        self.parts = [SURVIVAL_ANALYSES.build(spec, data, fit, problem_data) for spec in task.analyses]
        self.names = [n for part in self.parts for n in part.names]

    def distances(self, table: Table) -> np.ndarray:
        return np.array([d for part in self.parts for d in part.distances(table)])


def build_analyses(task: Any, data: SurvivalDataset, problem: Any) -> Analyses:
    """The task's analyses on D (``problem``: its data section, and its ``train: cox``, the Cox fit)."""
    return Analyses(task, data, problem.data, cox_fitter(problem.train))
