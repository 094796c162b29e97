"""Zero-order backend: distill from objective values alone (Gaussian smoothing), for inner procedures, tasks and
distances with no usable gradient.

Each outer iteration draws the scenarios ω once (fresh initialisations cycling through ``scenarios.models``, or
an estimator seed), the real batch and the inner mini-batches — common random numbers for every evaluation of the
step —, draws M directions v_l from the run's generator, and evaluates

    L(S') = R_ω[ within_i ℓ_i(f_θ(S', ω)(x_i)) ]

at the perturbed sets S' of the estimator (forward: S and S + σv_l; antithetic: S ± σv_l), S the learned tensors
(inputs held standardized, and learned targets), θ(S', ω) the inner procedure's fit on S': K steps of torch
training (``train: gradient``, run for all perturbations at once under ``torch.func.vmap`` where allowed) or a
library's fit (``train: sklearn``, capability ``estimator``; one fit per evaluation). The step follows
ĝ = (1/M) Σ_l [L(S+σv_l) − L(S)] v_l/σ or (1/M) Σ_l [L(S+σv_l) − L(S−σv_l)] v_l/(2σ) (an unbiased estimate of
∇L_σ, L_σ(S) = E_v L(S + σv)), with plain steps s₀/√(1+E) or Adam, then projects the inputs onto
``optimize.bounds``. The estimator's math is :mod:`ddspec.components.zero_order`; torch is imported by :mod:`.run`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ddspec.backends.base import DEFAULT_INNER_STEPS, Backend, Estimate, missing_facts
from ddspec.compiler.estimate import TRAIN_FACTOR, seconds
from ddspec.registry import register_backend

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: Facts the backend needs, with what to say when one is missing.
REQUIRED = (("optimize:zero_order", "optimize", "is not the zero-order optimizer"),)
#: Rough cost of one library fit (an estimator) and its outputs on the real batch: a fixed overhead plus this many
#: seconds per synthetic input value (calibrated on a decision tree on digits: 3.8 ms for 100 x 64 values).
FIT_OVERHEAD_S, FIT_S_PER_VALUE = 3e-3, 1e-7


@register_backend
class ZeroOrderBackend(Backend):
    name = "zero_order"
    summary = "Gaussian-smoothing zero-order steps on D̂ from objective values (black-box inner procedures)"
    preference = 60

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        p = analysis.problem
        problems = missing_facts(analysis, REQUIRED)
        torch_training = analysis.has("train:differentiable")
        if not (torch_training or analysis.has("train:estimator")):
            problems.append(f"the train `{analysis.kind('train')}` neither trains a network step by step nor fits "
                            "a library estimator")
        if analysis.has("distance:surrogate") or analysis.has("distance:needs_experts"):
            problems.append(f"`{p.distance.kind}` is a matching surrogate, not a distance between task outputs "
                            "(zero-order evaluates a task's loss on real data)")
        elif p.task is None:
            problems.append("no task is declared (declare task: test_error or predictions)")
        elif analysis.has("task:survival"):
            problems.append(f"task `{p.task.kind}` compares analyses of whole tables, not per-sample losses on real "
                            "data (the survival backend runs it)")
        if p.scenarios.pool is not None:
            problems.append("scenarios.pool warm-starts models between iterations, which the perturbed evaluations "
                            "of one step would have to share (remove scenarios.pool)")
        if analysis.has("risk:groups") and analysis.has("targets:real"):
            problems.append(f"the risk `{p.risk.kind}` groups the real rows of each class, and data "
                            f"`{p.data.kind}` has real-valued targets")
        if problems:
            return False, "; ".join(problems)
        fit = "K steps of torch training" if torch_training else f"each fit of {p.train.describes_model()}"
        return True, (f"task `{p.task.kind}` by value after {fit}, Gaussian smoothing "
                      f"({p.optimize.estimator}, {p.optimize.per_step()} evaluations per scenario and step)")

    def resolve(self, analysis: Analysis) -> dict[str, Any]:
        """K = 20 inner steps for torch training; the task's default distance (``kl`` for ``task: predictions``)."""
        values: dict[str, Any] = {}
        if analysis.has("train:differentiable"):
            values["train.steps"] = DEFAULT_INNER_STEPS
        distance = analysis.problem.task.default_distance() if analysis.problem.task is not None else None
        if distance is not None:
            values["distance"] = distance
        return values

    def parallel(self, analysis: Analysis) -> tuple[str, int] | None:
        """The E perturbed points of a step (M + 1 or 2M): each rank evaluates its share, for every scenario."""
        return "objective evaluations", analysis.problem.optimize.per_step()

    def estimate(self, analysis: Analysis) -> Estimate:
        """Per step: E = M + 1 or 2M evaluations per scenario, each an inner fit on the n̂ perturbed rows and the
        outputs on the real batch. Torch training: K steps of forward + backward on min(batch, n̂) rows (FLOPs from
        the model's analytic count); a library fit: :data:`FIT_OVERHEAD_S` + :data:`FIT_S_PER_VALUE` per input
        value. Memory: the data, and for batched evaluations E (or ``chunk``) copies of the model, its optimizer
        state and the activations of one step."""
        p, info = analysis.problem, analysis.data
        opt = p.optimize
        per_step = opt.per_step() * p.scenarios.inits
        evaluations = per_step * opt.iterations
        real = sum(min(opt.real_batch_per_class, n) for n in info.class_counts)
        sample = math.prod(info.input_shape)
        memory = 4 * sample * (info.n_train + info.n_test + 3 * analysis.n_synthetic)
        if analysis.has("train:differentiable"):
            models = list(p.scenarios.models) or [p.model]
            costs = [m.cost(info.input_shape, info.num_outputs) for m in models]
            params, flops, acts = (max(c[0] for c in costs), sum(c[1] for c in costs) / len(costs),
                                   max(c[2] for c in costs))
            k, batch = p.train.steps or DEFAULT_INNER_STEPS, min(p.train.batch_size, analysis.n_synthetic)
            total = evaluations * (k * TRAIN_FACTOR * flops * p.train.update_cost() * batch + flops * real)
            batched = 1 if opt.evaluations == "loop" else min(opt.chunk or opt.per_step(), opt.per_step())
            memory += 4 * batched * (4 * params + 3 * acts * max(batch, real))
            how = f"K = {k} inner steps each, " + ("looped" if batched == 1 else f"{batched} vmapped at once")
            secs = seconds(total, p.runtime.device)
            cost = f"{total:.2g} FLOPs at the nominal throughput"
        else:
            secs = evaluations * (FIT_OVERHEAD_S + FIT_S_PER_VALUE * analysis.n_synthetic * sample)
            how, cost = "one library fit each, looped", "a rough per-fit cost"
        detail = (f"{opt.iterations} iterations x {per_step} evaluations ({opt.per_step()} per scenario x "
                  f"{p.scenarios.inits} scenario(s)) = {evaluations} objective evaluations, {how}; outputs on "
                  f"{real} real samples; {cost}")
        return Estimate(int(memory), secs, detail, "set optimize.chunk, or optimize.evaluations: loop")
