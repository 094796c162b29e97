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
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddspec.backends.base import Distilled
from ddspec.components.training.experts import expert_trajectories, teacher
from ddspec.components.objectives.groups import fixed_groups, real_row_groups
from ddspec.components.training.implicit import implicit_hypergradient
from ddspec.components.synthetic.init import init_synthetic
from ddspec.components.training.model_pool import ModelPool, pool_slots
from ddspec.components.training.optimizers import make_optimizer
from ddspec.components.synthetic.set import channel_stats, label_logits
from ddspec.components.training.ridge_head import ridge_head_hypergradient
from ddspec.components.objectives.risks import group_objective
from ddspec.components.training.unroll import (
    InnerData,
    InnerRecipe,
    Outer,
    Tensors,
    checkpointed_hypergradient,
    unit_norm,
    unrolled_hypergradient,
)
from ddspec.registry import RISKS
from ddspec.runtime.context import RunContext
from ddspec.spec.risk import MeanRisk


@dataclass
class Learned:
    """The learned tensors: standardized inputs z (x = μ + σ z), label logits (or None: fixed labels y),
    log inner lrs (or None: the fixed ``train.lr``)."""

    z: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor | None
    log_lr: torch.Tensor | None

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"x": self.z, "labels": self.logits, "log_lr": self.log_lr}
        return {k: v for k, v in named.items() if v is not None}

    def inner_data(self, lr: float, steps: int, batches: list[torch.Tensor | None]) -> InnerData:
        """D̂ as the unroll sees it (differentiable w.r.t. the learned tensors)."""
        targets = self.y if self.logits is None else torch.softmax(self.logits, dim=1)
        lrs = torch.full((steps,), lr, device=self.z.device) if self.log_lr is None else self.log_lr.exp()
        return InnerData(self.mean + self.std * self.z, targets, lrs, batches)

    def result(self) -> Distilled:
        with torch.no_grad():
            x = self.mean + self.std * self.z
            y = self.y if self.logits is None else torch.softmax(self.logits, dim=1)
            extras = {} if self.log_lr is None else {"lr": self.log_lr.exp()}
        return Distilled(x.clone(), y.clone(), extras)


def create(ctx: RunContext) -> Learned:
    p = ctx.problem
    x, y = init_synthetic(p, ctx.data, ctx.generator)
    mean, std = channel_stats(ctx.data.x_train)
    logits = label_logits(y, ctx.data.num_classes) if p.synthetic.learn_labels else None
    log_lr = None
    if p.train.learn_lr:
        log_lr = torch.full((p.train.steps,), math.log(p.train.lr), device=x.device).requires_grad_(True)
    return Learned(((x - mean) / std).detach().requires_grad_(True), mean, std, y, logits, log_lr)


def hypergradient_fn(problem: Any, recipe: InnerRecipe) -> Callable[..., tuple[float, Tensors]]:
    """(model, data, outer, params0) → (loss, dL/d data.leaves()) as ``optimize.hypergradient`` declares (divided
    by its norm with ``normalize``)."""
    h = problem.optimize.hypergradient
    hyper = _raw_hypergradient_fn(h, recipe)
    if not h.normalize:
        return hyper

    def normalized(model: nn.Module, data: InnerData, outer: Outer, params0: Tensors | None) -> tuple[float, Tensors]:
        loss, grads = hyper(model, data, outer, params0)
        return loss, unit_norm(grads)
    return normalized


def _raw_hypergradient_fn(h: Any, recipe: InnerRecipe) -> Callable[..., tuple[float, Tensors]]:
    if h.kind == "ridge_head":
        return lambda model, data, outer, params0: ridge_head_hypergradient(model, data, recipe, outer, h.ridge,
                                                                                 h.target_scale, params0)
    if h.kind == "implicit":
        return lambda model, data, outer, params0: implicit_hypergradient(
            model, data, recipe, outer, h.solver, h.iterations, h.damping, h.neumann_step, params0)
    track_from = max(recipe.steps - h.truncate, 0) if h.truncate else 0
    if h.checkpoint_every:
        return lambda model, data, outer, params0: checkpointed_hypergradient(
            model, data, recipe, outer, h.checkpoint_every, track_from, params0)
    return lambda model, data, outer, params0: unrolled_hypergradient(
        model, data, recipe, outer, h.engine, track_from, params0)


