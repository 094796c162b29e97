"""Initial synthetic sets (``synthetic.init``), drawn per class from the real training data.

For class c with n_c = ``problem.synthetic.counts(K)[c]`` synthetic samples and real samples X_c:

- ``real``: n_c samples of X_c drawn without replacement (``torch.randperm`` on ``generator``).
- ``noise``: x ~ N(μ_c, σ_c²) independently per input element, μ_c and σ_c the per-element mean and
  (population) standard deviation over X_c.
- ``kmeans``: the n_c centres of scikit-learn ``KMeans(n_clusters=n_c, n_init=10)`` fitted on the
  flattened X_c, with ``random_state`` = :func:`kmeans_seed` (one draw from ``generator`` per class).

The result is class-major (all of class 0, then class 1, ...), x float32 in the data's units and
per-sample shape, y int64, both on the device of the training data.
"""

from __future__ import annotations

from typing import Any

import torch

from ddspec.components.data.base import Dataset

#: Upper bound (exclusive) of the ``random_state`` drawn for scikit-learn.
SEED_BOUND = 2**31 - 1


def kmeans_seed(generator: torch.Generator) -> int:
    """One ``random_state`` for scikit-learn, drawn from ``generator``."""
    return int(torch.randint(SEED_BOUND, (), generator=generator))


def _real(x_c: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    pick = torch.randperm(len(x_c), generator=generator)[:n]
    return x_c[pick.to(x_c.device)]


def _noise(x_c: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    mean, std = x_c.mean(0), x_c.std(0, unbiased=False)
    eps = torch.randn((n, *x_c.shape[1:]), generator=generator).to(x_c.device)
    return mean + std * eps


def _kmeans(x_c: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    from sklearn.cluster import KMeans

    flat = x_c.detach().cpu().reshape(len(x_c), -1).double().numpy()
    fit = KMeans(n_clusters=n, n_init=10, random_state=kmeans_seed(generator)).fit(flat)
    return torch.from_numpy(fit.cluster_centers_).reshape(n, *x_c.shape[1:]).to(x_c.device)


INITS = {"real": _real, "noise": _noise, "kmeans": _kmeans}


def init_synthetic(problem: Any, data: Dataset, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): the initial synthetic set of ``problem.synthetic`` (see the module docstring)."""
    draw = INITS[problem.synthetic.init]
    counts = problem.synthetic.counts(data.num_classes)
    xs, ys = [], []
    for c, idx in enumerate(data.class_indices()):
        if counts[c] == 0:
            continue
        xs.append(draw(data.x_train[idx], counts[c], generator).float())
        ys.append(torch.full((counts[c],), c, dtype=torch.int64, device=data.x_train.device))
    return torch.cat(xs), torch.cat(ys)
