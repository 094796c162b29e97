"""Bilevel backend: distill by differentiating through training (the direct solver of the formulation).

Each outer iteration draws the scenarios ω (``scenarios.inits`` fresh initialisations, cycling through
``scenarios.models``; for trajectory matching, an expert and a start epoch t), trains each model on D̂
with the inner procedure O (K = ``train.steps`` differentiable steps), applies the task to the trained
model, measures the distance, aggregates over ω with the risk, and steps on D̂ along

    d/dD̂  R_ω[ ℓ(θ_K(D̂, ω)) ],   ℓ = the task's loss on a real batch: the targets' loss (test_error: cross-entropy,
                                    or squared error for real-valued targets) | KL(teacher ‖ model) (predictions)
                                    | ‖θ_{t+N} − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖² (trajectory matching)

with the hypergradient of ``optimize.hypergradient`` (registry ``HYPERGRADIENTS``: unrolled — torch_func or
higher, truncated, checkpointed —, implicit, or the ridge head: the last layer in closed form). The inner steps
train with the targets' loss too. Learnable: D̂ (:class:`~ddspec.components.synthetic.set.SyntheticSet`: the
inputs, held standardized, and the targets — soft-label logits, or real-valued rows) and per-step inner
learning rates (log). With ``train.regularizers`` the inner steps (and the teacher or experts) train on
mean_i ℓ_i + Σ_r λ_r mean_i R_r,i, and the hypergradient differentiates through those regularized steps. Which
objective runs is read from capabilities: a distance with ``needs_experts`` starts
each scenario at an expert checkpoint; otherwise the task (``TASKS.build``) gives the per-sample losses, and a
risk with ``groups`` acts within each scenario on groups of the real batch. torch is imported by :mod:`.run` in
``run``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ddspec.backends.base import DEFAULT_INNER_STEPS, HYPERGRADIENT_DEFAULTS, Backend, Estimate, missing_facts
from ddspec.compiler.estimate import TRAIN_FACTOR, seconds
from ddspec.registry import register_backend
from ddspec.spec.optimize import UnrolledHypergradient

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: Facts the backend needs, with what to say when one is missing.
REQUIRED = (
    ("optimize:gradient", "optimize", "is not a gradient optimizer"),
    ("train:differentiable", "train", "is not differentiable training"),
    ("model:differentiable", "model", "is not differentiable"),
)


@register_backend
class BilevelBackend(Backend):
    name = "bilevel"
    summary = "differentiate through training: unrolled (torch.func or higher), implicit or ridge-head hypergradients"
    preference = 40

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        p = analysis.problem
        problems = missing_facts(analysis, REQUIRED)
        experts = analysis.has("distance:needs_experts")
        if analysis.has("distance:surrogate") and not experts:
            problems.append(f"`{p.distance.kind}` is a matching surrogate (the matching backend runs it)")
        if p.task is None and not experts:
            problems.append("no task is declared (declare task: test_error or predictions)")
        if analysis.has("risk:groups") and experts:
            problems.append(f"the risk `{p.risk.kind}` needs per-sample real losses, which `{p.distance.kind}` "
                            "matching has none of")
        if analysis.has("risk:groups") and analysis.has("targets:real"):
            problems.append(f"the risk `{p.risk.kind}` groups the real rows of each class, and data "
                            f"`{p.data.kind}` has real-valued targets")
        if analysis.has("optimize:gradient") and p.optimize.augmentation.enabled:
            problems.append("optimize.augmentation is not supported (set optimize.augmentation.enabled: false)")
        if experts and p.scenarios.models:
            problems.append(f"`{p.distance.kind}` matching follows experts of `model` only (leave scenarios.models "
                            "empty)")
        if problems:
            return False, "; ".join(problems)
        where = ""
        if analysis.has("risk:groups"):
            where = (f"; group-CVaR over groups of the real batch in the outer loss "
                     f"({p.risk.describe('mean', batched=False)}), scenarios averaged")
        return True, f"{self._objective(analysis)} through differentiable training{where}"

    @staticmethod
    def _objective(analysis: Analysis) -> str:
        p = analysis.problem
        if analysis.has("distance:needs_experts"):
            return f"{p.distance.kind} matching"
        return f"task `{p.task.kind}`" + (f" with distance `{p.distance.kind}`" if p.distance else "")

    def resolve(self, analysis: Analysis) -> dict[str, Any]:
        """Adam with lr 0.01 on D̂, K = 20 inner steps, unrolled torch_func hypergradients, no augmentation;
        the task's default distance (``kl`` for ``task: predictions``)."""
        values: dict[str, Any] = {
            **HYPERGRADIENT_DEFAULTS,
            "optimize.hypergradient": {"kind": "unrolled"},
            "train.steps": DEFAULT_INNER_STEPS,
        }
        distance = analysis.problem.task.default_distance() if analysis.problem.task is not None else None
        if distance is not None:
            values["distance"] = distance
        return values

    def parallel(self, analysis: Analysis) -> tuple[str, int] | None:
        """The scenarios ω of an outer step (``scenarios.inits``): each rank trains and differentiates its share."""
        return "scenarios", analysis.problem.scenarios.inits

    def estimate(self, analysis: Analysis) -> Estimate:
        """Per scenario: K inner steps of forward + backward + double backward on min(batch, N) synthetic
        samples, and the outer loss on a real batch (the hypergradient's ``scenario_flops``). Memory: the
        unroll keeps each tracked step's activations and parameter copies (its ``tracked_steps``: K; K/S + S
        with checkpointing; one for implicit and the ridge head). Training updates (inner steps, teacher, experts)
        cost ``train.update_cost()`` times a plain one (the regularizers)."""
        p, info = analysis.problem, analysis.data
        models = list(p.scenarios.models) or [p.model]
        costs = [m.cost(info.input_shape, info.num_outputs) for m in models]
        params, flops, acts = max(c[0] for c in costs), sum(c[1] for c in costs) / len(costs), max(c[2] for c in costs)
        k = p.train.steps or DEFAULT_INNER_STEPS
        batch = min(p.train.batch_size, analysis.n_synthetic)
        experts = analysis.has("distance:needs_experts")
        real = 0 if experts else sum(min(p.optimize.real_batch_per_class, n) for n in info.class_counts)
        hyper = p.optimize.hypergradient or UnrolledHypergradient()
        tracked, how = hyper.tracked_steps(k)
        if hyper.normalize:
            how += ", each scenario's hypergradient normalized to norm 1"
        update = TRAIN_FACTOR * flops * p.train.update_cost()  # one (regularized) training update per sample
        per_scenario = hyper.scenario_flops(k, update * batch, TRAIN_FACTOR * flops * real)
        total = per_scenario * p.scenarios.inits * p.optimize.iterations
        step_bytes = 4 * (3 * acts * batch + 4 * params)
        sample = math.prod(info.input_shape)
        memory = tracked * step_bytes + 4 * (acts * real + sample * (info.n_train + info.n_test + 4 * analysis.n_synthetic))
        target = f"outer loss on {real} real samples"
        if experts:
            more_flops, more_bytes, prepare = p.distance.preparation(info, update, params)
            memory += more_bytes
            target = "outer loss: distance to the expert's parameters"
        else:
            more_flops, prepare = p.task.preparation(info, update)
        total += more_flops
        prepare = f"; {prepare}" if prepare else ""
        regularized = p.train.active_regularizers()
        if regularized:
            prepare += "; training loss regularized: " + ", ".join(r.describe() for r in regularized)
        detail = (
            f"{p.optimize.iterations} iterations x {p.scenarios.inits} scenario(s), each K = {k} inner steps on "
            f"{batch} synthetic samples, {how}, {target}{prepare}; {total:.2g} FLOPs at the nominal throughput"
        )
        advice = "lower train.steps, or set optimize.hypergradient to {kind: unrolled, checkpoint_every: S} " \
                 "(or truncate: T), or {kind: implicit} (memory independent of K)"
        return Estimate(int(memory), seconds(total, p.runtime.device), detail, advice)

