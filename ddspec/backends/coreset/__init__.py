"""Coreset backend: select real samples per class instead of synthesizing them (baselines).

For class c with features F_c = {f_1..f_n} (flattened inputs, or a random network's embedding) and
class mean μ_c, it picks k = ``synthetic.counts(K)[c]`` distinct samples:

- ``random``: k indices without replacement (``ctx.generator``).
- ``herding`` (Welling 2009, greedy form): for t = 1..k pick
  i_t = argmin_{i unselected} ‖μ_c − (f_{i_1} + … + f_{i_{t−1}} + f_i) / t‖.
- ``kcenter`` (k-center greedy): i_1 = argmin_i ‖f_i − μ_c‖, then
  i_t = argmax_i min_{s<t} ‖f_i − f_{i_s}‖ (the point farthest from the selected set).

Ties go to the lowest index. The result is class-major, x the selected real inputs, y int64.
torch is imported inside the functions, so that registering the backend stays cheap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ddspec.backends.base import Backend, Distilled, Estimate
from ddspec.compiler.estimate import seconds
from ddspec.registry import register_backend

if TYPE_CHECKING:
    import torch

    from ddspec.analysis.facts import Analysis
    from ddspec.runtime.context import RunContext

#: Samples embedded per forward pass.
EMBED_BATCH = 1024


def herding(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy herding: k row indices keeping the running mean of the picks closest to the mean."""
    import torch

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
    import torch

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
    import torch

    x = ctx.data.x_train
    if ctx.problem.optimize.space == "input":
        return x.flatten(1)
    net = ctx.new_model().eval()
    with torch.no_grad():
        return torch.cat([net.embed(chunk) for chunk in x.split(EMBED_BATCH)])


@register_backend
class CoresetBackend(Backend):
    name = "coreset"
    summary = "select real samples per class: random, herding or k-center greedy"
    preference = 10

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        if not analysis.has("optimize:selection"):
            return False, (f"the optimize `{analysis.kind('optimize')}` does not select samples "
                           "(coreset needs optimize.kind: select)")
        return True, "optimize.kind is select: pick real samples per class"

    def estimate(self, analysis: Analysis) -> Estimate:
        """Selection: about 2·d FLOPs per (sample, pick) pair per class; embedding: one forward pass."""
        p, info = analysis.problem, analysis.data
        n, dim = info.n_train, math.prod(info.input_shape)
        flops = 2.0 * dim * sum(c * k for c, k in zip(info.class_counts, analysis.synthetic_counts))
        memory = 4 * n * dim * 2
        how = f"{p.optimize.method} over {n} samples in {p.optimize.space} space"
        if p.optimize.space == "embedding":
            params, forward, acts = p.model.cost(info.input_shape, info.num_classes)
            flops += forward * n
            memory += 4 * (params + acts * min(n, EMBED_BATCH))
            how += ", one no-grad forward of the training set"
        return Estimate(int(memory), seconds(flops, p.runtime.device), how + "; float32")

    def run(self, ctx: RunContext) -> Distilled:
        """Pick ``synthetic.counts(K)[c]`` real samples of each class c with ``optimize.method``."""
        import torch

        method = ctx.problem.optimize.method
        counts = ctx.problem.synthetic.counts(ctx.data.num_classes)
        feats = features(ctx) if method != "random" else None
        chosen = []
        for c, idx in enumerate(ctx.data.strata()):
            if feats is None:
                chosen.append(ctx.sample_real(idx, counts[c]))
            else:
                pick = (herding if method == "herding" else kcenter)(feats[idx], counts[c])
                chosen.append(idx[pick.to(idx.device)])
        rows = torch.cat(chosen)
        return Distilled(ctx.data.x_train[rows].clone(), ctx.data.y_train[rows].clone())
