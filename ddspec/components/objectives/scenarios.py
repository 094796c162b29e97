"""The objective of the task-based backends, scenario by scenario: R_ω[ within_i ℓ_i(f_θ(ω)(x_i)) ].

:class:`Objective` draws what one outer iteration needs — the real batch (x_i, y_i) the task measures on, the
per-sample losses ℓ_i of the task (``TASKS.build``), the risk's ``within`` over them (their mean, or a group
objective), and per scenario ω a model (fresh initialisation cycling through ``scenarios.models``, a warm start
from ``scenarios.pool``, or an expert checkpoint for trajectory matching). The bilevel backend differentiates
through the training of each scenario's model; the zero-order backend evaluates the same objective by value.
The real batch is shared by an iteration's scenarios (:meth:`Objective.batch`); everything else a scenario draws
comes from its own seeding (:meth:`~ddspec.runtime.context.RunContext.scenario`), so scenarios can run in any
order, on any rank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call

from ddspec.components.objectives.risks import RiskMeasure
from ddspec.components.objectives.tasks import PerSample
from ddspec.components.training.model_pool import ModelPool, pool_slots
from ddspec.components.training.unroll import Outer, Tensors
from ddspec.registry import DISTANCES, GROUPS, TASKS

if TYPE_CHECKING:
    from ddspec.runtime.context import RunContext


@dataclass
class RealBatch:
    """The real rows an outer iteration measures the task on: their training-set indices, inputs and the task's
    per-sample losses as a function of the outputs."""

    rows: torch.Tensor
    x: torch.Tensor
    per_sample: PerSample


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

    def within(self, rows: torch.Tensor, model: nn.Module | None, synthetic: torch.Tensor, labels: torch.Tensor
               ) -> Callable[[torch.Tensor], torch.Tensor]:
        """How per-sample real losses become ℓ: the risk's ``within`` (their mean), with, for a grouped risk, the
        groups of the real rows (fixed, or assigned from the synthetic set and ``model`` at its initialisation;
        None where the model family is not a network)."""
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

    def real_batch(self) -> tuple[torch.Tensor, torch.Tensor, PerSample]:
        """(rows, their inputs x, the task's per-sample losses ℓ_i as a function of the outputs f(x)) for a fresh
        real batch (:meth:`real_rows`)."""
        rows = self.real_rows()
        x = self.ctx.data.x_train[rows]
        return rows, x, self.task.per_sample(x, self.ctx.data.y_train[rows])

    def batch(self) -> RealBatch | None:
        """The real batch one outer iteration shares across its scenarios (drawn from the run's generator, the same
        on every rank); None for an expert distance, which measures no real batch."""
        return None if self.task is None else RealBatch(*self.real_batch())

    def scenario(self, iteration: int, index: int, batch: RealBatch | None, synthetic: torch.Tensor,
                 labels: torch.Tensor, generator: torch.Generator) -> tuple[nn.Module, Outer, Tensors | None]:
        """(model, outer loss, θ_0 or None) of scenario ``index``: a fresh initialisation from the global RNG (seed
        it per scenario: :meth:`~ddspec.runtime.context.RunContext.scenario`) cycling through ``scenarios.models``,
        or the pool's model; an expert's start from ``generator``. ``synthetic`` / ``labels`` (class indices) group
        the real ``batch`` for a grouped risk."""
        ctx, p = self.ctx, self.ctx.problem
        specs, inits = ctx.scenario_models(), p.scenarios.inits
        if self.pool is None:
            model, params0, slot = ctx.new_model(specs[(iteration * inits + index) % len(specs)]), None, None
        else:
            slot = pool_slots(iteration, inits, len(self.pool))[index]
            model, params0 = self.pool.start(slot)
        if batch is None:  # an expert distance (never with a pool: POOL_UNUSED)
            return (model, *self.experts.draw(generator))
        outer = task_loss(model, batch.x, batch.per_sample, self.within(batch.rows, model, synthetic, labels))
        return model, outer if slot is None else self.pool.record(slot, outer), params0

    def advance(self) -> None:
        """After an outer iteration: the pool models used in it keep their trained parameters."""
        if self.pool is not None:
            self.pool.advance(self.ctx.problem.train.steps)


def task_loss(model: nn.Module, x: torch.Tensor, per_sample: Callable[[torch.Tensor], torch.Tensor],
              within: Callable[[torch.Tensor], torch.Tensor]) -> Outer:
    """ℓ(θ) = within_i ℓ_i(f_θ(x_i)) on the real batch x."""
    names = [n for n, _ in model.named_parameters()]
    return lambda params: within(per_sample(functional_call(model, dict(zip(names, params)), (x,))))


def inner_batches(ctx: RunContext, n: int, steps: int, generator: torch.Generator) -> list[torch.Tensor | None]:
    """Each inner step's mini-batch of ``train.batch_size`` synthetic rows (None: the whole set), drawn from the
    scenario's ``generator``."""
    size = ctx.problem.train.batch_size
    if size >= n:
        return [None] * steps
    return [torch.randperm(n, generator=generator)[:size].to(ctx.device) for _ in range(steps)]
