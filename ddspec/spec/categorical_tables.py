"""The light side of categorical data sources (numpy only, no torch): discrete Bayesian networks and their
ancestral sampler, and CSV files with declared categorical columns, read into a :class:`CategoricalTable` of
integer codes. The spec layer uses it to describe categorical data (class counts, domain, distinct rows) without
torch; :mod:`ddspec.components.categorical.data` wraps the same table as a torch Dataset.

The Asia network (Lauritzen and Spiegelhalter's chest-clinic example, 8 binary attributes) is shipped as its
public conditional probability tables, :data:`ASIA`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ddspec.errors import SpecError


@dataclass(frozen=True)
class Node:
    """One attribute of a Bayesian network: its level names, its parents (earlier nodes, by name) and its table:
    ``table[j]`` is P(node = · | parents in configuration j), configurations in mixed radix, first parent slowest."""

    name: str
    levels: tuple[str, ...]
    parents: tuple[str, ...]
    table: tuple[tuple[float, ...], ...]


YES_NO = ("no", "yes")

#: The Asia network: P(level | parents), one row per parent configuration (first parent slowest; "no" = 0).
ASIA: tuple[Node, ...] = (
    Node("asia", YES_NO, (), ((0.99, 0.01),)),
    Node("tub", YES_NO, ("asia",), ((0.99, 0.01), (0.95, 0.05))),
    Node("smoke", YES_NO, (), ((0.5, 0.5),)),
    Node("lung", YES_NO, ("smoke",), ((0.99, 0.01), (0.9, 0.1))),
    Node("bronc", YES_NO, ("smoke",), ((0.7, 0.3), (0.4, 0.6))),
    Node("either", YES_NO, ("lung", "tub"), ((1.0, 0.0), (0.0, 1.0), (0.0, 1.0), (0.0, 1.0))),
    Node("xray", YES_NO, ("either",), ((0.95, 0.05), (0.02, 0.98))),
    Node("dysp", YES_NO, ("bronc", "either"), ((0.9, 0.1), (0.3, 0.7), (0.2, 0.8), (0.1, 0.9))),
)


@dataclass(frozen=True)
class CategoricalTable:
    """Categorical records as integer codes: ``attributes`` (names, in column order), ``levels`` (level names per
    attribute; code k is ``levels[j][k]``), ``train`` and ``test`` (int64 N x d codes)."""

    attributes: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    train: np.ndarray
    test: np.ndarray

    def index(self, attribute: str) -> int:
        return self.attributes.index(attribute)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The number of levels of each attribute."""
        return tuple(len(levels) for levels in self.levels)

    @property
    def domain_size(self) -> int:
        """The number of cells of the full joint domain, ∏_j |levels_j|."""
        return math.prod(self.sizes)

    def distinct_train_rows(self) -> int:
        """The number of distinct training records (the candidate set's size)."""
        return len(np.unique(self.train, axis=0))


def random_network(attributes: int, levels: tuple[int, int], max_parents: int, concentration: float,
                   seed: int) -> tuple[Node, ...]:
    """A random discrete Bayesian network: node j (named ``x<j>``) has a number of levels uniform in ``levels``,
    min(j, max_parents) parents drawn uniformly among the earlier nodes, and every row of its table drawn from a
    symmetric Dirichlet(``concentration``). Draws: numpy ``default_rng(seed)``, node by node."""
    rng = np.random.default_rng(seed)
    nodes: list[Node] = []
    for j in range(attributes):
        k = int(rng.integers(levels[0], levels[1] + 1))
        parents = tuple(sorted(int(p) for p in rng.choice(j, size=min(j, max_parents), replace=False))) if j else ()
        rows = math.prod(len(nodes[p].levels) for p in parents)
        table = rng.dirichlet(np.full(k, concentration), size=rows)
        nodes.append(Node(f"x{j}", tuple(f"v{i}" for i in range(k)), tuple(nodes[p].name for p in parents),
                          tuple(tuple(float(v) for v in row) for row in table)))
    return tuple(nodes)


