"""Categorical records as a :class:`Dataset` (data ``bayes_net``, ``categorical_csv`` and
``survival_categorical``).

The inputs are the integer codes (as float32) of every attribute but the label, in table order; the targets the
label's codes (int64). The table's names ride along, so D̂'s records can be written with their category names.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ddspec.components.data.base import Dataset


@dataclass(frozen=True)
class CategoricalDataset(Dataset):
    """A :class:`Dataset` of categorical records: ``attributes`` (names, the label included), ``levels`` (level
    names per attribute) and ``label`` (the label's column in the table)."""

    attributes: tuple[str, ...] = ()
    levels: tuple[tuple[str, ...], ...] = ()
    label: int = 0

    @property
    def sizes(self) -> tuple[int, ...]:
        """The number of levels of each attribute."""
        return tuple(len(levels) for levels in self.levels)

    def strata(self) -> list[torch.Tensor]:
        """One stratum, every row: D̂'s class counts are the program's choice, so a random subsample of m records
        (the ``random`` baseline) is drawn from all records, not class by class."""
        return [torch.arange(len(self.y_train), device=self.y_train.device)]

    def records(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """The table's codes (N x d int64) of inputs ``x`` and labels ``y``."""
        inputs = np.rint(x.detach().cpu().double().numpy()).astype(np.int64).reshape(len(x), -1)
        return np.insert(inputs, self.label, y.detach().cpu().numpy().astype(np.int64), axis=1)

    def split(self, codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of table codes, on the data's device (:func:`split_codes`)."""
        x, y = split_codes(codes, self.label)
        return x.to(self.x_train.device), y.to(self.x_train.device)

    def train_records(self) -> np.ndarray:
        """The real training table's codes."""
        return self.records(self.x_train, self.y_train)

    def csv_text(self, codes: np.ndarray) -> str:
        """The records with their category names, as CSV text (a header row of the attribute names first)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.attributes)
        writer.writerows([[self.levels[j][v] for j, v in enumerate(row)] for row in np.asarray(codes)])
        return out.getvalue()


def split_codes(codes: np.ndarray, label: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of table codes: float32 inputs without the ``label`` column, int64 labels (on the CPU)."""
    codes = np.asarray(codes, dtype=np.int64)
    return (torch.as_tensor(np.delete(codes, label, axis=1), dtype=torch.float32),
            torch.as_tensor(codes[:, label], dtype=torch.int64))


def build_categorical(spec: Any) -> CategoricalDataset:
    """The dataset of a categorical data spec (its :meth:`~ddspec.spec.categorical.CategoricalData.table`)."""
    table = spec.table()
    j = table.index(spec.label_name())
    (x_train, y_train), (x_test, y_test) = split_codes(table.train, j), split_codes(table.test, j)
    return CategoricalDataset(spec.describe().name, x_train, y_train, x_test, y_test, table.sizes[j],
                              attributes=table.attributes, levels=table.levels, label=j)
