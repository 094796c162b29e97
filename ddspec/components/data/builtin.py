"""Datasets that ship with dependencies: scikit-learn digits and tabular sets (classification and the
diabetes regression), MNIST-1D.

Each builder imports its package on first call, so that loading one source never pays for another.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ddspec.components.data.files import to_dataset
from ddspec.spec.data import TABULAR_REAL

if TYPE_CHECKING:
    from ddspec.components.data.base import Dataset
    from ddspec.spec.data import DigitsData, Mnist1dData, TabularData

#: digits: the first 1347 samples train, the last 450 test.
DIGITS_TRAIN = 1347


def _take(x: np.ndarray, y: np.ndarray, train: slice | np.ndarray, test: slice | np.ndarray) -> dict[str, np.ndarray]:
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def build_digits(spec: DigitsData) -> Dataset:
    """scikit-learn digits: x = pixels/16 in [0,1], N x 1 x 8 x 8; train = first 1347, test = last 450."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return to_dataset("digits", _take(x.reshape(-1, 1, 8, 8) / 16, y, slice(DIGITS_TRAIN), slice(DIGITS_TRAIN, None)))


@lru_cache(maxsize=1)
def _mnist1d() -> dict[str, np.ndarray]:
    """MNIST-1D with the package's default arguments, generated once per process. The generator
    reseeds the global ``random`` and ``numpy.random`` states; they are restored afterwards."""
    from mnist1d.data import get_dataset_args, make_dataset

    states = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    x, x_test = data["x"][:, None], data["x_test"][:, None]
    return {"x_train": x, "y_train": data["y"], "x_test": x_test, "y_test": data["y_test"]}


def build_mnist1d(spec: Mnist1dData) -> Dataset:
    """MNIST-1D, raw values: 4000 train / 1000 test samples of shape 1 x 40."""
    return to_dataset("mnist1d", _mnist1d())


def split(strata: list[np.ndarray], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices: each stratum's indices in turn are permuted by one
    ``default_rng(seed)`` and the first ``round(n_c * test_fraction)`` go to test, which gives the
    counts of :meth:`~ddspec.spec.data.TabularData.describe`."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for rows in strata:
        idx = rng.permutation(rows)
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def standardize(v: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(v − mean) / std with the mean and std of the ``train`` rows, per column (a constant column is only
    centred)."""
    mean, std = v[train].mean(axis=0), v[train].std(axis=0)
    return (v - mean) / np.where(std > 0, std, 1.0)


def build_tabular(spec: TabularData) -> Dataset:
    """A scikit-learn table, N x D, split by :func:`split` (classification: stratified by class; regression:
    all rows one stratum) and standardized with the train mean and std; real-valued targets are standardized
    the same way (y float32, N), so RMSE is in units of the target's training std and R² is unchanged."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

    loader = {"breast_cancer": load_breast_cancer, "wine": load_wine, "diabetes": load_diabetes}[spec.name]
    x, y = loader(return_X_y=True)
    real = spec.name in TABULAR_REAL
    strata = [np.arange(len(y))] if real else [np.flatnonzero(y == c) for c in range(int(y.max()) + 1)]
    train, test = split(strata, spec.test_fraction, spec.split_seed)
    y = standardize(y, train) if real else y
    return to_dataset(spec.name, _take(standardize(x, train), y, train, test), targets="real" if real else "classes")
