"""Bilevel backend: distill by differentiating through training (the direct solver of the formulation).

Each outer iteration draws the scenarios ω (``scenarios.inits`` fresh initialisations, cycling through
``scenarios.models``; for trajectory matching, an expert and a start epoch t), trains each model on D̂
with the inner procedure O (K = ``train.steps`` differentiable steps), applies the task to the trained
model, measures the distance, aggregates over ω with the risk, and steps on D̂ along

    d/dD̂  R_ω[ ℓ(θ_K(D̂, ω)) ],   ℓ = CE on a real batch (test_error) | KL(teacher ‖ model) (predictions)
                                    | ‖θ_{t+N} − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖² (trajectory)

with the hypergradient of ``optimize.hypergradient`` (unrolled — torch_func or higher, truncated,
checkpointed — implicit, or the ridge head: the last layer in closed form). Learnable: the inputs
(held standardized, as in matching), soft labels (logits) and per-step inner learning rates (log).
torch is imported by :mod:`.run` in ``run``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ddspec.backends.base import Backend, Distilled, Estimate
from ddspec.compiler.estimate import TRAIN_FACTOR, seconds
from ddspec.registry import register_backend

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis
    from ddspec.runtime.context import RunContext

#: Outer optimizer defaults: Adam on standardized inputs, label logits and log-lrs.
DEFAULT_OPTIMIZER, DEFAULT_LR = "adam", 0.01
#: Risks over the scenarios' loss vector that this backend aggregates.
SCENARIO_RISKS = ("mean", "max", "cvar", "worst_case")
#: Inner steps K when the spec leaves train.steps unset (test_error / predictions; trajectory: N).
DEFAULT_STEPS = 20


@register_backend
class BilevelBackend(Backend):
    name = "bilevel"
    summary = "differentiate through training: unrolled (torch.func or higher), implicit or ridge-head hypergradients"
    preference = 40

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        p = analysis.problem
        problems = []
        if not analysis.has("optimize:gradient"):
            problems.append(f"the optimize `{analysis.kind('optimize')}` is not a gradient optimizer")
        if not analysis.has("train:differentiable"):
            problems.append(f"the train `{analysis.kind('train')}` is not differentiable training")
        if not analysis.has("model:differentiable"):
            problems.append(f"the model `{analysis.kind('model')}` is not differentiable")
        trajectory = analysis.kind("distance") == "trajectory"
        if analysis.has("distance:surrogate") and not trajectory:
            problems.append(f"`{p.distance.kind}` is a matching surrogate (the matching backend runs it)")
        if p.task is None and not trajectory:
            problems.append("no task is declared (declare task: test_error or predictions)")
        if analysis.kind("risk") not in (*SCENARIO_RISKS, "group_cvar"):
            problems.append(f"the risk `{analysis.kind('risk')}` is not supported here "
                            f"({', '.join(SCENARIO_RISKS)} over scenarios, group_cvar over groups of real data)")
        if analysis.kind("risk") == "group_cvar" and trajectory:
            problems.append("group_cvar needs per-sample real losses, which trajectory matching has none of")
        if analysis.has("optimize:gradient") and p.optimize.augmentation.enabled:
            problems.append("optimize.augmentation is not supported (set optimize.augmentation.enabled: false)")
        if trajectory and p.scenarios.models:
            problems.append("trajectory matching follows experts of `model` only (leave scenarios.models empty)")
        if problems:
            return False, "; ".join(problems)
        where = ""
        if analysis.kind("risk") == "group_cvar":
            r = p.risk
            where = (f"; group-CVaR over groups of the real batch in the outer loss (α={r.alpha:g}, "
                     f"{r.mean_weight:g}·mean + {r.max_weight:g}·max over groups + {r.ce_weight:g}·mean), "
                     "scenarios averaged")
        return True, f"{self._objective(p)} through differentiable training{where}"

    @staticmethod
    def _objective(p: Any) -> str:
        if p.distance is not None and p.distance.kind == "trajectory":
            return "trajectory matching"
        return f"task `{p.task.kind}`" + (f" with distance `{p.distance.kind}`" if p.distance else "")

    def resolve(self, analysis: Analysis) -> dict[str, Any]:
        """Adam with lr 0.01 on D̂, K = 20 inner steps, unrolled torch_func hypergradients, no augmentation;
        ``kl`` as the distance of ``task: predictions``."""
        values: dict[str, Any] = {
            "optimize.optimizer": DEFAULT_OPTIMIZER,
            "optimize.lr": DEFAULT_LR,
            "optimize.augmentation.enabled": False,
            "optimize.hypergradient": {"kind": "unrolled"},
            "train.steps": DEFAULT_STEPS,
        }
        if analysis.kind("task") == "predictions":
            values["distance"] = {"kind": "kl"}
        return values

    def estimate(self, analysis: Analysis) -> Estimate:
        """Per scenario: K inner steps of forward + backward + double backward on min(batch, N) synthetic
        samples, and the outer loss on a real batch. Memory: the unroll keeps each tracked step's
        activations and parameter copies (K of them; K/S + S with checkpointing; one for implicit)."""
        p, info = analysis.problem, analysis.data
        models = list(p.scenarios.models) or [p.model]
        costs = [m.cost(info.input_shape, info.num_classes) for m in models]
        params, flops, acts = max(c[0] for c in costs), sum(c[1] for c in costs) / len(costs), max(c[2] for c in costs)
        k = p.train.steps or DEFAULT_STEPS
        batch = min(p.train.batch_size, analysis.n_synthetic)
        trajectory = p.distance is not None and p.distance.kind == "trajectory"
        real = 0 if trajectory else sum(min(p.optimize.real_batch_per_class, n) for n in info.class_counts)
        hyper = p.optimize.hypergradient
        kind = hyper.kind if hyper is not None else "unrolled"
        tracked, how = self._tracked_steps(hyper, k)
        if hyper is not None and hyper.normalize:
            how += ", each scenario's hypergradient normalized to norm 1"
        step_flops = 2 * TRAIN_FACTOR * flops * batch
        outer = TRAIN_FACTOR * flops * real
        if kind == "implicit":
            per_scenario = k * TRAIN_FACTOR * flops * batch + outer + 2 * hyper.iterations * step_flops
        elif kind == "ridge_head":
            per_scenario = (k + 1) * TRAIN_FACTOR * flops * batch + outer
        else:
            checkpointed = hyper is not None and hyper.checkpoint_every is not None
            per_scenario = k * step_flops * (2 if checkpointed else 1) + outer
        total = per_scenario * p.scenarios.inits * p.optimize.iterations
        step_bytes = 4 * (3 * acts * batch + 4 * params)
        sample = math.prod(info.input_shape)
        memory = tracked * step_bytes + 4 * (acts * real + sample * (info.n_train + info.n_test + 4 * analysis.n_synthetic))
        target = f"outer loss on {real} real samples"
        prepare = ""
        if trajectory:
            d = p.distance
            total += d.experts * d.expert_epochs * info.n_train * TRAIN_FACTOR * flops
            memory += 4 * params * d.experts * (d.expert_epochs + 1)
            target = "outer loss: distance to the expert's parameters"
            prepare = f"; first {d.experts} experts x {d.expert_epochs} epochs on the real data"
        elif p.task is not None and p.task.kind == "predictions":
            total += p.task.teacher_epochs * info.n_train * TRAIN_FACTOR * flops
            prepare = f"; first a teacher, {p.task.teacher_epochs} epochs on the real data"
        detail = (
            f"{p.optimize.iterations} iterations x {p.scenarios.inits} scenario(s), each K = {k} inner steps on "
            f"{batch} synthetic samples, {how}, {target}{prepare}; {total:.2g} FLOPs at the nominal throughput"
        )
        advice = "lower train.steps, or set optimize.hypergradient to {kind: unrolled, checkpoint_every: S} " \
                 "(or truncate: T), or {kind: implicit} (memory independent of K)"
        return Estimate(int(memory), seconds(total, p.runtime.device), detail, advice)

    @staticmethod
    def _tracked_steps(hyper: Any, k: int) -> tuple[int, str]:
        """(inner steps whose activations are alive at once, how the hypergradient is taken)."""
        if hyper is None:
            return k, "unrolled (torch_func)"
        if hyper.kind == "implicit":
            return 1, f"implicit ({hyper.solver}, {hyper.iterations} Hessian-vector products)"
        if hyper.kind == "ridge_head":
            return 1, (f"ridge head (last layer in closed form, λ = {hyper.ridge:g}, target scale {hyper.target_scale:g}; "
                       "K steps without a graph)")
        steps = min(hyper.truncate or k, k)
        how = f"unrolled ({hyper.engine}" + (f", last {steps} steps tracked" if hyper.truncate else "")
        if hyper.checkpoint_every:
            s = hyper.checkpoint_every
            return math.ceil(steps / s) + min(s, steps), how + f", checkpoint every {s} steps)"
        return steps, how + ")"

    def run(self, ctx: RunContext) -> Distilled:
        from ddspec.backends.bilevel.run import distill

        return distill(ctx)
