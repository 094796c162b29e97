"""The torch side of the zero-order backend (see :mod:`ddspec.backends.zero_order` for the math).

Randomness: the directions, the real batch and the estimators' seeds come from ``ctx.generator``; each scenario's
initialisation and inner mini-batches from its own seeding (run seed, iteration, scenario: ``ctx.scenario``); the
generator and the global RNG are checkpointed with the learned tensors and the step's optimizer, so a resumed run
continues bit-for-bit. Every evaluation of one step shares the step's draws (common random numbers), so ĝ measures
the change of the objective, not the change of the scenario. That includes the rows a regularizer with
``fraction`` < 1 draws from the global RNG inside the inner training: every evaluation of a scenario starts from
the RNG state the scenario's seeding left (:class:`Fit`; the vmapped ones with ``randomness="same"``, which
restores it for every chunk). So the E evaluations of a step can be split across torchrun's ranks: each rank
evaluates its share of the points and the values are gathered in point order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import grad, vmap

from ddspec.backends.base import Distilled, OuterGradient
from ddspec.components import zero_order
from ddspec.components.objectives.risks import RiskMeasure
from ddspec.components.objectives.scenarios import Objective, inner_batches
from ddspec.components.synthetic.set import SyntheticSet
from ddspec.components.training.regularizers import Regularizer, build_regularizers
from ddspec.components.training.unroll import InnerRecipe, Outer, Tensors, init_buffers, inner_step, train_loss
from ddspec.errors import RunError
from ddspec.registry import RISKS, TRAIN
from ddspec.runtime.context import RunContext

#: Objective values of a batch of perturbed sets: (E x d flat points) → E values.
Values = Callable[[torch.Tensor], torch.Tensor]


class Flat:
    """The learned tensors of D̂ as one vector S ∈ R^d (``x`` as z, then the learned targets)."""

    def __init__(self, synthetic: SyntheticSet) -> None:
        self.synthetic = synthetic
        self.leaves = list(synthetic.tensors.values())
        self.sizes = [t.numel() for t in self.leaves]

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def vector(self) -> torch.Tensor:
        """S, detached."""
        return torch.cat([t.detach().reshape(-1) for t in self.leaves])

    def sets(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """E flat points → (inputs in data units, E x n̂ x ...; targets E x n̂ x ..., or None when they are fixed)."""
        parts = points.split(self.sizes, dim=1)
        syn = self.synthetic
        x = syn.mean + syn.std * parts[0].reshape(len(points), *syn.z.shape)
        if syn.learned is None:
            return x, None
        return x, syn.targets_of(parts[1].reshape(len(points), *syn.learned.shape))

    def set_grad(self, g: torch.Tensor) -> None:
        """Give each learned leaf its part of ĝ as ``.grad`` (for the step's optimizer)."""
        for leaf, part in zip(self.leaves, g.split(self.sizes)):
            leaf.grad = part.reshape(leaf.shape).to(leaf.dtype)


def trained_outputs(model: nn.Module, params0: Tensors, recipe: InnerRecipe, lr: float,
                    batches: Sequence[torch.Tensor | None], loss: Callable[..., torch.Tensor], outer: Outer,
                    regularizers: Sequence[Regularizer] = ()) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(x, targets) ↦ ℓ(θ_K): K inner steps from θ_0 on (x, targets) — the optimizer steps of
    :func:`~ddspec.components.training.unroll.inner_step`, gradients by ``torch.func.grad`` so that the whole fit
    can be vmapped over perturbed sets — then the outer loss. The step's loss carries the ``regularizers``
    (their input gradients are ``torch.func.vjp``, so they vmap too)."""
    names = [n for n, _ in model.named_parameters()]
    step_grad = grad(lambda params, x, t: train_loss(model, names, params, x, t, loss, regularizers))

    def fit(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        params, buffers = list(params0), init_buffers(recipe, params0)
        for k, rows in enumerate(batches):
            xb, tb = (x, targets) if rows is None else (x[rows], targets[rows])
            params, buffers = inner_step(recipe, params, buffers, step_grad(params, xb, tb), lr, k)
        return outer(params)
    return fit


class TorchInner:
    """Inner procedure ``train`` with capability ``differentiable``: K steps of torch training per evaluation,
    batched under ``torch.func.vmap`` (``optimize.evaluations``: auto tries it and falls back to a loop)."""

    def __init__(self, ctx: RunContext, objective: Objective) -> None:
        self.ctx, self.objective = ctx, objective
        self.recipe = InnerRecipe.of(ctx.problem.train)
        self.batched = ctx.problem.optimize.evaluations != "loop"
        self.regularizers = build_regularizers(ctx.problem.train, ctx.data)

    def draw(self, iteration: int, synthetic: SyntheticSet) -> list[Fit]:
        """The step's scenarios: per ω, (x, targets) ↦ ℓ_ω after training the scenario's model on them, built in
        the scenario's seeding (``ctx.scenario``), with the global RNG state its evaluations start from."""
        p = self.ctx.problem
        batch, fits = self.objective.batch(), []
        for s in range(p.scenarios.inits):
            with self.ctx.scenario(iteration, s) as generator:
                model, outer, _ = self.objective.scenario(iteration, s, batch, synthetic.x.detach(), synthetic.y,
                                                          generator)
                params0 = [q.detach() for q in model.parameters()]
                batches = inner_batches(self.ctx, len(synthetic.y), p.train.steps, generator)
                fits.append(Fit(trained_outputs(model, params0, self.recipe, p.train.lr, batches,
                                                self.ctx.data.targets.loss, outer, self.regularizers),
                                torch.get_rng_state()))
        return fits

    def values(self, fits: list[Fit], x: torch.Tensor, targets: torch.Tensor | None, fixed: torch.Tensor
               ) -> torch.Tensor:
        """S x E losses: scenario s trained on perturbed set e (every e of a scenario with the same RNG draws)."""
        if self.batched:
            try:
                return torch.stack([fit.replayed(lambda: self._batched(fit.fit, x, targets, fixed)) for fit in fits])
            except (RuntimeError, NotImplementedError) as err:
                if self.ctx.problem.optimize.evaluations == "batched":
                    raise RunError.one("NOT_BATCHABLE", "optimize.evaluations",
                                       f"the evaluations cannot run under torch.func.vmap: {err}",
                                       "set optimize.evaluations: loop (or auto)") from err
                warnings.warn(f"zero-order: vmap does not apply to this objective ({err}); evaluating in a loop",
                              stacklevel=2)
                self.batched = False
        return looped(fits, x, targets, fixed)

    def _batched(self, fit: Callable, x: torch.Tensor, targets: torch.Tensor | None, fixed: torch.Tensor
                 ) -> torch.Tensor:
        chunk = self.ctx.problem.optimize.chunk
        if targets is None:
            return vmap(lambda xe: fit(xe, fixed), chunk_size=chunk, randomness="same")(x)
        return vmap(fit, chunk_size=chunk, randomness="same")(x, targets)


class EstimatorInner:
    """Inner procedure with capability ``estimator``: a library fit per evaluation (``TRAIN.build`` gives it), the
    scenario ω its seed; the outputs on the real batch go through the task and the risk's ``within``."""

    def __init__(self, ctx: RunContext, objective: Objective) -> None:
        self.ctx, self.objective = ctx, objective
        self.estimator = TRAIN.build(ctx.problem.train, ctx.data.targets)

    def draw(self, iteration: int, synthetic: SyntheticSet) -> list[Fit]:
        batch = self.objective.batch()
        within = self.objective.within(batch.rows, None, synthetic.x.detach(), synthetic.y)
        seeds = torch.randint(2**31 - 1, (self.ctx.problem.scenarios.inits,), generator=self.ctx.generator).tolist()

        def scenario(seed: int) -> Fit:
            return Fit(lambda x, targets: within(batch.per_sample(self.estimator.fit(x, targets, seed)(batch.x))),
                       torch.get_rng_state())
        return [scenario(seed) for seed in seeds]

    def values(self, fits: list[Fit], x: torch.Tensor, targets: torch.Tensor | None, fixed: torch.Tensor
               ) -> torch.Tensor:
        return looped(fits, x, targets, fixed)


@dataclass
class Fit:
    """One scenario's objective, (x, targets) ↦ ℓ_ω, and the global RNG state each of its evaluations starts from
    (the draws of a regularizer's fraction inside the inner training)."""

    fit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    rng: torch.Tensor

    def replayed(self, evaluate: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``evaluate()`` from :attr:`rng`, leaving the global RNG as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng)
            return evaluate()


def looped(fits: list[Fit], x: torch.Tensor, targets: torch.Tensor | None, fixed: torch.Tensor) -> torch.Tensor:
    """S x E losses, one evaluation at a time: scenario s fitted to perturbed set e (targets ``targets[e]``, or the
    ``fixed`` ones), every evaluation from the scenario's RNG state, as one vmapped call with
    ``randomness="same"`` does."""
    out = [fit.replayed(lambda: fit.fit(x[e], fixed if targets is None else targets[e]))
           for fit in fits for e in range(len(x))]
    return torch.stack(out).reshape(len(fits), len(x))


def objective_values(ctx: RunContext, inner: TorchInner | EstimatorInner, fits: list[Fit], flat: Flat,
                     risk: RiskMeasure) -> Values:
    """points ↦ (R_ω over the scenarios of ℓ_ω(point))_e, every point evaluated against the same draws; under
    torchrun each rank evaluates its share of the points and the values are gathered in point order (exact)."""
    def values(points: torch.Tensor) -> torch.Tensor:
        mine = ctx.ranks.mine(len(points))

        def evaluate() -> torch.Tensor:
            x, targets = flat.sets(points[mine])
            with torch.no_grad():
                return inner.values(fits, x, targets, flat.synthetic.y).T
        losses = ctx.ranks.gather_units(ctx.ranks.agree(evaluate, "zero-order evaluations"), len(points),
                                        "zero-order evaluations").T
        return torch.stack([risk.over_scenarios(losses[:, e]) for e in range(losses.shape[1])])
    return values


def setup(ctx: RunContext) -> tuple[SyntheticSet, Flat, RiskMeasure, TorchInner | EstimatorInner]:
    """D̂ (and its flat view S), the risk and the inner procedure a run steps with."""
    p = ctx.problem
    synthetic = SyntheticSet.create(p, ctx.data, ctx.generator, ctx.dtype)
    risk = RISKS.build(p.risk)
    objective = Objective(ctx, risk, synthetic.strata)
    inner = (TorchInner if ctx.analysis.has("train:differentiable") else EstimatorInner)(ctx, objective)
    return synthetic, Flat(synthetic), risk, inner


def estimated(ctx: RunContext, values: Values, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ĝ, the evaluated values) at the flat ``point``: ``optimize.samples`` directions from the run's generator."""
    opt = ctx.problem.optimize
    v = zero_order.directions(opt.directions, opt.samples, len(point), ctx.generator, point.dtype)
    return zero_order.estimate(values, point, v.to(ctx.device), opt.sigma, opt.estimator, opt.shaping)


def outer_gradient(ctx: RunContext) -> OuterGradient:
    """The first step's objective L(S) (its scenarios drawn once, as a step's evaluations share them) and the
    estimate ĝ of its gradient (:func:`estimated`, stochastic: its mean is ∇L_σ); every evaluation replays the same
    draws (the directions included)."""
    synthetic, flat, risk, inner = setup(ctx)
    values = objective_values(ctx, inner, inner.draw(0, synthetic), flat, risk)
    replay, names = ctx.replay(), list(synthetic.tensors)

    def point(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([tensors[name].reshape(-1) for name in names])

    def objective(tensors: dict[str, torch.Tensor]) -> float:
        with replay():
            return float(values(point(tensors)[None])[0])

    def gradient(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with replay():
            g, _ = estimated(ctx, values, point(tensors))
        return {name: part.reshape(tensors[name].shape) for name, part in zip(names, g.split(flat.sizes))}

    shaping = ctx.problem.optimize.shaping
    why = "" if shaping == "none" else f"fitness shaping `{shaping}` estimates the gradient of a rank transform of L"
    if not ctx.analysis.has("train:differentiable"):
        why = (f"the inner procedure `{ctx.analysis.kind('train')}` is a library fit, so L is piecewise constant: only "
               "its Gaussian smoothing L_σ has a gradient")
    start = {name: t.detach().clone() for name, t in synthetic.tensors.items()}
    return OuterGradient(start, objective, gradient, stochastic=True, samples=ctx.problem.optimize.samples,
                         approximation=why)


def distill(ctx: RunContext) -> Distilled:
    """``optimize.iterations`` zero-order steps from the initial synthetic set."""
    p, opt = ctx.problem, ctx.problem.optimize
    synthetic, flat, risk, inner = setup(ctx)
    fix = f"lower optimize.lr (now {opt.lr:g}) or optimize.sigma (now {opt.sigma:g})"
    step, loop = ctx.outer(synthetic.tensors, f"zero-order ({opt.estimator}, M = {opt.samples})", fix)
    per_step = opt.per_step() * p.scenarios.inits
    for it in loop:
        values = objective_values(ctx, inner, inner.draw(it, synthetic), flat, risk)
        g, evaluated = estimated(ctx, values, flat.vector())
        flat.set_grad(g)
        step.step()
        if opt.bounds is not None:
            synthetic.project(*opt.bounds)
        loop.record(it, loss=float(evaluated.mean()), grad_norm=float(g.norm()),
                    evaluations=float((it + 1) * per_step))
        loop.check_finite(it, **synthetic.tensors)
    return Distilled(*synthetic.result())

