"""KRR backend: closed-form distillation for kernel ridge regression, and KIP as its iterative baseline.

For a kernel model (``model: kernel_ridge``: feature map φ, ridge λ) with a closed-form inner fit
(``train: closed_form``: ridge λ_S on D̂), on class targets (one-hot rows Y) or real-valued targets (regression:
the construction holds for any Y):

- ``optimize: exact`` constructs D̂ with W_S = Y_S φ_λS(X_S)⁺ equal to the full-data W = Y φ_λ(X)⁺
  (Chen, Huang & Weng 2024): D = Y_S⁺W + (I − Y_S⁺Y_S)Z, features from the SVD of D, inputs by
  inverting φ; no iterations (:mod:`ddspec.components.closed_form.krr` has the math).
- ``optimize: gradient`` runs KIP (kernel inducing points): Adam on X_S (and the labels) to minimize
  ½‖Y_t − K_tS (K_SS + λ_S I)⁻¹ Y_S‖² on real batches, the gradient flowing through the kernel solve.

numpy / torch are imported by :mod:`.run` in ``run``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ddspec.backends.base import HYPERGRADIENT_DEFAULTS, Backend, Estimate, missing_facts
from ddspec.compiler.estimate import TRAIN_FACTOR, seconds
from ddspec.registry import register_backend

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: Facts the backend needs, with what to say when one is missing.
REQUIRED = (
    ("model:kernel", "model", "is not a kernel model (model.features, W φ(x))"),
    ("train:closed_form", "train", "does not fit the model in closed form"),
)


def one_scenario_problems(analysis: Analysis) -> list[str]:
    """Why a problem whose inner model is solved exactly (closed form or convex) does not fit it, if it does not:
    the task must be the targets' own loss on real data (capability ``targets_loss``; or no task), and the risk an
    expectation over scenarios of which there is one (one init, no scenario models, no model pool) — the exact
    solution on D̂ has no initialisation or architecture to draw."""
    p, problems = analysis.problem, []
    if p.task is not None and not analysis.has("task:targets_loss"):
        problems.append(f"the task `{analysis.kind('task')}` is not the targets' own loss on real data (the model "
                        "is fitted to D̂'s targets and judged by that loss; use task test_error, or no task)")
    if analysis.has("risk:groups"):
        problems.append(f"the risk `{analysis.kind('risk')}` is over groups of real data; the inner problem is "
                        "solved exactly for one model of all of it (one scenario: use risk mean)")
    elif not analysis.has("risk:expectation"):
        problems.append(f"the risk `{analysis.kind('risk')}` weighs scenarios, but the inner problem is solved "
                        "exactly: there is one scenario (use risk mean)")
    scenarios = p.scenarios
    if scenarios.inits > 1:
        problems.append(f"scenarios.inits is {scenarios.inits}, but the inner problem is solved exactly: there is "
                        "one scenario, with no initialisation to draw (set scenarios.inits: 1)")
    if scenarios.models:
        problems.append("scenarios.models lists other architectures, but the inner problem is solved exactly for "
                        "the declared model only (remove scenarios.models)")
    if scenarios.pool is not None:
        problems.append("scenarios.pool warm-starts trained models, but the inner problem is solved exactly "
                        "(remove scenarios.pool)")
    return problems


@register_backend
class KRRBackend(Backend):
    name = "krr"
    summary = "closed-form KRR distillation (exact, no iterations) and KIP (gradient through the kernel solve)"
    preference = 10

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        problems = missing_facts(analysis, REQUIRED)
        if not (analysis.has("optimize:exact") or analysis.has("optimize:gradient")):
            problems.append(f"the optimize `{analysis.kind('optimize')}` is neither exact nor gradient (KIP)")
        if analysis.problem.distance is not None:
            problems.append("a distance is declared (the objective is W_S = W, or KIP's test error)")
        problems += one_scenario_problems(analysis)
        if problems:
            return False, "; ".join(problems)
        targets = "real-valued targets" if analysis.has("targets:real") else "class targets"
        if analysis.has("optimize:exact"):
            return True, (f"kernel ridge regression with a closed-form inner problem ({targets}): W_S = W exactly, "
                          "no iterations")
        return True, f"KIP: kernel ridge regression ({targets}), gradient steps through the closed-form kernel solve"

    def resolve(self, analysis: Analysis) -> dict[str, Any]:
        """KIP: Adam, lr 0.01, no augmentation; the exact construction has nothing to resolve."""
        if not analysis.has("optimize:gradient"):
            return {}
        return dict(HYPERGRADIENT_DEFAULTS)

    def estimate(self, analysis: Analysis) -> Estimate:
        """Exact: one full-data ridge fit (n·p² + p³) plus SVDs of m×p matrices. KIP: per iteration the
        features of the batch and of D̂ and an m×m solve, forward and backward."""
        p, info = analysis.problem, analysis.data
        d = math.prod(info.input_shape)
        feats = p.model.features.dim(d)
        _, flops, _ = p.model.cost(info.input_shape, info.num_outputs)
        n, m = info.n_train, analysis.n_synthetic
        fit = 2 * n * feats * min(n, feats) + feats**3 + n * flops
        memory = 8 * (n * (d + feats) + min(n, feats) ** 2 + 4 * m * (d + feats))
        if analysis.has("optimize:exact"):
            total = fit + 4 * m * feats * min(m, feats)
            detail = f"one full-data ridge fit (n = {n}, p = {feats}) and an SVD of the {m}x{feats} dual matrix"
        else:
            batch = sum(min(p.optimize.real_batch_per_class, c) for c in info.class_counts)
            per = TRAIN_FACTOR * ((batch + m) * flops + 2 * batch * m * feats + m**3)
            total = fit + per * p.optimize.iterations
            detail = f"KIP: {p.optimize.iterations} iterations, each features of {batch} real + {m} synthetic " \
                     f"samples and a {m}x{m} kernel solve"
        return Estimate(int(memory), seconds(total, p.runtime.device), detail + "; float64")


    def extra_metrics(self, problem: Any, data: Any, x: Any, y: Any) -> dict[str, Any]:
        """W_S against W: ``w_rel_error``, and agreement and accuracies (classes) or RMSEs (real targets)."""
        from ddspec.backends.krr.run import kernel_metrics

        return kernel_metrics(problem, data, x, y)
