"""Initial synthetic sets (``synthetic.init``), drawn per stratum (class, or all rows for real targets).

For stratum c with n_c = ``problem.synthetic.counts(strata)[c]`` synthetic rows and real rows (X_c, Y_c):

- ``real``: n_c rows of the stratum drawn without replacement (``torch.randperm`` on ``generator``),
  inputs with their targets.
- ``noise``: x ~ N(μ_c, σ_c²) independently per input element, μ_c and σ_c the per-element mean and
  (population) standard deviation over X_c; real-valued targets likewise from the mean and std of Y_c.
- ``kmeans``: the n_c centres of scikit-learn ``KMeans(n_clusters=n_c, n_init=10)`` fitted on the
  flattened X_c, with ``random_state`` = :func:`kmeans_seed` (one draw from ``generator`` per stratum);
  a real-valued target is the mean target of the centre's cluster.

The result is stratum-major (all of class 0, then class 1, ...), x float32 in the data's units and
per-sample shape; y int64 class indices, or the float targets' rows; both on the device of the data.
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


def _real(x_c: torch.Tensor, y_c: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    pick = torch.randperm(len(x_c), generator=generator)[:n].to(x_c.device)
    return x_c[pick], y_c[pick]


def _noise(x_c: torch.Tensor, y_c: torch.Tensor, n: int, generator: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    def draw(v: torch.Tensor) -> torch.Tensor:
        mean, std = v.mean(0), v.std(0, unbiased=False)
        return mean + std * torch.randn((n, *v.shape[1:]), generator=generator).to(v.device)

    return draw(x_c), draw(y_c) if y_c.is_floating_point() else y_c[0].repeat(n)


def _kmeans(x_c: torch.Tensor, y_c: torch.Tensor, n: int, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.cluster import KMeans

    flat = x_c.detach().cpu().reshape(len(x_c), -1).double().numpy()
    fit = KMeans(n_clusters=n, n_init=10, random_state=kmeans_seed(generator)).fit(flat)
    x = torch.from_numpy(fit.cluster_centers_).reshape(n, *x_c.shape[1:]).to(x_c.device)
    if not y_c.is_floating_point():
        return x, y_c[0].repeat(n)
    members = torch.from_numpy(fit.labels_).to(y_c.device)
    return x, torch.stack([y_c[members == k].mean(0) for k in range(n)])


INITS = {"real": _real, "noise": _noise, "kmeans": _kmeans}


def init_synthetic(problem: Any, data: Dataset, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): the initial synthetic set of ``problem.synthetic`` (see the module docstring)."""
    draw = INITS[problem.synthetic.init]
    strata = data.strata()
    counts = problem.synthetic.counts(len(strata))
    xs, ys = [], []
    for c, idx in enumerate(strata):
        if counts[c] == 0:
            continue
        x, y = draw(data.x_train[idx], data.y_train[idx], counts[c], generator)
        xs.append(x.float())
        ys.append(y.float() if y.is_floating_point() else y)
    return torch.cat(xs), torch.cat(ys)