Reduce = Callable[[torch.Tensor], torch.Tensor]


def real_rows(ctx: RunContext) -> torch.Tensor:
    """Indices of ``optimize.real_batch_per_class`` random real samples of every class."""
    return torch.cat([ctx.sample_real(idx, ctx.problem.optimize.real_batch_per_class)
                      for idx in ctx.data.strata()])


def predictions_loss(model: nn.Module, names: list[str], xr: torch.Tensor, teacher_logp: torch.Tensor,
                     temperature: float, reduce: Reduce) -> Outer:
    """ℓ(θ) = reduce_i KL(p_teacher(x_i) ‖ p_θ(x_i)) on the real batch, both softmaxes at ``temperature``."""
    def outer(params: Tensors) -> torch.Tensor:
        logp = F.log_softmax(functional_call(model, dict(zip(names, params)), (xr,)) / temperature, dim=1)
        return reduce(F.kl_div(logp, teacher_logp, log_target=True, reduction="none").sum(1))
    return outer


def test_error_loss(model: nn.Module, names: list[str], xr: torch.Tensor, yr: torch.Tensor, reduce: Reduce) -> Outer:
    """ℓ(θ) = reduce_i CE(f_θ(x_i), y_i) on the real batch."""
    return lambda params: reduce(F.cross_entropy(functional_call(model, dict(zip(names, params)), (xr,)), yr,
                                                 reduction="none"))


def trajectory_loss(start: Tensors, target: Tensors) -> Outer:
    """ℓ(θ) = ‖θ − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²."""
    norm = sum(((s - t) ** 2).sum() for s, t in zip(start, target))
    return lambda params: sum(((p - t) ** 2).sum() for p, t in zip(params, target)) / norm


