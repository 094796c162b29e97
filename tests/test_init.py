"""init_synthetic: counts, classes, ranges; kmeans equals scikit-learn's centres for the same seed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from ddspec.components.data.base import Dataset
from ddspec.components.synthetic.init import init_synthetic, kmeans_seed
from ddspec.spec.synthetic import SyntheticSpec


def toy_data(per_class: int = 20, classes: int = 3, seed: int = 0) -> Dataset:
    """Class c: 1 x 4 x 2 inputs ~ N(3c, (c + 1)²), labels interleaved (0, 1, 2, 0, ...)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(per_class * classes) % classes
    x = 3.0 * y[:, None, None, None] + (y[:, None, None, None] + 1.0) * torch.randn(len(y), 1, 4, 2, generator=gen)
    return Dataset("toy", x, y, x[:5], y[:5], classes)


def problem(**synthetic: object) -> SimpleNamespace:
    return SimpleNamespace(synthetic=SyntheticSpec(**synthetic))


@pytest.mark.parametrize("init", ["real", "noise", "kmeans"])
def test_counts_classes_dtypes(init: str) -> None:
    data = toy_data()
    x, y = init_synthetic(problem(total=7, init=init), data, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (7, 1, 4, 2)
    assert y.tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_real_init_draws_distinct_samples_of_the_class() -> None:
    data = toy_data()
    x, y = init_synthetic(problem(per_class=5), data, torch.Generator().manual_seed(1))
    for c in range(3):
        real = data.x_train[data.y_train == c].flatten(1)
        syn = x[y == c].flatten(1)
        rows = [int(torch.nonzero((real == s).all(1)).flatten()[0]) for s in syn]
        assert len(set(rows)) == 5


def test_noise_init_matches_class_moments() -> None:
    data = toy_data(per_class=50)
    x, y = init_synthetic(problem(per_class=4000, init="noise"), data, torch.Generator().manual_seed(2))
    for c in range(3):
        real, syn = data.x_train[data.y_train == c], x[y == c]
        torch.testing.assert_close(syn.mean(0), real.mean(0), atol=0.1 * (c + 1), rtol=0)
        torch.testing.assert_close(syn.std(0), real.std(0, unbiased=False), atol=0.05 * (c + 1), rtol=0)


def test_kmeans_init_equals_sklearn_centres() -> None:
    data = toy_data()
    x, y = init_synthetic(problem(per_class=3, init="kmeans"), data, torch.Generator().manual_seed(3))
    seeds = torch.Generator().manual_seed(3)
    for c in range(3):
        real = data.x_train[data.y_train == c].flatten(1).double().numpy()
        fit = KMeans(n_clusters=3, n_init=10, random_state=kmeans_seed(seeds)).fit(real)
        np.testing.assert_allclose(x[y == c].flatten(1).numpy(), fit.cluster_centers_, rtol=1e-6, atol=1e-6)


def test_real_init_stays_in_data_range_and_is_seeded() -> None:
    data = toy_data()
    draw = lambda seed: init_synthetic(problem(per_class=4), data, torch.Generator().manual_seed(seed))[0]
    x = draw(4)
    assert data.x_train.min() <= x.min() and x.max() <= data.x_train.max()
    torch.testing.assert_close(x, draw(4), rtol=0, atol=0)
    assert not torch.equal(x, draw(5))
