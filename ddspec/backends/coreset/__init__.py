"""Coreset backend: select real samples per class instead of synthesizing them (baselines).

For class c with features F_c = {f_1..f_n} (flattened inputs, or a random network's embedding) and
class mean μ_c, it picks k = ``synthetic.counts(K)[c]`` distinct samples:

- ``random``: k indices without replacement (``ctx.generator``).
- ``herding`` (Welling 2009, greedy form): for t = 1..k pick
  i_t = argmin_{i unselected} ‖μ_c − (f_{i_1} + … + f_{i_{t−1}} + f_i) / t‖.
- ``kcenter`` (k-center greedy): i_1 = argmin_i ‖f_i − μ_c‖, then
  i_t = argmax_i min_{s<t} ‖f_i − f_{i_s}‖ (the point farthest from the selected set).

Ties go to the lowest index. The result is class-major, x the selected real inputs, y int64.
Selection is per class, so real-valued targets are refused. This module stays light: the selection is in
:mod:`.run`, imported in ``run``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ddspec.backends.base import Backend, Estimate
from ddspec.compiler.estimate import seconds
from ddspec.registry import register_backend

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: Samples embedded per forward pass.
EMBED_BATCH = 1024


@register_backend
class CoresetBackend(Backend):
    name = "coreset"
    summary = "select real samples per class: random, herding or k-center greedy"
    preference = 10

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        problems = []
        if not analysis.has("optimize:selection"):
            problems.append(f"the optimize `{analysis.kind('optimize')}` does not select samples "
                            "(coreset needs optimize.kind: select)")
        if not analysis.has("targets:classes"):
            problems.append(f"the data's targets are not classes ({analysis.data.describe_targets()}), and coreset "
                            "selection picks samples class by class (for regression use bilevel, krr or convex; for "
                            "a PDE, collocation)")
        if problems:
            return False, "; ".join(problems)
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