class Objective:
    """Draws the scenarios of one outer iteration and builds, for each, (model, outer loss, θ_0)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        p = ctx.problem
        self.trajectory = p.distance is not None and p.distance.kind == "trajectory"
        self.sample_groups, self.num_groups = fixed_groups(p, ctx.data)
        self.teacher = None
        pool, specs = p.scenarios.pool, ctx.scenario_models()
        self.pool = None if pool is None else ModelPool(lambda m: ctx.new_model(specs[m % len(specs)]), pool.size,
                                                         pool.max_steps)
        if self.trajectory:
            self.experts, ctx.prepare_seconds = expert_trajectories(ctx)
        elif p.task.kind == "predictions":
            self.teacher, ctx.prepare_seconds = teacher(ctx)

    def reducer(self, rows: torch.Tensor, model: nn.Module, synthetic: torch.Tensor, labels: torch.Tensor) -> Reduce:
        """How per-sample real losses become ℓ: their mean, or for risk ``group_cvar`` the group objective over
        the groups of the real rows (fixed groups, or the nearest synthetic sample of the class in input space or
        in ``model``'s embedding at its initialisation)."""
        risk = self.ctx.problem.risk
        if risk.kind != "group_cvar":
            return torch.mean
        groups, count = real_row_groups(risk.groups, self.ctx.data, rows, (self.sample_groups, self.num_groups),
                                        synthetic, labels, model)
        return lambda losses: group_objective(losses, groups, count, risk)

    def scenarios(self, iteration: int, synthetic: torch.Tensor, labels: torch.Tensor
                  ) -> list[tuple[nn.Module, Outer, Tensors | None]]:
        """(model, outer loss, θ_0 or None) per scenario; ``synthetic`` / ``labels`` (class indices) group the
        real batch for risk ``group_cvar``."""
        ctx, p = self.ctx, self.ctx.problem
        specs, inits = ctx.scenario_models(), p.scenarios.inits
        out = []
        if not self.trajectory:
            rows = real_rows(ctx)
            xr, yr = ctx.data.x_train[rows], ctx.data.y_train[rows]
            teacher_logp = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logp = F.log_softmax(self.teacher(xr) / p.distance.temperature, dim=1)
        slots = None if self.pool is None else pool_slots(iteration, inits, len(self.pool))
        for s in range(inits):
            if slots is None:
                model, params0 = ctx.new_model(specs[(iteration * inits + s) % len(specs)]), None
            else:
                model, params0 = self.pool.start(slots[s])
            if self.trajectory:  # (never with a pool: POOL_UNUSED)
                out.append((model, *self._expert_start()))
                continue
            names = [n for n, _ in model.named_parameters()]
            reduce = self.reducer(rows, model, synthetic, labels)
            if teacher_logp is not None:
                outer = predictions_loss(model, names, xr, teacher_logp, p.distance.temperature, reduce)
            else:
                outer = test_error_loss(model, names, xr, yr, reduce)
            out.append((model, outer if slots is None else self.pool.record(slots[s], outer), params0))
        return out

    def advance(self) -> None:
        """After an outer iteration: the pool models used in it keep their trained parameters."""
        if self.pool is not None:
            self.pool.advance(self.ctx.problem.train.steps)

    def _expert_start(self) -> tuple[Outer, Tensors]:
        d, g = self.ctx.problem.distance, self.ctx.generator
        e = int(torch.randint(len(self.experts), (), generator=g))
        t = int(torch.randint(min(d.max_start_epoch, d.expert_epochs - d.expert_span) + 1, (), generator=g))
        start, target = self.experts[e][t], self.experts[e][t + d.expert_span]
        return trajectory_loss(start, target), start


def inner_batches(ctx: RunContext, n: int, steps: int) -> list[torch.Tensor | None]:
    """Each inner step's mini-batch of ``train.batch_size`` synthetic rows (None: the whole set)."""
    size = ctx.problem.train.batch_size
    if size >= n:
        return [None] * steps
    return [torch.randperm(n, generator=ctx.generator)[:size].to(ctx.device) for _ in range(steps)]


def outer_step(ctx: RunContext, learned: Learned, objective: Objective, hyper: Callable[..., Any],
               risk: Callable[[torch.Tensor], torch.Tensor], iteration: int) -> float:
    """One outer iteration: per scenario the loss and hypergradient; R_ω's weights w_s = ∂R/∂ℓ_s combine
    them; the chain rule to the learned tensors runs once. Returns R_ω(ℓ)."""
    p = ctx.problem
    losses, grads = [], []
    synthetic = (learned.mean + learned.std * learned.z).detach()
    for model, outer, params0 in objective.scenarios(iteration, synthetic, learned.y):
        data = learned.inner_data(p.train.lr, p.train.steps, inner_batches(ctx, len(learned.z), p.train.steps))
        loss, g = hyper(model, data, outer, params0)
        losses.append(loss)
        grads.append((data, g))
    objective.advance()
    values = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    total = risk(values)
    (weights,) = torch.autograd.grad(total, values)
    for (data, g), w in zip(grads, weights.tolist()):
        if w != 0.0:
            torch.autograd.backward(data.leaves(), [w * gi for gi in g])
    return float(total.detach())


def distill(ctx: RunContext) -> Distilled:
    """Run ``optimize.iterations`` outer steps from the initial synthetic set."""
    p = ctx.problem
    learned = create(ctx)
    t = p.train
    recipe = InnerRecipe.of(t)
    hyper = hypergradient_fn(p, recipe)
    objective = Objective(ctx)
    # group_cvar acts inside each scenario's loss (over groups of real data); scenarios are then averaged
    risk = RISKS.build(p.risk)
    opt = p.optimize
    outer_opt = make_optimizer(opt.optimizer, learned.tensors.values(), opt.lr, opt.momentum, opt.weight_decay)
    fix = f"lower optimize.lr (now {opt.lr:g}) or train.lr (now {t.lr:g})"
    pool = {} if objective.pool is None else {"pool": objective.pool}
    loop = ctx.loop(opt.iterations, {**learned.tensors, "opt": outer_opt, **pool},
                    desc=f"bilevel ({p.optimize.hypergradient.kind})", fix=fix)
    for it in loop:
        outer_opt.zero_grad()
        loss = outer_step(ctx, learned, objective, hyper, risk, it)
        outer_opt.step()
        loop.record(it, loss=loss)
        loop.check_finite(it, **learned.tensors)
    return learned.result()
