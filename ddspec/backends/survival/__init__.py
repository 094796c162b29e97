"""Survival backend: a small synthetic patient table that reproduces the analyses of several sources with
intersecting columns (data ``survival``, task ``survival_analyses``).

D̂ = n̂ complete patients (every covariate of the union of the sources, a time, an event). It starts at n̂ random
training patients (drawn from the stacked sources), their missing covariates imputed by the EM-fused Bayesian
network, each event score at s = ±σ (the smoothing scale, so that perturbations flip events). Every objective
evaluation maps the learned vector S = (z, u, s) — covariates held standardized, the
standardized log time u and an event score s — to a valid table (categorical covariates rounded to their levels,
numeric ones clipped to the training range, t = exp(μ_log t + σ_log t·u) clipped likewise, event = 1[s > 0]) and
computes

    L(S) = R_ω[ weight_ω · dist_ω(I_ω(D̂(S)), I_ω(D)) ]

over the analyses ω (Kaplan–Meier curves, Cox coefficients per source, Bayesian-network conditionals). L is
piecewise constant in the times, the events and the levels (and the BN counts are counts), so there is no useful
gradient: ``optimize: zero_order`` steps along the Gaussian-smoothing estimate of ∇L_σ
(:mod:`ddspec.components.zero_order`), with the optimizer and the checkpointed loop of the run context.
After the protocol (Cox fits scored by the C-index), ``extra_metrics`` adds the survival figures of D̂ and of the
baselines at the same n̂ (:mod:`ddspec.evaluate.survival`). torch is imported by :mod:`.run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ddspec.backends.base import Backend, Estimate, missing_facts
from ddspec.registry import register_backend

if TYPE_CHECKING:
    import torch

    from ddspec.analysis.facts import Analysis

#: Facts the backend needs, with what to say when one is missing.
REQUIRED = (
    ("data:survival", "data", "is not censored survival data (data: {kind: survival})"),
    ("task:survival", "task", "is not a set of survival analyses (task: {kind: survival_analyses})"),
    ("train:survival", "train", "does not fit survival times (train: {kind: cox})"),
    ("optimize:zero_order", "optimize", "is not the zero-order optimizer (the analyses have no gradient)"),
)
#: Rough seconds per objective evaluation and synthetic patient (Cox Newton fits, KM, BN counts), measured on GBSG2.
SECONDS_PER_PATIENT = 2e-5


@register_backend
class SurvivalBackend(Backend):
    name = "survival"
    summary = "a synthetic patient table preserving Kaplan–Meier, Cox and Bayesian-network analyses (zero-order)"
    preference = 15
    cpu_only = ("its analyses (Kaplan–Meier curves, Cox fits, Bayesian-network counts) and the Cox models of the "
                "evaluation are numpy computations on the CPU")

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        problems = missing_facts(analysis, REQUIRED)
        if problems:
            return False, "; ".join(problems)
        p = analysis.problem
        return True, (f"{analysis.n_synthetic} synthetic patients, risk `{p.risk.kind}` over "
                      f"{p.task.describe_scenarios(p)}, Gaussian smoothing ({p.optimize.estimator}, "
                      f"{p.optimize.per_step()} evaluations per step)")

    def estimate(self, analysis: Analysis) -> Estimate:
        """Per step: ``optimize.per_step()`` evaluations, each every analysis on the n̂ patients (Cox Newton fits,
        Kaplan–Meier, a BN fit); memory: the data and the joint table of the network."""
        p, info = analysis.problem, analysis.data
        evaluations = p.optimize.per_step() * p.optimize.iterations
        seconds = evaluations * len(p.task.analyses) * SECONDS_PER_PATIENT * (analysis.n_synthetic + 100)
        memory = 8 * (info.n_train + info.n_test) * (info.input_shape[0] + 2) * 4
        return Estimate(memory, seconds, f"{p.optimize.iterations} iterations x {p.optimize.per_step()} evaluations "
                        f"of {len(p.task.analyses)} analyses on {analysis.n_synthetic} patients; a rough per-patient "
                        "cost")

    def extra_metrics(self, problem: Any, data: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """The survival figures of D̂ and of the baselines at the same n̂ (``survival`` in metrics.json)."""
        from ddspec.evaluate.survival import survival_report

        return {"survival": survival_report(problem, data, x, y)}
