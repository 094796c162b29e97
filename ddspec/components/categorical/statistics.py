"""The statistics of a categorical table: counts of its records in every cell of chosen marginals.

A marginal S (attribute indices) has ∏_{j∈S} L_j cells; cell v of S is row offset_S + Σ_{j∈S} v_j·stride_j
(mixed radix, first attribute slowest) of the statistics vector, R rows in all. A record x falls in exactly one
row per marginal, so its statistics are the indicator of K = |marginals| rows, and a table's statistics are
Q c (c the counts of its distinct records, Q the 0/1 matrix of those indicators) — linear in the counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Statistics:
    """The marginals ``marginals`` over attributes with ``sizes`` levels each."""

    sizes: tuple[int, ...]
    marginals: tuple[tuple[int, ...], ...]

    @property
    def widths(self) -> list[int]:
        """The number of cells of each marginal."""
        return [math.prod(self.sizes[j] for j in s) for s in self.marginals]

    @property
    def offsets(self) -> np.ndarray:
        """The first row of each marginal (and R at the end)."""
        return np.concatenate([[0], np.cumsum(self.widths)]).astype(np.int64)

    @property
    def num_rows(self) -> int:
        """R, the length of the statistics vector."""
        return int(self.offsets[-1])

    def marginal_of_row(self) -> np.ndarray:
        """The marginal each row belongs to (R ints)."""
        return np.repeat(np.arange(len(self.marginals)), self.widths)

    def rows(self, codes: np.ndarray) -> np.ndarray:
        """The row of every record (N x d codes) in every marginal: N x K int64."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1, len(self.sizes))
        out = np.empty((len(codes), len(self.marginals)), dtype=np.int64)
        for k, (s, offset) in enumerate(zip(self.marginals, self.offsets)):
            cell = np.zeros(len(codes), dtype=np.int64)
            for j in s:
                cell = cell * self.sizes[j] + codes[:, j]
            out[:, k] = offset + cell
        return out

    def counts(self, codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """The statistics of a table: Σ_i weights_i·indicator(x_i) (weights 1: the counts), R floats."""
        rows = self.rows(codes)
        w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
        return np.bincount(rows.ravel(), np.repeat(w, rows.shape[1]), minlength=self.num_rows)

    def matrix(self, cells: np.ndarray) -> sp.csc_matrix:
        """Q: R x C, Q[r, x] = 1 when cell x falls in row r."""
        rows = self.rows(cells)
        cols = np.repeat(np.arange(len(rows)), rows.shape[1])
        return sp.csc_matrix((np.ones(rows.size), (rows.ravel(), cols)), shape=(self.num_rows, len(rows)))

    def tv(self, counts: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The total variation ½ Σ_v |p(v) − q(v)| of every marginal between two statistics vectors, each
        normalized within each marginal (p from ``counts``, q from ``reference``): K floats in [0, 1]."""
        marginal = self.marginal_of_row()
        p = counts / np.bincount(marginal, counts)[marginal]
        q = reference / np.bincount(marginal, reference)[marginal]
        return 0.5 * np.bincount(marginal, np.abs(p - q), minlength=len(self.marginals))
