"""The run of the survival backend (see :mod:`ddspec.backends.survival` for the math).

Randomness: the starting patients, their EM imputations and the zero-order directions come from the run's
generator (the imputations from a numpy generator seeded by it); every evaluation of a step is a deterministic
function of its point, so the step's evaluations compare like with like.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ddspec.backends.base import Distilled
from ddspec.components import zero_order
from ddspec.components.objectives.risks import RiskMeasure
from ddspec.components.survival.analyses import Analyses, build_analyses
from ddspec.components.survival.data import SurvivalDataset, Table
from ddspec.components.survival.fusion import Discretizer, em_complete, fit_fused_network, naive_structure, snap
from ddspec.components.synthetic.set import SyntheticSet
from ddspec.registry import RISKS
from ddspec.runtime.context import RunContext


class Records:
    """The learned vector S = (z, u, s) ↔ complete tables (see the package docstring)."""

    def __init__(self, data: SurvivalDataset, synthetic: SyntheticSet, start: Table, event_scale: float) -> None:
        """``synthetic`` holds the start's covariates; the outcome leaf (u, s) is made of its times and events, the
        event score s = ±``event_scale`` (the smoothing σ: a perturbation flips an event with probability
        P(N(0, 1) > 1) ≈ 0.16, so the smoothed objective sees the events; a score far beyond σ would freeze them)."""
        self.data, self.synthetic = data, synthetic
        train = data.train_table()
        log_t = np.log(train.time)
        self.log_mean, self.log_std = float(log_t.mean()), float(log_t.std())
        self.t_low, self.t_high = float(train.time.min()), float(train.time.max())
        self.mean, self.std = synthetic.mean.numpy(), synthetic.std.numpy()
        self.shape = tuple(synthetic.z.shape)
        u = (np.log(start.time) - self.log_mean) / self.log_std
        s = np.where(start.event, event_scale, -event_scale)
        self.outcome = torch.tensor(np.stack([u, s], 1), requires_grad=True)

    def vector(self) -> torch.Tensor:
        return torch.cat([self.synthetic.z.detach().reshape(-1), self.outcome.detach().reshape(-1)])

    def table(self, point: np.ndarray) -> Table:
        """The valid table of a flat point."""
        n = self.shape[0]
        z, rest = point[: z_size(self.shape)].reshape(self.shape), point[z_size(self.shape):].reshape(n, 2)
        x = snap(self.mean + self.std * z, self.data)
        time = np.clip(np.exp(self.log_mean + self.log_std * rest[:, 0]), self.t_low, self.t_high)
        return Table(x, time, rest[:, 1] > 0)

    def set_grad(self, g: torch.Tensor) -> None:
        k = z_size(self.shape)
        self.synthetic.z.grad = g[:k].reshape(self.shape).to(self.synthetic.z.dtype)
        self.outcome.grad = g[k:].reshape(self.outcome.shape).to(self.outcome.dtype)


def z_size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape))


def starting_table(data: SurvivalDataset, n: int, rng: np.random.Generator) -> Table:
    """n random training patients, their missing covariates imputed by the EM-fused network (3 bins, naive)."""
    train = data.train_table()
    disc = Discretizer.of(data, 3, None)
    net = fit_fused_network(data, disc, naive_structure(len(data.columns)), 1.0)
    rows = train.rows(rng.choice(len(train.time), n, replace=n > len(train.time)))
    return Table(em_complete(rows, data, disc, net, rng), rows.time, rows.event)


def values_of(records: Records, analyses: Analyses, risk: RiskMeasure) -> Callable[[torch.Tensor], torch.Tensor]:
    """points (E x d) ↦ the E objective values R_ω[weighted distances]."""
    def values(points: torch.Tensor) -> torch.Tensor:
        out = [risk.over_scenarios(torch.as_tensor(analyses.distances(records.table(p.numpy()))))
               for p in points.detach().cpu().double()]
        return torch.stack(out).to(points.dtype)
    return values


def distill(ctx: RunContext) -> Distilled:
    """``optimize.iterations`` zero-order steps from the EM-completed random patients; the history records L at
the current table (``loss``, one more evaluation per step) and the mean of the step's perturbed values
(``smoothed``, an estimate of L_σ)."""
    p, opt, data = ctx.problem, ctx.problem.optimize, ctx.data
    analyses = build_analyses(p.task, data, p)
    risk = RISKS.build(p.risk)
    rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=ctx.generator)))
    start = starting_table(data, ctx.analysis.n_synthetic, rng)
    y0 = torch.as_tensor(np.stack([start.time, start.event.astype(float)], 1))
    synthetic = SyntheticSet.starting_at(p, data, torch.as_tensor(start.x), y0, torch.float64)
    records = Records(data, synthetic, start, opt.sigma)
    values = values_of(records, analyses, risk)
    fix = f"lower optimize.lr (now {opt.lr:g}) or optimize.sigma (now {opt.sigma:g})"
    step, loop = ctx.outer({"x": synthetic.z, "outcome": records.outcome},
                           f"survival zero-order ({opt.estimator}, M = {opt.samples})", fix)
    for it in loop:
        point = records.vector()
        v = zero_order.directions(opt.directions, opt.samples, len(point), ctx.generator, point.dtype)
        g, evaluated = zero_order.estimate(values, point, v, opt.sigma, opt.estimator, opt.shaping)
        current = float(values(point[None])[0])
        records.set_grad(g)
        step.step()
        loop.record(it, loss=current, smoothed=float(evaluated.mean()), grad_norm=float(g.norm()))
        loop.check_finite(it, x=synthetic.z, outcome=records.outcome)
    final = records.table(records.vector().numpy())
    y = torch.as_tensor(np.stack([final.time, final.event.astype(float)], 1))
    return Distilled(torch.as_tensor(final.x), y)
