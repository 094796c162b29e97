"""The torch side of the bilevel backend (see :mod:`ddspec.backends.bilevel` for the math).

Randomness: the real batch comes from ``ctx.generator``; each scenario's initialisation, inner mini-batches and
expert draw from its own seeding (run seed, iteration, scenario: ``ctx.scenario``), so scenarios split across
torchrun's ranks draw what one process draws; the loop checkpoints the generator and the global RNG with the
learned tensors and their optimizer, so a resumed run continues bit-for-bit. Teachers and experts are cached in the run
directory (:mod:`ddspec.components.training.experts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ddspec.backends.base import Distilled, OuterGradient, stepped_gradient
from ddspec.components.objectives.risks import RiskMeasure
from ddspec.components.objectives.scenarios import Objective, inner_batches
from ddspec.components.synthetic.set import SyntheticSet
from ddspec.components.training.regularizers import Regularizer, build_regularizers
from ddspec.components.training.unroll import Hypergradient, InnerData, InnerRecipe, Outer, Tensors, unit_norm
from ddspec.errors import SpecError
from ddspec.registry import HYPERGRADIENTS, RISKS
from ddspec.runtime.context import RunContext


@dataclass
class Learned:
    """What the outer optimizer learns: the synthetic set D̂ and, with ``train.learn_lr``, the inner procedure's
    per-step log-lrs (not part of D̂: they are saved as the extra ``lr``); ``loss`` is the targets' loss the inner
    steps train with, ``regularizers`` the built ``train.regularizers`` added to it."""

    synthetic: SyntheticSet
    log_lr: torch.Tensor | None
    loss: Callable[..., torch.Tensor]
    regularizers: list[Regularizer] = field(default_factory=list)

    @classmethod
    def create(cls, ctx: RunContext) -> Learned:
        p = ctx.problem
        synthetic = SyntheticSet.create(p, ctx.data, ctx.generator, ctx.dtype)
        log_lr = None
        if p.train.learn_lr:
            log_lr = torch.full((p.train.steps,), math.log(p.train.lr), device=synthetic.z.device).requires_grad_(True)
        return cls(synthetic, log_lr, ctx.data.targets.loss, build_regularizers(p.train, ctx.data))

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """D̂'s learned leaves, then ``log_lr``."""
        return {**self.synthetic.tensors, **({} if self.log_lr is None else {"log_lr": self.log_lr})}

    def inner_data(self, lr: float, steps: int, batches: list[torch.Tensor | None]) -> InnerData:
        """D̂ as the unroll sees it (differentiable w.r.t. the learned tensors), trained on with the targets' loss."""
        lrs = torch.full((steps,), lr, device=self.synthetic.z.device) if self.log_lr is None else self.log_lr.exp()
        return InnerData(self.synthetic.x, self.synthetic.targets(), lrs, batches, self.loss, self.regularizers)

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


def outer_step(ctx: RunContext, learned: Learned, objective: Objective, hyper: Hypergradient, risk: RiskMeasure,
               iteration: int) -> float:
    """One outer iteration: per scenario s (this rank's, under torchrun) the loss ℓ_s and hypergradient g_s with
    respect to D̂'s leaves, each in its own seeding (``ctx.scenario``); R_ω's weights w_s = ∂R/∂ℓ_s combine them
    into Σ_s w_s g_s (``ctx.ranks.risk_gradient``: gathered from every rank in scenario order); the chain rule to
    the learned tensors runs once, accumulating into their ``.grad``. Returns R_ω(ℓ)."""
    p = ctx.problem
    synthetic, labels = learned.synthetic.x.detach(), learned.synthetic.y
    batch = objective.batch()

    def scenario(s: int) -> tuple[float, torch.Tensor]:
        with ctx.scenario(iteration, s) as generator:
            model, outer, params0 = objective.scenario(iteration, s, batch, synthetic, labels, generator)
            data = learned.inner_data(p.train.lr, p.train.steps,
                                      inner_batches(ctx, len(synthetic), p.train.steps, generator))
            loss, g = hyper(model, data, outer, params0)
        return loss, torch.cat([gi.reshape(-1) for gi in g])

    total, combined, _ = ctx.ranks.risk_gradient(p.scenarios.inits, scenario, risk.over_scenarios, "a bilevel step")
    objective.advance()
    leaves = learned.inner_data(p.train.lr, p.train.steps, []).leaves()
    torch.autograd.backward(leaves, [part.reshape(leaf.shape) for leaf, part in
                                     zip(leaves, combined.split([leaf.numel() for leaf in leaves]))])
    return total


def setup(ctx: RunContext) -> tuple[Learned, Hypergradient, RiskMeasure, Objective]:
    """What a run steps with: D̂ (and the inner lrs), the hypergradient, the risk and the scenarios' objective."""
    p = ctx.problem
    learned = Learned.create(ctx)
    risk = RISKS.build(p.risk)
    objective = Objective(ctx, risk, learned.synthetic.strata)
    if objective.pool is not None and ctx.ranks.active:
        raise SpecError.one("DISTRIBUTED_POOL", "scenarios.pool", "a model pool keeps each scenario's model on the "
                            "process that trained it, so its scenarios cannot be split across ranks",
                            "remove scenarios.pool (fresh initialisations split across ranks), or run one process")
    return learned, hypergradient_fn(p, InnerRecipe.of(p.train)), risk, objective


def outer_gradient(ctx: RunContext) -> OuterGradient:
    """R_ω of the first iteration's scenarios and its hypergradient, by :func:`outer_step` (the run's step); every
    evaluation replays the same scenarios, batches and model-pool state."""
    learned, hyper, risk, objective = setup(ctx)
    replay = ctx.replay(*([] if objective.pool is None else [objective.pool]))
    return stepped_gradient(learned.tensors, replay, lambda: outer_step(ctx, learned, objective, hyper, risk, 0),
                            approximation=ctx.problem.optimize.hypergradient.approximation())


def distill(ctx: RunContext) -> Distilled:
    """Run ``optimize.iterations`` outer steps from the initial synthetic set."""
    p = ctx.problem
    learned, hyper, risk, objective = setup(ctx)
    t = p.train
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
