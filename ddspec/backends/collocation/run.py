"""The torch side of the collocation backend (see :mod:`ddspec.backends.collocation` for the math).

Randomness: the initial points, the inner PINN of every iteration (random features, or the initialisation of the
tangent PINN), the physics BCs and RAD's pools come from ``ctx.generator`` (checkpointed with the points and the
optimizer, so a resumed run continues bit for bit); the RAD baseline's PINN is initialised from ``runtime.seed``.
Under torchrun every rank makes these draws alike, and the scenarios (BCs) of an iteration are split across the
ranks (:func:`step`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddspec.backends.base import Distilled, NoOuterGradient, OuterGradient, stepped_gradient
from ddspec.components.objectives.risks import RiskMeasure
from ddspec.components.pde.data import PdeDataset
from ddspec.components.pde.inner import evaluated_model, fit_inner
from ddspec.components.pde.objective import FieldObjective
from ddspec.components.pde.pinn import rad, train_pinn
from ddspec.components.pde.sampling import sample_box
from ddspec.components.synthetic.init import init_synthetic, kmeans_seed
from ddspec.registry import MODELS, RISKS, TASKS
from ddspec.runtime.context import RunContext


def labels_free(x: torch.Tensor) -> Distilled:
    """D̂ of collocation points: the points, and targets with no columns (M x 0)."""
    x = x.detach().to(torch.float64)
    return Distilled(x, x.new_zeros(len(x), 0))


def box_draw(method: str, m: int, data: PdeDataset, seed: int) -> torch.Tensor:
    """m points drawn by ``method`` in the data's point box."""
    return sample_box(method, m, data.low.cpu(), data.high.cpu(), seed).to(data.low.device)


def initial_points(ctx: RunContext) -> torch.Tensor:
    """D̂'s start: ``synthetic.init`` drawn in the point box (uniform, lhs, sobol, halton; seeded from the
    generator), or the real records' inits (random grid records of the data BCs, ...)."""
    p, data = ctx.problem, ctx.data
    m = p.synthetic.counts(1)[0]
    if p.synthetic.draws_points():
        return box_draw(p.synthetic.init, m, data, kmeans_seed(ctx.generator))
    return init_synthetic(p, data, ctx.generator)[0].to(torch.float64)


def select(ctx: RunContext) -> torch.Tensor:
    """``optimize: select``: box samplers (seeded with ``runtime.seed``), random real records, or RAD."""
    p, data = ctx.problem, ctx.data
    opt, m = p.optimize, p.synthetic.counts(1)[0]
    if opt.method == "random":
        return data.x_train[ctx.sample_real(torch.arange(len(data.x_train), device=data.x_train.device), m)]
    if opt.method != "rad":
        return box_draw(opt.method, m, data, p.runtime.seed)
    ev = p.evaluate
    spec = evaluated_model(p)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.runtime.seed)
        model = MODELS.build(spec, data).to(ctx.device)

    def resample(net: torch.nn.Module) -> torch.Tensor:
        pool = box_draw("uniform", opt.pool, data, kmeans_seed(ctx.generator))
        return rad(net, pool, m, ctx.generator, k=opt.rad_k, c=opt.rad_c)

    start = box_draw("uniform", m, data, kmeans_seed(ctx.generator))
    return train_pinn(model, start, ev.epochs, ev.lr, optimizer=ev.optimizer, generator=ctx.generator,
                      resample=resample, resample_every=opt.resample_every)


@dataclass
class Points:
    """The learned points, held standardized: p = μ + σ·z, (μ, σ) = ``data.input_stats()``; [low, high] is the
    point box in z units."""

    z: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    @classmethod
    def create(cls, ctx: RunContext) -> Points:
        data = ctx.data
        mean, std = data.input_stats()
        z = ((initial_points(ctx) - mean) / std).requires_grad_(True)
        return cls(z, mean, std, (data.low - mean) / std, (data.high - mean) / std)

    @property
    def x(self) -> torch.Tensor:
        """The points in the data's units (differentiable w.r.t. z)."""
        return self.mean + self.std * self.z

    def project(self) -> None:
        """Clamp the points onto the box, in place."""
        with torch.no_grad():
            self.z.copy_(torch.minimum(torch.maximum(self.z, self.low), self.high))


def step(ctx: RunContext, points: Points, objective: FieldObjective, risk: RiskMeasure) -> dict[str, float]:
    """One outer iteration's objective: the inner PINN (``train.inner``, fresh draws) fitted in closed form on the
    points, and the physics BCs drawn (every rank draws both from the run's generator). Per scenario s (this rank's
    BCs, under torchrun) d_s and its gradient g_s in the fitted coefficients c (w, or Δ); R_ω's weights w_s =
    ∂R/∂d_s combine them into Σ_s w_s g_s (``ctx.ranks.risk_gradient``: gathered in scenario order); the chain
    rule through the closed-form fit to the points runs once, accumulating ∇_z R_ω into ``points.z.grad``.
    Returns the recorded values."""
    fitted = fit_inner(ctx, points.x)
    coefficients = fitted.coefficients()
    leaves = [c.detach().requires_grad_(True) for c in coefficients]
    at, physics = fitted.with_coefficients(leaves), objective.draw_physics(ctx.generator)

    def scenario(s: int) -> tuple[float, torch.Tensor]:
        d = objective.loss(at, s, physics)
        grads = torch.autograd.grad(d, leaves, allow_unused=True, materialize_grads=True)
        return float(d.detach()), torch.cat([g.reshape(-1) for g in grads])

    total, combined, losses = ctx.ranks.risk_gradient(objective.count, scenario, risk.over_scenarios,
                                                      "a collocation step")
    torch.autograd.backward(coefficients, [part.reshape(c.shape) for c, part in
                                           zip(coefficients, combined.split([c.numel() for c in coefficients]))])
    b = objective.data_bcs
    return {"loss": total, "data_rel_l2": float(losses[:b].mean()),
            "physics_residual": float(losses[b:].mean()) if len(losses) > b else 0.0}


def setup(ctx: RunContext) -> tuple[Points, FieldObjective, RiskMeasure]:
    """The starting points, the task's objective and the risk."""
    return Points.create(ctx), TASKS.build(ctx.problem.task, ctx), RISKS.build(ctx.problem.risk)


def outer_gradient(ctx: RunContext) -> OuterGradient:
    """The first iteration's R_ω and its gradient in the standardized points, by :func:`step` (the run's step);
    every evaluation replays the same features and physics BCs."""
    if ctx.analysis.has("optimize:selection"):
        raise NoOuterGradient(f"optimize `select` ({ctx.problem.optimize.method}) draws the points: no gradient")
    points, objective, risk = setup(ctx)
    return stepped_gradient({"x": points.z}, ctx.replay(), lambda: step(ctx, points, objective, risk)["loss"])


def distill(ctx: RunContext) -> Distilled:
    """Select the points, or run ``optimize.iterations`` outer steps on them."""
    if ctx.analysis.has("optimize:selection"):
        return labels_free(select(ctx))
    points, objective, risk = setup(ctx)
    fix = f"lower optimize.lr (now {ctx.problem.optimize.lr:g}) or raise train.ridge"
    outer, loop = ctx.outer({"x": points.z}, "collocation", fix)
    for it in loop:
        outer.zero_grad()
        values = step(ctx, points, objective, risk)
        outer.step()
        points.project()
        loop.record(it, **values)
        loop.check_finite(it, x=points.z)
    return labels_free(points.x)
