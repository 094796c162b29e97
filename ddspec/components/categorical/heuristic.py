"""A feasible table fast, for large programs: the LP relaxation's optimum, rounded, then improved by local search.

The LP relaxation of the count program is solved by the scaled real histogram y = m·h/n (its statistics are m t
exactly, so the relaxed objective is 0): useless as a bound, but a good point to round. Largest-remainder rounding
keeps Σ c = m: ⌊y⌋, then one more unit to the m − Σ⌊y⌋ cells with the largest remainders (ties: the lower cell
index). Greedy single-unit moves then take, while one improves the objective, the move of one record from a cell
i (c_i > 0) to any cell j that lowers it most.
"""

from __future__ import annotations

import numpy as np

from ddspec.components.categorical.program import CountProgram

#: A move must lower the objective by more than this (relative to the weights' scale) to be taken.
TOLERANCE = 1e-12


def largest_remainder(fractional: np.ndarray, m: int) -> np.ndarray:
    """Integer counts c ≥ 0 with Σ c = m and |c − y| < 1, for y ≥ 0 with Σ y = m (the module docstring's rule)."""
    floors = np.floor(fractional + 1e-9).astype(np.int64)
    missing = m - int(floors.sum())
    order = np.argsort(-(fractional - floors), kind="stable")
    floors[order[:missing]] += 1
    return floors


def greedy_moves(program: CountProgram, counts: np.ndarray, max_moves: int) -> np.ndarray:
    """Improve ``counts`` by at most ``max_moves`` best single-unit moves (see the module docstring).

    With residual ρ = Q c − m t, moving a record from cell i to cell j changes the objective by
    Δ(i, j) = A_i + B_j + Σ_{r ∈ rows(i) ∩ rows(j)} δ_ir: A_i = Σ_{r∈rows(i)} w_r (|ρ_r − 1| − |ρ_r|) removes it,
    B_j = Σ_{r∈rows(j)} w_r (|ρ_r + 1| − |ρ_r|) adds it to the unchanged residual, and on a row both cells share the
    addition sees ρ_r − 1 instead: δ_ir = w_r (|ρ_r| − |ρ_r − 1|) − w_r (|ρ_r + 1| − |ρ_r|). B is one gather over the
    C x K rows per move; the correction, per source, touches only the cells that share one of its K rows (an
    inverted index from rows to cells)."""
    counts = np.asarray(counts, dtype=np.int64).copy()
    rows, w = program.cell_rows, program.weights
    order = np.argsort(rows.ravel(), kind="stable")
    members = order // rows.shape[1]  # cells by row: members[starts[r]:starts[r + 1]] share row r
    starts = np.concatenate([[0], np.cumsum(np.bincount(rows.ravel(), minlength=program.num_rows))])
    residual = program.statistics(counts) - program.target
    tol = TOLERANCE * float(w.max(initial=1.0))
    for _ in range(max_moves):
        up = w * (np.abs(residual + 1) - np.abs(residual))
        down = w * (np.abs(residual - 1) - np.abs(residual))
        add = up[rows].sum(1)
        best, move = -tol, None
        for i in np.flatnonzero(counts):
            shared = rows[i]
            delta = -down[shared] - up[shared]
            touched = np.concatenate([members[starts[r]:starts[r + 1]] for r in shared])
            sizes = starts[shared + 1] - starts[shared]
            score = down[shared].sum() + add + np.bincount(touched, np.repeat(delta, sizes), minlength=len(rows))
            score[i] = np.inf
            j = int(np.argmin(score))
            if score[j] < best:
                best, move = float(score[j]), (int(i), j)
        if move is None:
            break
        i, j = move
        counts[i] -= 1
        counts[j] += 1
        residual[rows[i]] -= 1
        residual[rows[j]] += 1
    return counts


def heuristic(program: CountProgram, fractional: np.ndarray, max_moves: int) -> np.ndarray:
    """Largest-remainder rounding of the LP optimum ``fractional`` (m·h/n over the cells), then greedy moves."""
    return greedy_moves(program, largest_remainder(fractional, program.m), max_moves)
