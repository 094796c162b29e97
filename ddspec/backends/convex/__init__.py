"""Convex backend: distill for convex inner problems solved exactly (cvxpy), with hypergradients from
implicit differentiation of their KKT conditions.

For ``model: linear`` with ``train: convex`` (L2/L1 logistic regression, linear SVM, ridge with optional
constraints; each a loss object of :mod:`ddspec.components.closed_form.convex`, which has the math) and the test
error as the task, each outer iteration solves the inner problem on D̂ exactly, θ* = (W*, b*), measures the test
error L(θ*) = ℓ(X_real W* + b*, y_real) on a real batch (cross-entropy for classes; squared error for real-valued
targets, which only ``loss: squared`` takes), and steps on D̂ along

    dL/dD̂ = −∂/∂D̂ [vᵀ ∇θ ℒ(θ*, μ*; D̂)],   K v = ∂L/∂θ   (K: the KKT matrix at θ*)

numpy / cvxpy / torch are imported by :mod:`.run` in ``run``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ddspec.backends.base import HYPERGRADIENT_DEFAULTS, Backend, Estimate, missing_facts
from ddspec.backends.krr import one_scenario_problems
from ddspec.compiler.estimate import seconds
from ddspec.registry import register_backend

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: Facts the backend needs, with what to say when one is missing.
REQUIRED = (
    ("train:convex", "train", "is not a convex inner problem"),
    ("model:linear", "model", "is not linear (convex inner problems fit W x + b)"),
    ("optimize:gradient", "optimize", "is not a gradient optimizer"),
)
#: Interior-point iterations assumed by the time estimate.
IPM_ITERATIONS = 30
#: A sparse conic IPM iteration (n samples, q unknowns: ~n q² flops) runs at about 1/25 of the nominal dense
#: throughput, and cvxpy's canonicalization and the solver's setup cost ~0.03 s per solve (measured on CPU:
#: Clarabel on digits logistic, 10-1347 samples, and breast_cancer L1, 4-427 samples; within 2x of every point).
CONIC_SLOWDOWN, SOLVE_OVERHEAD_S = 25, 0.03


@register_backend
class ConvexBackend(Backend):
    name = "convex"
    summary = "convex inner problems solved exactly (cvxpy); hypergradients by implicit differentiation of the KKT"
    preference = 20

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        p = analysis.problem
        problems = missing_facts(analysis, REQUIRED)
        if p.distance is not None:
            problems.append(f"a distance (`{analysis.kind('distance')}`) is declared; the objective is the test "
                            "error on real data (task test_error, no distance)")
        problems += one_scenario_problems(analysis)
        if analysis.has("optimize:gradient") and p.optimize.augmentation.enabled:
            problems.append("optimize.augmentation is not supported")
        if problems:
            return False, "; ".join(problems)
        t = p.train
        return True, f"{t.loss} ({t.penalty}) is convex: solved exactly, hypergradient from its KKT conditions"

    def resolve(self, analysis: Analysis) -> dict[str, Any]:
        """Adam, lr 0.01, no augmentation (:data:`~ddspec.backends.base.HYPERGRADIENT_DEFAULTS`)."""
        return dict(HYPERGRADIENT_DEFAULTS)

    def estimate(self, analysis: Analysis) -> Estimate:
        """Per iteration: an interior-point solve on the m synthetic samples (:data:`IPM_ITERATIONS` steps of
        ~m q² flops at 1/:data:`CONIC_SLOWDOWN` of the nominal throughput, q = (d+1)m unknowns for the loss's
        m weight columns (:meth:`ddspec.spec.kernel.ConvexTrain.weight_columns`: K, or 1 or 2 for binary), plus
        :data:`SOLVE_OVERHEAD_S`) and a dense KKT solve (q³); once, the same solve on the n real training
        samples (the reference model of the ``w_rel_error`` and ``agreement`` metrics). cvxpy runs on the CPU."""
        p, info = analysis.problem, analysis.data
        d, m = math.prod(info.input_shape), analysis.n_synthetic
        q = (d + 1) * p.train.weight_columns(info)

        def solve(samples: int) -> float:
            return seconds(IPM_ITERATIONS * CONIC_SLOWDOWN * samples * q * q, "cpu") + SOLVE_OVERHEAD_S

        total = (solve(m) + seconds(q**3, "cpu")) * p.optimize.iterations + solve(info.n_train)
        memory = 8 * (4 * q * q + (info.n_train + info.n_test) * d)
        detail = (f"{p.optimize.iterations} iterations, each a conic solve with {q} unknowns on {m} samples "
                  f"and a {q}x{q} KKT solve, then one solve on the {info.n_train} real samples for the weight "
                  "metrics; float64")
        return Estimate(int(memory), total, detail)


    def extra_metrics(self, problem: Any, data: Any, x: Any, y: Any) -> dict[str, Any]:
        """W̃_S against W̃: ``w_rel_error``, and agreement and accuracies (classes) or RMSEs (real targets)."""
        from ddspec.backends.convex.run import convex_metrics

        return convex_metrics(problem, data, x, y)
