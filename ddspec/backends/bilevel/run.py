"""The torch side of the bilevel backend (see :mod:`ddspec.backends.bilevel` for the math).

Randomness: real batches, inner mini-batches and expert draws come from ``ctx.generator``, model
initialisations from the global torch RNG; the loop checkpoints both with the learned tensors and
their optimizer, so a resumed run continues bit-for-bit. Teachers and experts are cached in the run
directory (:mod:`ddspec.components.training.experts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ddspec.backends.base import Distilled
from ddspec.components.objectives.risks import RiskMeasure
from ddspec.components.synthetic.set import SyntheticSet
from ddspec.components.training.model_pool import ModelPool, pool_slots
from ddspec.components.training.unroll import Hypergradient, InnerData, InnerRecipe, Outer, Tensors, unit_norm
from ddspec.registry import DISTANCES, GROUPS, HYPERGRADIENTS, RISKS, TASKS
from ddspec.runtime.context import RunContext


@dataclass
class Learned:
    """What the outer optimizer learns: the synthetic set D̂ and, with ``train.learn_lr``, the inner procedure's
    per-step log-lrs (not part of D̂: they are saved as the extra ``lr``); ``loss`` is the targets' loss the inner
    steps train with."""

    synthetic: SyntheticSet
    log_lr: torch.Tensor | None
    loss: Callable[..., torch.Tensor]

    @classmethod
    def create(cls, ctx: RunContext) -> Learned:
        p = ctx.problem
        synthetic = SyntheticSet.create(p, ctx.data, ctx.generator)
        log_lr = None
        if p.train.learn_lr:
            log_lr = torch.full((p.train.steps,), math.log(p.train.lr), device=synthetic.z.device).requires_grad_(True)
        return cls(synthetic, log_lr, ctx.data.targets.loss)

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """D̂'s learned leaves, then ``log_lr``."""
        return {**self.synthetic.tensors, **({} if self.log_lr is None else {"log_lr": self.log_lr})}

    def inner_data(self, lr: float, steps: int, batches: list[torch.Tensor | None]) -> InnerData:
        """D̂ as the unroll sees it (differentiable w.r.t. the learned tensors), trained on with the targets' loss."""
        lrs = torch.full((steps,), lr, device=self.synthetic.z.device) if self.log_lr is None else self.log_lr.exp()
        return InnerData(self.synthetic.x, self.synthetic.targets(), lrs, batches, self.loss)

    def result(self) -> Distilled:
        x, y = self.synthetic.result()
        extras = {} if self.log_lr is None else {"lr": self.log_lr.detach().exp()}
        return Distilled(x, y, extras)


def hypergradient_fn(problem: Any, recipe: InnerRecipe) -> Hypergradient:
    """(model, data, outer, params0) → (loss, dL/d data.leaves()) as ``optimize.hypergradient`` declares (divided
    by its norm with ``normalize``)."""
    h = problem.optimize.hypergradient
    hyper = HYPERGRADIENTS.build(h, recipe)
    if not h.normalize:
        return hyper

    def normalized(model: nn.Module, data: InnerData, outer: Outer, params0: Tensors | None) -> tuple[float, Tensors]:
        loss, grads = hyper(model, data, outer, params0)
        return loss, unit_norm(grads)
    return normalized


