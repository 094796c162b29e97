"""Checks of a loaded :class:`~ddspec.components.data.base.Dataset`, whatever its source (shipped, files,
plugins): bad data is refused when it is loaded, naming the array, the first offending row, the spec path
and a fix, instead of surfacing later as a divergence or a wrong metric."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from ddspec.errors import SpecError

if TYPE_CHECKING:
    from ddspec.components.data.base import Dataset

#: The arrays of a Dataset that the checks name, in the order train inputs, train targets, test inputs, test targets.
ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def validate_dataset(data: Dataset, where: Mapping[str, str] | str = "data") -> Dataset:
    """``data`` unchanged if it is usable, else SpecError at ``where`` (one spec path, or one per array):

    ``DATA_DTYPE``: inputs not floating point; class labels not integers (e.g. floats), real targets not floats.
    ``DATA_LENGTH_MISMATCH``: x and y (or groups) of a split with different numbers of rows.
    ``DATA_NOT_FINITE``: NaN or inf in an input or a target (the first such row is named).
    ``DATA_LABEL_OUT_OF_RANGE``: a class label < 0 or ≥ num_classes.
    ``DATA_EMPTY_CLASS``: no training rows at all, or a class 0..K-1 without training rows."""
    paths = dict.fromkeys(ARRAYS, where) if isinstance(where, str) else dict(where)
    arrays = {key: getattr(data, key) for key in ARRAYS}
    classes = data.num_classes > 0
    for key, t in arrays.items():
        _check_dtype(key, t, classes, paths[key])
    for split in ("train", "test"):
        n = len(arrays[f"x_{split}"])
        others = {f"y_{split}": arrays[f"y_{split}"], f"groups_{split}": getattr(data, f"groups_{split}")}
        for key, t in others.items():
            if t is not None and len(t) != n:
                raise SpecError.one(
                    "DATA_LENGTH_MISMATCH", paths.get(key, paths[f"y_{split}"]),
                    f"x_{split} has {n} rows but {key} has {len(t)}",
                    f"give x_{split} and {key} the same number of rows, in the same order",
                )
    for key, t in arrays.items():
        if t.is_floating_point():
            _check_finite(key, t, paths[key])
    if classes:
        for key in ("y_train", "y_test"):
            _check_labels(key, arrays[key], data.num_classes, paths[key])
    _check_strata(data, paths["y_train"])
    return data


def _check_dtype(key: str, t: torch.Tensor, classes: bool, path: str) -> None:
    if key.startswith("x"):
        if not t.is_floating_point():
            raise SpecError.one("DATA_DTYPE", path, f"{key} has dtype {t.dtype}; inputs must be floating point",
                                "convert the inputs to float32 where the data is made")
    elif classes and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise SpecError.one(
            "DATA_DTYPE", path, f"{key} has dtype {t.dtype}, but the data has classes: labels must be integers",
            "store class indices 0..K-1 as integers, or real-valued targets as floats with num_classes = 0 "
            "(kind npz: data.targets: real)",
        )
    elif not classes and not t.is_floating_point():
        raise SpecError.one("DATA_DTYPE", path, f"{key} has dtype {t.dtype}; real-valued targets must be floats",
                            "convert the targets to float32 where the data is made")


def _first_row(mask: torch.Tensor) -> int:
    """Index of the first row of ``mask`` (N x ...) with any True entry."""
    return int(torch.nonzero(mask.reshape(len(mask), -1).any(1))[0])


def _check_finite(key: str, t: torch.Tensor, path: str) -> None:
    finite = torch.isfinite(t)
    if bool(finite.all()):
        return
    row = _first_row(~finite)
    what = "NaN" if bool(torch.isnan(t[row]).any()) else "inf"
    count = int((~finite).reshape(len(t), -1).any(1).sum())
    raise SpecError.one(
        "DATA_NOT_FINITE", path, f"{key}[{row}] holds {what} ({count} row{'s' if count != 1 else ''} of {key} "
        f"hold{'s' if count == 1 else ''} NaN or inf)",
        f"drop or impute those rows of {key} (e.g. np.nan_to_num) and save the data again",
    )


def _check_labels(key: str, y: torch.Tensor, num_classes: int, path: str) -> None:
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        row = _first_row(bad)
        raise SpecError.one(
            "DATA_LABEL_OUT_OF_RANGE", path, f"{key}[{row}] = {int(y[row])} is not a class 0..{num_classes - 1}",
            "store class indices 0..K-1 (K = the number of classes)",
        )


def _check_strata(data: Dataset, path: str) -> None:
    if len(data.y_train) == 0:
        raise SpecError.one("DATA_EMPTY_CLASS", path, "there are no training rows", "give at least one training row")
    if data.num_classes == 0:
        return
    counts = torch.bincount(data.y_train.flatten(), minlength=data.num_classes)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise SpecError.one(
            "DATA_EMPTY_CLASS", path, f"class{'es' if len(empty) > 1 else ''} {', '.join(map(str, empty))} of "
            f"0..{data.num_classes - 1} ha{'ve' if len(empty) > 1 else 's'} no training rows",
            "renumber the labels 0..K-1 without gaps, or add training rows of every class",
        )