def sample_network(nodes: tuple[Node, ...], n: int, seed: int) -> np.ndarray:
    """n records drawn by ancestral sampling (nodes in order, each given its parents' drawn levels) with numpy
    ``default_rng(seed)``: int64 n x d codes. Node by node, one uniform per record: the level is the first whose
    cumulative probability exceeds it."""
    rng = np.random.default_rng(seed)
    names = [node.name for node in nodes]
    codes = np.zeros((n, len(nodes)), dtype=np.int64)
    for j, node in enumerate(nodes):
        config = np.zeros(n, dtype=np.int64)
        for parent in node.parents:
            p = names.index(parent)
            config = config * len(nodes[p].levels) + codes[:, p]
        cumulative = np.cumsum(np.asarray(node.table), axis=1)[config]
        u = rng.random(n)
        codes[:, j] = np.minimum((u[:, None] >= cumulative).sum(1), len(node.levels) - 1)
    return codes


@lru_cache(maxsize=8)
def network_table(nodes: tuple[Node, ...], n_train: int, n_test: int, seed: int) -> CategoricalTable:
    """The table of a network: n_train + n_test records from :func:`sample_network`, the first n_train for training."""
    codes = sample_network(nodes, n_train + n_test, seed)
    return CategoricalTable(tuple(node.name for node in nodes), tuple(node.levels for node in nodes),
                            codes[:n_train], codes[n_train:])


def csv_table(path: str, columns: tuple[str, ...] | None, test_fraction: float, seed: int) -> CategoricalTable:
    """The declared categorical ``columns`` (None: every column) of the CSV file ``path`` (header row first): each
    column's levels are its distinct values, sorted; the rows are split by a permutation of numpy
    ``default_rng(seed)``, round(N·test_fraction) rows to test. SpecError ``DATA_FILE_*`` for a missing file, a
    missing column or an empty value. Cached while the file is unchanged (same modification time and size)."""
    if not Path(path).is_file():
        raise SpecError.one("DATA_FILE_NOT_FOUND", "data.path", f"file not found: {path}",
                            "check the path; relative paths are resolved against the spec file's folder")
    stat = Path(path).stat()
    return _csv_table(path, (stat.st_mtime_ns, stat.st_size), columns, test_fraction, seed)


@lru_cache(maxsize=8)
def _csv_table(path: str, version: tuple[int, int], columns: tuple[str, ...] | None, test_fraction: float,
               seed: int) -> CategoricalTable:
    """:func:`csv_table` of the file ``path`` at ``version`` (its modification time and size: the cache key)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 3:
        raise SpecError.one("DATA_FILE_INVALID", "data.path", f"{path}: needs a header row and at least two records",
                            "write the column names on the first line and one record per line")
    header, records = rows[0], rows[1:]
    wanted = list(columns) if columns is not None else header
    missing = [c for c in wanted if c not in header]
    if missing:
        raise SpecError.one("DATA_FILE_INVALID", "data.columns", f"{path} has no column(s) {', '.join(missing)}",
                            f"declare columns among: {', '.join(header)}")
    idx = [header.index(c) for c in wanted]
    values = np.array([[r[i].strip() if i < len(r) else "" for i in idx] for r in records], dtype=object)
    empty = np.argwhere(values == "")
    if len(empty):
        row, col = empty[0]
        raise SpecError.one("DATA_FILE_INVALID", "data.path", f"{path}: record {row + 1} has no value in column "
                            f"`{wanted[col]}`", "fill every declared column, or drop the column from data.columns")
    levels = tuple(tuple(sorted(set(values[:, j]))) for j in range(len(wanted)))
    codes = np.stack([np.searchsorted(np.array(levels[j], dtype=object), values[:, j]) for j in range(len(wanted))], 1)
    order = np.random.default_rng(seed).permutation(len(codes))
    n_test = round(len(codes) * test_fraction)
    return CategoricalTable(tuple(wanted), levels, codes[order[n_test:]].astype(np.int64),
                            codes[order[:n_test]].astype(np.int64))
