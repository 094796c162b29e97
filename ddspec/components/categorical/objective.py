"""The objective of a table D̂ of m records: Σ_r w_r |s_r(D̂) − m t_r|, s the statistics (counts in the task's
marginals), t = s(D)/n the real ones per record, w the distance's weights (docs/categorical.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddspec.components.categorical.program import CountProgram
from ddspec.components.categorical.statistics import Statistics


@dataclass(frozen=True)
class TableObjective:
    """``statistics`` (Q), ``target`` m t (R), ``weights`` w (R) and ``m``."""

    statistics: Statistics
    target: np.ndarray
    weights: np.ndarray
    m: int

    @classmethod
    def of(cls, statistics: Statistics, real: np.ndarray, m: int, row_weight: float) -> TableObjective:
        """The objective of matching the statistics of the real table ``real`` (N x d codes) with m records, every
        statistic weighted ``row_weight``."""
        target = statistics.counts(real) * (m / len(real))
        return cls(statistics, target, np.full(statistics.num_rows, row_weight), m)

    def __call__(self, codes: np.ndarray) -> float:
        """The objective of the table ``codes`` (m x d)."""
        return float(self.weights @ np.abs(self.statistics.counts(codes) - self.target))

    def program(self, cells: np.ndarray) -> CountProgram:
        """The integer program over the counts of ``cells`` (C x d codes)."""
        return CountProgram(self.statistics.rows(cells), self.statistics.num_rows, self.target, self.weights, self.m)
