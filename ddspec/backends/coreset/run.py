"""The torch side of the coreset backend (see :mod:`ddspec.backends.coreset` for the selection rules)."""

from __future__ import annotations

import torch

from ddspec.backends.base import Distilled
from ddspec.backends.coreset import EMBED_BATCH
from ddspec.runtime.context import RunContext


def herding(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy herding: k row indices keeping the running mean of the picks closest to the mean."""
    mean = features.mean(0)
    total = torch.zeros_like(mean)
    free = torch.ones(len(features), dtype=torch.bool, device=features.device)
    picks = []
    for t in range(1, k + 1):
        gap = (mean - (total + features) / t).norm(dim=1).masked_fill(~free, float("inf"))
        i = int(torch.argmin(gap))
        picks.append(i)
        free[i] = False
        total = total + features[i]
    return torch.tensor(picks, dtype=torch.int64)


def kcenter(features: torch.Tensor, k: int) -> torch.Tensor:
    """k-center greedy: start at the row nearest the mean, then repeatedly the row farthest from the picks."""
    if k == 0:
        return torch.empty(0, dtype=torch.int64)
    first = int(torch.argmin((features - features.mean(0)).norm(dim=1)))
    picks = [first]
    nearest = (features - features[first]).norm(dim=1)
    for _ in range(1, k):
        i = int(torch.argmax(nearest))
        picks.append(i)
        nearest = torch.minimum(nearest, (features - features[i]).norm(dim=1))
    return torch.tensor(picks, dtype=torch.int64)


def features(ctx: RunContext) -> torch.Tensor:
    """Flattened training inputs (``input``), or their embedding by a freshly initialised model (``embedding``)."""
    x = ctx.data.x_train
    if ctx.problem.optimize.space == "input":
        return x.flatten(1)
    net = ctx.new_model().eval()
    with torch.no_grad():
        return torch.cat([net.embed(chunk) for chunk in x.split(EMBED_BATCH)])


#: The greedy rules of ``optimize.method`` over features (``random`` draws instead).
SELECTORS = {"herding": herding, "kcenter": kcenter}


def distill(ctx: RunContext) -> Distilled:
    """Pick ``synthetic.counts(strata)[c]`` real samples of each class c with ``optimize.method``."""
    method = ctx.problem.optimize.method
    strata = ctx.data.strata()
    counts = ctx.problem.synthetic.counts(len(strata))
    rule = SELECTORS.get(method)
    feats = features(ctx) if rule is not None else None
    chosen = []
    for c, idx in enumerate(strata):
        if rule is None:
            chosen.append(ctx.sample_real(idx, counts[c]))
        else:
            chosen.append(idx[rule(feats[idx], counts[c]).to(idx.device)])
    rows = torch.cat(chosen)
    return Distilled(ctx.data.x_train[rows].clone(), ctx.data.y_train[rows].clone())