class Objective:
    """Draws the scenarios of one outer iteration and builds, for each, (model, outer loss, θ_0)."""

    def __init__(self, ctx: RunContext, risk: RiskMeasure, strata: list[int]) -> None:
        self.ctx = ctx
        p = ctx.problem
        self.risk = risk
        self.groups = GROUPS.build(p.risk.groups, ctx.data) if risk.grouped else None
        #: The strata (classes) that have synthetic rows: a grouped risk's real batch comes from these only.
        self.strata = strata
        pool, specs = p.scenarios.pool, ctx.scenario_models()
        self.pool = None if pool is None else ModelPool(lambda m: ctx.new_model(specs[m % len(specs)]), pool.size,
                                                         pool.max_steps)
        self.experts = self.task = None
        if ctx.analysis.has("distance:needs_experts"):
            self.experts = DISTANCES.build(p.distance, ctx)
            ctx.prepare_seconds = self.experts.prepare_seconds
        else:
            self.task = TASKS.build(p.task, ctx)
            ctx.prepare_seconds = self.task.prepare_seconds

    def within(self, rows: torch.Tensor, model: nn.Module, synthetic: torch.Tensor, labels: torch.Tensor
               ) -> Callable[[torch.Tensor], torch.Tensor]:
        """How per-sample real losses become ℓ: the risk's ``within`` (their mean), with, for a grouped risk, the
        groups of the real rows (fixed, or assigned from the synthetic set and ``model`` at its initialisation)."""
        if self.groups is None:
            return self.risk.within
        groups, count = self.groups.of_rows(self.ctx.data, rows, synthetic, labels, model)
        return lambda losses: self.risk.within(losses, groups, count)

    def real_rows(self) -> torch.Tensor:
        """Training-set indices of the real batch the task is measured on: ``optimize.real_batch_per_class`` random
        rows of every stratum (``ctx.real_batch``); for a grouped risk, of every stratum with synthetic rows only
        (the groups of a real row are formed from the synthetic points of its class, as in matching). When every
        stratum has synthetic rows, both draw the same rows."""
        per_stratum = self.ctx.problem.optimize.real_batch_per_class
        if self.groups is None:
            return self.ctx.real_batch(per_stratum)
        indices = self.ctx.data.strata()
        return torch.cat([self.ctx.sample_real(indices[c], per_stratum) for c in self.strata])

    def scenarios(self, iteration: int, synthetic: torch.Tensor, labels: torch.Tensor
                  ) -> list[tuple[nn.Module, Outer, Tensors | None]]:
        """(model, outer loss, θ_0 or None) per scenario; ``synthetic`` / ``labels`` (class indices) group the
        real batch for a grouped risk."""
        ctx, p = self.ctx, self.ctx.problem
        specs, inits = ctx.scenario_models(), p.scenarios.inits
        out = []
        if self.task is not None:
            rows = self.real_rows()
            xr = ctx.data.x_train[rows]
            per_sample = self.task.per_sample(xr, ctx.data.y_train[rows])
        slots = None if self.pool is None else pool_slots(iteration, inits, len(self.pool))
        for s in range(inits):
            if slots is None:
                model, params0 = ctx.new_model(specs[(iteration * inits + s) % len(specs)]), None
            else:
                model, params0 = self.pool.start(slots[s])
            if self.experts is not None:  # (never with a pool: POOL_UNUSED)
                out.append((model, *self.experts.draw(ctx.generator)))
                continue
            outer = task_loss(model, xr, per_sample, self.within(rows, model, synthetic, labels))
            out.append((model, outer if slots is None else self.pool.record(slots[s], outer), params0))
        return out

    def advance(self) -> None:
        """After an outer iteration: the pool models used in it keep their trained parameters."""
        if self.pool is not None:
            self.pool.advance(self.ctx.problem.train.steps)


def task_loss(model: nn.Module, x: torch.Tensor, per_sample: Callable[[torch.Tensor], torch.Tensor],
              within: Callable[[torch.Tensor], torch.Tensor]) -> Outer:
    """ℓ(θ) = within_i ℓ_i(f_θ(x_i)) on the real batch x."""
    names = [n for n, _ in model.named_parameters()]
    return lambda params: within(per_sample(functional_call(model, dict(zip(names, params)), (x,))))


def inner_batches(ctx: RunContext, n: int, steps: int) -> list[torch.Tensor | None]:
    """Each inner step's mini-batch of ``train.batch_size`` synthetic rows (None: the whole set)."""
    size = ctx.problem.train.batch_size
    if size >= n:
        return [None] * steps
    return [torch.randperm(n, generator=ctx.generator)[:size].to(ctx.device) for _ in range(steps)]


def outer_step(ctx: RunContext, learned: Learned, objective: Objective, hyper: Hypergradient, risk: RiskMeasure,
               iteration: int) -> float:
    """One outer iteration: per scenario the loss and hypergradient; R_ω's weights w_s = ∂R/∂ℓ_s combine
    them; the chain rule to the learned tensors runs once. Returns R_ω(ℓ)."""
    p = ctx.problem
    losses, grads = [], []
    synthetic = learned.synthetic.x.detach()
    for model, outer, params0 in objective.scenarios(iteration, synthetic, learned.synthetic.y):
        data = learned.inner_data(p.train.lr, p.train.steps, inner_batches(ctx, len(synthetic), p.train.steps))
        loss, g = hyper(model, data, outer, params0)
        losses.append(loss)
        grads.append((data, g))
    objective.advance()
    values = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    total = risk.over_scenarios(values)
    (weights,) = torch.autograd.grad(total, values)
    for (data, g), w in zip(grads, weights.tolist()):
        if w != 0.0:
            torch.autograd.backward(data.leaves(), [w * gi for gi in g])
    return float(total.detach())


def distill(ctx: RunContext) -> Distilled:
    """Run ``optimize.iterations`` outer steps from the initial synthetic set."""
    p = ctx.problem
    learned = Learned.create(ctx)
    t = p.train
    hyper = hypergradient_fn(p, InnerRecipe.of(t))
    risk = RISKS.build(p.risk)
    objective = Objective(ctx, risk, learned.synthetic.strata)
    opt = p.optimize
    fix = f"lower optimize.lr (now {opt.lr:g}) or train.lr (now {t.lr:g})"
    pool = {} if objective.pool is None else {"pool": objective.pool}
    outer_opt, loop = ctx.outer(learned.tensors, f"bilevel ({p.optimize.hypergradient.kind})", fix, pool)
    for it in loop:
        outer_opt.zero_grad()
        loss = outer_step(ctx, learned, objective, hyper, risk, it)
        outer_opt.step()
        loop.record(it, loss=loss)
        loop.check_finite(it, **learned.tensors)
    return learned.result()
