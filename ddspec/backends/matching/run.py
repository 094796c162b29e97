"""The torch side of the matching backend (see :mod:`ddspec.backends.matching` for the math).

Randomness: each class's real batches and augmentation seeds of a synthetic step come from that class's own
seeding (run seed, step, class: ``ctx.scenario``; :func:`class_objective`), so the classes can be split across
torchrun's ranks without changing a draw; network mini-batches and their augmentation seeds come from
``ctx.generator``, network initialisations from the global torch RNG (the same on every rank: every rank holds
and trains every network). The loop checkpoints both, with the synthetic tensors and their optimizer, so a
resumed run continues bit-for-bit.

The distance is the behaviour object its registered builder returns (``DISTANCES.build(spec, ctx)``, the
signature every distance builder has): a gradient surrogate (capability ``needs_network_training``:
:func:`gradient_iteration`) or an embedding surrogate (:func:`embedding_iteration`). The risk is a :class:`~ddspec.components.objectives.risks.RiskMeasure`; a
grouped one (:func:`train_network_robust`, :func:`grouped_class_distance`) takes separate code paths; the
plain expectation groups nothing. The
groups (``GROUPS.build``) draw no randomness (:mod:`ddspec.components.objectives.groups`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from ddspec.backends.base import Distilled, OuterGradient, stepped_gradient
from ddspec.backends.matching import trains_networks
from ddspec.components.objectives.distances import HoldsApproximation
from ddspec.components.objectives.groups import GroupAssigner
from ddspec.components.objectives.risks import RiskMeasure
from ddspec.components.synthetic.set import SyntheticSet
from ddspec.components.training.augment import Augment
from ddspec.components.training.optimizers import make_optimizer
from ddspec.components.training.regularizers import Regularizer, batch_loss, build_regularizers, regularized_losses
from ddspec.errors import SpecError
from ddspec.registry import DISTANCES, GROUPS, RISKS
from ddspec.runtime.context import RunContext

#: Augmentation seeds are drawn uniformly below this bound.
SEED_BOUND = 2**62


def make_augment(problem: Any, input_shape: tuple[int, ...]) -> Augment | None:
    """The DSA augmentation of ``optimize.augmentation``, or None when it is off."""
    spec = problem.optimize.augmentation
    if not spec.enabled:
        return None
    if len(input_shape) not in (2, 3):
        raise SpecError.one(
            "AUGMENT_UNSUPPORTED", "optimize.augmentation.enabled",
            f"augmentation needs C x L or C x H x W inputs; the data's per-sample shape is {tuple(input_shape)}",
            "set optimize.augmentation.enabled: false",
        )
    return Augment(spec, len(input_shape) - 1)


@dataclass
class Matcher:
    """The synthetic set and what each matching step samples against it.

    ``synthetic`` (:class:`~ddspec.components.synthetic.set.SyntheticSet`) holds D̂: the optimizer moves its
    standardized inputs z (x = μ + σ·z), class c in rows ``synthetic.slices[c]``, and its label logits when
    labels are learned. ``distance`` is the built surrogate, ``risk`` the built risk measure, and ``groups``
    the group assigner of a grouped risk (None for the expectation); ``regularizers`` the built
    ``train.regularizers`` of the network updates and of the real gradient target (none: the plain loss).
    """

    ctx: RunContext
    synthetic: SyntheticSet
    augment: Augment | None
    real_indices: list[torch.Tensor]
    distance: Callable[..., torch.Tensor]
    risk: RiskMeasure
    groups: GroupAssigner | None = None
    regularizers: list[Regularizer] = field(default_factory=list)

    @classmethod
    def create(cls, ctx: RunContext) -> Matcher:
        """The initial synthetic set of ``ctx.problem`` (``synthetic.init``)."""
        return cls.around(ctx, SyntheticSet.create(ctx.problem, ctx.data, ctx.generator, ctx.dtype))

    @classmethod
    def starting_at(cls, ctx: RunContext, x: torch.Tensor, y: torch.Tensor) -> Matcher:
        """A matcher whose synthetic set starts at (x, y), class-major."""
        return cls.around(ctx, SyntheticSet.starting_at(ctx.problem, ctx.data, x, y))

    @classmethod
    def around(cls, ctx: RunContext, synthetic: SyntheticSet) -> Matcher:
        """A matcher of ``synthetic``: the problem's augmentation, distance, risk and groups (fixed ones fit here)."""
        p = ctx.problem
        risk = RISKS.build(p.risk)
        groups = GROUPS.build(p.risk.groups, ctx.data) if risk.grouped else None
        return cls(ctx, synthetic, make_augment(p, ctx.data.input_shape), ctx.data.strata(),
                   DISTANCES.build(p.distance, ctx), risk, groups, build_regularizers(p.train, ctx.data))

    def seed(self, generator: torch.Generator | None = None) -> int:
        """An augmentation seed drawn from ``generator`` (default: the run's)."""
        return int(torch.randint(SEED_BOUND, (), generator=generator or self.ctx.generator))

    def aug(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        return x if self.augment is None else self.augment(x, seed)

    def real_rows(self, c: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training-set indices of a random real batch of class c (``optimize.real_batch_per_class``, without
        replacement), drawn from ``generator`` (default: the run's)."""
        return self.ctx.sample_real(self.real_indices[c], self.ctx.problem.optimize.real_batch_per_class, generator)

    def robust_rows(self) -> torch.Tensor:
        """Training-set indices of the real batch of one robust network update: ``risk.batch_size`` // (number of
        classes) random samples of every class with synthetic samples (at least one each)."""
        classes = self.synthetic.strata
        per_class = max(1, self.ctx.problem.risk.batch_size // len(classes))
        return torch.cat([self.ctx.sample_real(self.real_indices[c], per_class) for c in classes])

    def real(self, c: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random real batch of class c (the inputs of :meth:`real_rows`)."""
        return self.ctx.data.x_train[self.real_rows(c, generator)]

    def loss(self, outputs: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The data's loss (cross-entropy for classes)."""
        return self.ctx.data.targets.loss(outputs, y, reduction)

    def networks(self, iteration: int) -> list[nn.Module]:
        """``scenarios.inits`` fresh networks, cycling through the scenario architectures."""
        specs, inits = self.ctx.scenario_models(), self.ctx.problem.scenarios.inits
        return [self.ctx.new_model(specs[(iteration * inits + s) % len(specs)]) for s in range(inits)]

    def result(self) -> Distilled:
        return Distilled(*self.synthetic.result())


def class_gradient_distance(m: Matcher, net: nn.Module, c: int, generator: torch.Generator | None = None
                            ) -> torch.Tensor:
    """d_c = distance(∇θ ℓ(net; aug(R_c)), ∇θ ℓ(net; aug(S_c))), differentiable w.r.t. S_c (and the label
    logits); the same augmentation draw for both batches, R_c and the draw from ``generator`` (default: the
    run's). With regularizers the real target is GUARD's ∇θ mean_i ℓ_R,i on the real batch (the synthetic side
    keeps the plain loss)."""
    params = [p for p in net.parameters() if p.requires_grad]
    seed = m.seed(generator)
    real = m.aug(m.real(c, generator), seed)
    labels = torch.full((len(real),), c, dtype=torch.int64, device=real.device)
    g_real = [g.detach() for g in torch.autograd.grad(batch_loss(net, real, labels, m.loss, m.regularizers), params)]
    s = m.synthetic
    syn = m.aug(s.stratum(c), seed)
    g_syn = torch.autograd.grad(m.loss(net(syn), s.targets(s.slices[c])), params, create_graph=True)
    return m.distance(g_real, g_syn)


def train_network(m: Matcher, net: nn.Module, optimizer: torch.optim.Optimizer, steps: int, batch_size: int) -> None:
    """``steps`` steps of ℓ(net(aug(S_B)), targets_B) (plus the regularizers' mean λR) on random mini-batches B of
    the detached synthetic set."""
    x = m.synthetic.x.detach()
    targets = m.synthetic.targets().detach()
    for _ in range(steps):
        batch = torch.randperm(len(x), generator=m.ctx.generator)[:batch_size].to(x.device)
        loss = batch_loss(net, m.aug(x[batch], m.seed()), targets[batch], m.loss, m.regularizers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def train_network_robust(m: Matcher, net: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    """``steps`` steps of the grouped risk on real data: each draws a real batch B (:meth:`Matcher.robust_rows`,
    ``risk.batch_size`` samples split evenly over the classes), groups it (``m.groups``, on the current network)
    and minimizes ``risk.within`` of ℓ_i = ℓ(net(aug(x_i)), y_i), i ∈ B — for group_cvar
    mean_weight·mean_g CVaR_α(ℓ_g) + max_weight·max_g CVaR_α(ℓ_g) + ce_weight·mean_i ℓ_i, gradients through
    every term (with regularizers, ℓ_i is ℓ_R,i = ℓ_i + Σ_r λ_r R_r,i). The synthetic set is not trained on here
    (the paper's network update uses the real data only)."""
    data, s = m.ctx.data, m.synthetic
    for _ in range(steps):
        rows = m.robust_rows()
        groups, num_groups = m.groups.of_rows(data, rows, s.x, s.y, net)
        x, y = m.aug(data.x_train[rows], m.seed()), data.y_train[rows]
        if m.regularizers:
            losses = regularized_losses(net, x, y, partial(m.loss, reduction="none"), m.regularizers)
        else:
            losses = m.loss(net(x), y, reduction="none")
        loss = m.risk.within(losses, groups, num_groups)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def class_objective(m: Matcher, step: int, nets: list[nn.Module],
                    distance: Callable[[nn.Module, int, torch.Generator], torch.Tensor]) -> float:
    """Σ_c Σ_θ d_c(θ) / |nets| over the strata c and the networks θ, ``distance(θ, c, generator)`` = d_c(θ); its
    gradient is accumulated into the synthetic tensors' ``.grad``; returns its value.

    Class c is the unit of work: its draws come from its own seeding (``ctx.scenario(step, c)``), and under
    torchrun each rank runs its share of the classes (``ctx.ranks``). d_c reads class c's rows of D̂ only (S_c
    and their label logits), so its gradient is that row block, summed over θ in network order: the blocks are
    gathered in class order and put in place, never added across classes, so the result is one process's bit for
    bit (under either ``reduction``)."""
    ctx, s = m.ctx, m.synthetic
    leaves, strata = list(s.tensors.values()), s.strata
    sizes = [[t[s.slices[c]].numel() for t in leaves] for c in strata]

    def unit(c: int) -> tuple[float, torch.Tensor]:
        value, block = 0.0, None
        with ctx.scenario(step, c) as generator:
            for net in nets:
                d = distance(net, c, generator) / len(nets)
                grads = torch.autograd.grad(d, leaves, allow_unused=True, materialize_grads=True)
                part = torch.cat([g[s.slices[c]].reshape(-1) for g in grads])
                block = part if block is None else block + part
                value += float(d.detach())
        return value, block

    mine = ctx.ranks.mine(len(strata))
    results = ctx.ranks.agree(lambda: [unit(strata[i]) for i in mine], "a matching step")
    padded = torch.zeros(len(mine), max(map(sum, sizes)), dtype=leaves[0].dtype, device=leaves[0].device)
    for row, (_, block) in zip(padded, results):
        row[: len(block)] = block
    blocks = ctx.ranks.gather_units(padded, len(strata), "a matching step")
    values = ctx.ranks.gather_units(torch.tensor([v for v, _ in results], dtype=torch.float64), len(strata),
                                    "a matching step")
    grads = [torch.zeros_like(t) for t in leaves]
    for c, block, size in zip(strata, blocks, sizes):
        for g, piece in zip(grads, block[: sum(size)].split(size)):
            g[s.slices[c]] = piece.reshape(g[s.slices[c]].shape)
    torch.autograd.backward(leaves, grads)
    return sum(values.tolist())


def gradient_objective(m: Matcher, nets: list[nn.Module], step: int) -> float:
    """Σ_nets Σ_c d_c / (number of nets) on the current networks (synthetic step ``step`` of DC), its gradient
    accumulated into the synthetic tensors (:func:`class_objective`); returns its value."""
    return class_objective(m, step, nets, partial(class_gradient_distance, m))


def gradient_iteration(m: Matcher, synthetic_opt: torch.optim.Optimizer, iteration: int) -> float:
    """One DC/DSA outer iteration; returns the matching loss averaged over its ``outer_loop`` steps."""
    p = m.ctx.problem
    nets = m.networks(iteration)
    net_opts = [
        make_optimizer(p.train.optimizer, net.parameters(), p.train.lr, p.train.momentum, p.train.weight_decay)
        for net in nets
    ]
    total = 0.0
    for ol in range(p.optimize.outer_loop):
        synthetic_opt.zero_grad()
        total += gradient_objective(m, nets, iteration * p.optimize.outer_loop + ol)
        synthetic_opt.step()
        if ol < p.optimize.outer_loop - 1:
            for net, opt in zip(nets, net_opts):
                if m.risk.grouped:
                    train_network_robust(m, net, opt, p.train.steps)
                else:
                    train_network(m, net, opt, p.train.steps, p.train.batch_size)
    return total / p.optimize.outer_loop


def grouped_class_distance(m: Matcher, net: nn.Module, c: int, seed: int, generator: torch.Generator | None = None
                           ) -> torch.Tensor:
    """A grouped risk on class c: the real batch R_c is split into its non-empty groups R_c,g (``m.groups``),
    d_g = distance(φ(aug(R_c,g)), φ(aug(S_c))) (one augmentation draw for all), and ``risk.over_groups`` of them
    and the plain distance(φ(aug(R_c)), φ(aug(S_c))) — for group_cvar
    D_c = mean_weight·CVaR_α(d) + max_weight·max_g d_g + ce_weight·(the plain distance). R_c is drawn from
    ``generator`` (default: the run's)."""
    rows = m.real_rows(c, generator)
    with torch.no_grad():
        real = net.embed(m.aug(m.ctx.data.x_train[rows], seed))
    inputs = m.synthetic.stratum(c)
    syn = net.embed(m.aug(inputs, seed))
    groups = m.groups.in_class(m.ctx.data, rows, real, syn, inputs)
    per_group = [m.distance(real[groups == g], syn) for g in torch.unique(groups).tolist()]
    return m.risk.over_groups(torch.stack(per_group), m.distance(real, syn))


def embedding_iteration(m: Matcher, synthetic_opt: torch.optim.Optimizer, iteration: int) -> float:
    """One DM / MMD iteration on fresh random networks (not trained); returns the loss."""
    synthetic_opt.zero_grad()
    total = embedding_objective(m, iteration)
    synthetic_opt.step()
    return total


def class_embedding_distance(m: Matcher, net: nn.Module, c: int, generator: torch.Generator) -> torch.Tensor:
    """d_c = distance(φ_θ(aug(R_c)), φ_θ(aug(S_c))) on the random network ``net`` (a grouped risk's D_c:
    :func:`grouped_class_distance`), one augmentation draw for both, R_c and the draw from ``generator``."""
    seed = m.seed(generator)
    if m.risk.grouped:
        return grouped_class_distance(m, net, c, seed, generator)
    with torch.no_grad():
        real = net.embed(m.aug(m.real(c, generator), seed))
    return m.distance(real, net.embed(m.aug(m.synthetic.stratum(c), seed)))


def embedding_objective(m: Matcher, iteration: int) -> float:
    """The DM / MMD objective of ``iteration``: Σ_nets Σ_c d_c / (number of nets) on its fresh random networks, its
    gradient accumulated into the synthetic tensors (:func:`class_objective`); returns its value."""
    nets = [net.requires_grad_(False) for net in m.networks(iteration)]
    return class_objective(m, iteration, nets, partial(class_embedding_distance, m))


def outer_gradient(ctx: RunContext) -> OuterGradient:
    """The surrogate of the first iteration and its gradient: for an embedding surrogate the whole iteration's
    objective (:func:`embedding_objective`); for a gradient surrogate its first synthetic step's
    (:func:`gradient_objective` on the iteration's fresh networks). Every evaluation replays the same draws. A
    distance whose gradient holds a quantity constant (``distance.approximation()``, e.g. MMD's median bandwidth)
    names it, and, where the built distance can hold it (:class:`~ddspec.components.objectives.distances.HoldsApproximation`),
    gives the objective with it held (``held``)."""
    m = Matcher.create(ctx)
    if trains_networks(ctx.analysis):
        def step() -> float:
            return gradient_objective(m, m.networks(0), 0)
    else:
        def step() -> float:
            return embedding_objective(m, 0)
    approximation = ctx.problem.distance.approximation()
    hold = m.distance.hold() if approximation and isinstance(m.distance, HoldsApproximation) else None
    return stepped_gradient(m.synthetic.tensors, ctx.replay(), step, hold=hold, approximation=approximation)


def distill(ctx: RunContext) -> Distilled:
    """Run ``optimize.iterations`` matching iterations from the initial synthetic set."""
    p = ctx.problem
    m = Matcher.create(ctx)
    opt = p.optimize
    tensors = m.synthetic.tensors
    step = gradient_iteration if trains_networks(ctx.analysis) else embedding_iteration
    fix = f"lower optimize.lr (now {opt.lr:g}), e.g. to {opt.lr / 10:g}"
    synthetic_opt, loop = ctx.outer(tensors, f"matching ({p.distance.kind})", fix)
    for it in loop:
        loop.record(it, loss=step(m, synthetic_opt, it))
        loop.check_finite(it, **tensors)
    return m.result()
