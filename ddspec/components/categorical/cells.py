"""The cells D̂'s counts range over: the full joint domain, or the distinct real records (the candidate set)."""

from __future__ import annotations

import numpy as np


def joint_cells(sizes: tuple[int, ...]) -> np.ndarray:
    """Every record of the joint domain ∏_j {0..L_j − 1}, in mixed-radix order (first attribute slowest):
    ∏ L_j x d int64."""
    return np.indices(sizes).reshape(len(sizes), -1).T.astype(np.int64)


def candidate_cells(codes: np.ndarray) -> np.ndarray:
    """The distinct records of ``codes`` (N x d), in lexicographic order."""
    return np.unique(np.asarray(codes, dtype=np.int64), axis=0)


def cell_counts(codes: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """How many records of ``codes`` fall in each cell (C ints); ValueError when a record is in no cell."""
    index = {row.tobytes(): i for i, row in enumerate(np.ascontiguousarray(cells, dtype=np.int64))}
    try:
        hits = [index[row.tobytes()] for row in np.ascontiguousarray(codes, dtype=np.int64)]
    except KeyError as err:
        raise ValueError("a record lies outside the cells") from err
    return np.bincount(np.asarray(hits, dtype=np.int64), minlength=len(cells))


def expand(cells: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The table of ``counts`` (C ints) records of each cell, cell by cell: Σ c x d int64."""
    return np.repeat(cells, np.asarray(counts, dtype=np.int64), axis=0)
