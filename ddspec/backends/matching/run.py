"""The torch side of the matching backend (see :mod:`ddspec.backends.matching` for the math).

Randomness: real batches, augmentation seeds and network mini-batches come from ``ctx.generator``,
network initialisations from the global torch RNG; the loop checkpoints both, with the synthetic
tensors and their optimizer, so a resumed run continues bit-for-bit.

Risk ``group_cvar`` (:func:`train_network_robust`, :func:`grouped_class_distance`) takes separate code
paths; risk ``mean`` runs exactly the code (and the random draws) it ran before group_cvar existed. The
groups themselves draw no randomness (:mod:`ddspec.components.objectives.groups`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ddspec.backends.base import Distilled
from ddspec.components.training.augment import Augment
from ddspec.components.objectives.distances import feature_mean, gradient_match, mmd2
from ddspec.components.objectives.groups import fixed_groups, nearest_ids, real_row_groups, synthetic_centres
from ddspec.components.synthetic.init import init_synthetic
from ddspec.components.training.optimizers import make_optimizer
from ddspec.components.synthetic.set import channel_stats, label_logits
from ddspec.components.objectives.risks import group_distance, group_objective
from ddspec.errors import SpecError
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

    The optimizer moves ``z``, the synthetic inputs in standardized units: x = μ + σ·z with μ, σ
    the per-channel mean and std of the real training inputs. The reference learning rates were set
    on standardized data, so they carry over to data in any units (an SGD step of lr on z is a step
    of lr·σ² on x). Class c occupies rows ``slices[c]``; ``logits`` (N x K) are the learned label
    logits, or None for fixed labels ``y``. ``sample_groups`` (with ``num_groups``) holds the group id
    of every real training sample for risk ``group_cvar`` with fixed groups (``kmeans``, ``attribute``);
    None otherwise (risk ``mean``, or groups by nearest synthetic point, assigned on the fly).
    """

    ctx: RunContext
    z: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor | None
    augment: Augment | None
    real_indices: list[torch.Tensor]
    slices: list[slice]
    sample_groups: torch.Tensor | None = None
    num_groups: int = 0

    @classmethod
    def create(cls, ctx: RunContext) -> Matcher:
        """The initial synthetic set of ``ctx.problem`` (``synthetic.init``)."""
        return cls.starting_at(ctx, *init_synthetic(ctx.problem, ctx.data, ctx.generator))

    @classmethod
    def starting_at(cls, ctx: RunContext, x: torch.Tensor, y: torch.Tensor) -> Matcher:
        """A matcher whose synthetic set starts at (x, y), class-major."""
        k = ctx.data.num_classes
        counts = torch.bincount(y.cpu(), minlength=k).tolist()
        ends = [sum(counts[: c + 1]) for c in range(k)]
        logits = None
        if ctx.problem.synthetic.learn_labels:
            logits = label_logits(y, k)
        mean, std = channel_stats(ctx.data.x_train)
        return cls(
            ctx, ((x - mean) / std).detach().requires_grad_(True), mean, std, y, logits,
            make_augment(ctx.problem, ctx.data.input_shape), ctx.data.strata(),
            [slice(e - n, e) for e, n in zip(ends, counts)], *fixed_groups(ctx.problem, ctx.data),
        )

    @property
    def x(self) -> torch.Tensor:
        """The synthetic inputs in data units (differentiable w.r.t. ``z``)."""
        return self.mean + self.std * self.z

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The learned tensors by name: ``x`` (held standardized, as z) and the label ``logits`` if learned."""
        return {"x": self.z} if self.logits is None else {"x": self.z, "labels": self.logits}

    def synthetic(self, c: int) -> torch.Tensor:
        """The synthetic inputs of class c, in data units."""
        return self.mean + self.std * self.z[self.slices[c]]

    @property
    def classes(self) -> list[int]:
        """Classes that have synthetic samples."""
        return [c for c, s in enumerate(self.slices) if s.stop > s.start]

    def seed(self) -> int:
        return int(torch.randint(SEED_BOUND, (), generator=self.ctx.generator))

    def aug(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        return x if self.augment is None else self.augment(x, seed)

    def real_rows(self, c: int) -> torch.Tensor:
        """Training-set indices of a random real batch of class c (``optimize.real_batch_per_class``, without
        replacement)."""
        return self.ctx.sample_real(self.real_indices[c], self.ctx.problem.optimize.real_batch_per_class)

    def robust_rows(self) -> torch.Tensor:
        """Training-set indices of the real batch of one robust network update: ``risk.batch_size`` // (number of
        classes) random samples of every class with synthetic samples (at least one each)."""
        per_class = max(1, self.ctx.problem.risk.batch_size // len(self.classes))
        return torch.cat([self.ctx.sample_real(self.real_indices[c], per_class) for c in self.classes])

    def real(self, c: int) -> torch.Tensor:
        """A random real batch of class c (the inputs of :meth:`real_rows`)."""
        return self.ctx.data.x_train[self.real_rows(c)]

    def real_groups(self, net: nn.Module, rows: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(group ids, num_groups) of the real training samples ``rows`` for risk ``group_cvar``: the fixed
        groups, or each sample's nearest synthetic point (or k-means centre) of its class, measured on the
        un-augmented inputs or on their embeddings by ``net`` (no gradient)."""
        return real_row_groups(self.ctx.problem.risk.groups, self.ctx.data, rows,
                               (self.sample_groups, self.num_groups), self.x, self.y, net)

    def class_groups(self, c: int, rows: torch.Tensor, real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
        """Group ids of the real samples ``rows`` of class c (only their equality matters): the fixed groups, or
        each sample's nearest synthetic point (or k-means centre) of class c, on the un-augmented inputs or on
        the features ``real`` / ``syn`` that the class distance compares (same augmentation draw), so grouping
        in embedding space costs no extra forward pass."""
        if self.sample_groups is not None:
            return self.sample_groups[rows]
        spec = self.ctx.problem.risk.groups
        if spec.space == "input":
            real, syn = self.ctx.data.x_train[rows], self.synthetic(c)
        return nearest_ids(real, synthetic_centres(syn, spec.max_per_class))

    def targets(self, rows: slice | torch.Tensor) -> torch.Tensor:
        """Class indices, or softmax(label logits) rows for learned labels."""
        return self.y[rows] if self.logits is None else torch.softmax(self.logits[rows], dim=1)

    def networks(self, iteration: int) -> list[nn.Module]:
        """``scenarios.inits`` fresh networks, cycling through the scenario architectures."""
        specs, inits = self.ctx.scenario_models(), self.ctx.problem.scenarios.inits
        return [self.ctx.new_model(specs[(iteration * inits + s) % len(specs)]) for s in range(inits)]

    def result(self) -> Distilled:
        y = self.y if self.logits is None else torch.softmax(self.logits, dim=1)
        return Distilled(self.x.detach().clone(), y.detach().clone())


def class_gradient_distance(m: Matcher, net: nn.Module, c: int, skip_bias_and_norm: bool) -> torch.Tensor:
    """d_c = gradient_match(∇θ CE(net; aug(R_c)), ∇θ CE(net; aug(S_c))), differentiable w.r.t. S_c
    (and the label logits); the same augmentation draw for both batches."""
    params = [p for p in net.parameters() if p.requires_grad]
    seed = m.seed()
    real = m.aug(m.real(c), seed)
    labels = torch.full((len(real),), c, dtype=torch.int64, device=real.device)
    g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), labels), params)]
    syn = m.aug(m.synthetic(c), seed)
    g_syn = torch.autograd.grad(F.cross_entropy(net(syn), m.targets(m.slices[c])), params, create_graph=True)
    return gradient_match(g_real, g_syn, skip_bias_and_norm)


def train_network(m: Matcher, net: nn.Module, optimizer: torch.optim.Optimizer, steps: int, batch_size: int) -> None:
    """``steps`` steps of CE(net(aug(S_B)), targets_B) on random mini-batches B of the detached synthetic set."""
    x = m.x.detach()
    targets = m.targets(slice(None)).detach()
    for _ in range(steps):
        batch = torch.randperm(len(x), generator=m.ctx.generator)[:batch_size].to(x.device)
        loss = F.cross_entropy(net(m.aug(x[batch], m.seed())), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def train_network_robust(m: Matcher, net: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    """``steps`` steps of risk ``group_cvar`` on real data: each draws a real batch B (:meth:`Matcher.robust_rows`,
    ``risk.batch_size`` samples split evenly over the classes), groups it (:meth:`Matcher.real_groups`, on the current network) and
    minimizes :func:`~ddspec.components.objectives.risks.group_objective` of ℓ_i = CE(net(aug(x_i)), y_i), i ∈ B:
    mean_weight·mean_g CVaR_α(ℓ_g) + max_weight·max_g CVaR_α(ℓ_g) + ce_weight·mean_i ℓ_i, gradients through
    every term. The synthetic set is not trained on here (the paper's network update uses the real data only)."""
    risk, data = m.ctx.problem.risk, m.ctx.data
    for _ in range(steps):
        rows = m.robust_rows()
        groups, num_groups = m.real_groups(net, rows)
        losses = F.cross_entropy(net(m.aug(data.x_train[rows], m.seed())), data.y_train[rows], reduction="none")
        loss = group_objective(losses, groups, num_groups, risk)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


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
        for net in nets:
            for c in m.classes:
                d = class_gradient_distance(m, net, c, p.distance.skip_bias_and_norm) / len(nets)
                d.backward()
                total += float(d.detach())
        synthetic_opt.step()
        if ol < p.optimize.outer_loop - 1:
            for net, opt in zip(nets, net_opts):
                if p.risk.kind == "group_cvar":
                    train_network_robust(m, net, opt, p.train.steps)
                else:
                    train_network(m, net, opt, p.train.steps, p.train.batch_size)
    return total / p.optimize.outer_loop


def embedding_distance(problem: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """feature_mean, or mmd2 with the spec's bandwidths."""
    if problem.distance.kind == "mmd":
        bandwidths = problem.distance.bandwidths
        return lambda real, syn: mmd2(real, syn, bandwidths)
    return feature_mean


def grouped_class_distance(
    m: Matcher, net: nn.Module, c: int, seed: int, distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Risk ``group_cvar`` on class c: the real batch R_c is split into its non-empty groups R_c,g
    (:meth:`Matcher.class_groups`), d_g = distance(φ(aug(R_c,g)), φ(aug(S_c))) (one augmentation draw for all),
    and D_c = mean_weight·CVaR_α(d) + max_weight·max_g d_g + ce_weight·distance(φ(aug(R_c)), φ(aug(S_c)))
    (:func:`~ddspec.components.objectives.risks.group_distance`)."""
    rows = m.real_rows(c)
    with torch.no_grad():
        real = net.embed(m.aug(m.ctx.data.x_train[rows], seed))
    syn = net.embed(m.aug(m.synthetic(c), seed))
    groups = m.class_groups(c, rows, real, syn)
    per_group = [distance(real[groups == g], syn) for g in torch.unique(groups).tolist()]
    return group_distance(torch.stack(per_group), distance(real, syn), m.ctx.problem.risk)


def distribution_iteration(m: Matcher, synthetic_opt: torch.optim.Optimizer, iteration: int) -> float:
    """One DM / MMD iteration on fresh random networks (not trained); returns the loss."""
    distance = embedding_distance(m.ctx.problem)
    grouped = m.ctx.problem.risk.kind == "group_cvar"
    nets = [net.requires_grad_(False) for net in m.networks(iteration)]
    synthetic_opt.zero_grad()
    total = 0.0
    for net in nets:
        for c in m.classes:
            seed = m.seed()
            if grouped:
                d = grouped_class_distance(m, net, c, seed, distance) / len(nets)
                d.backward()
                total += float(d.detach())
                continue
            with torch.no_grad():
                real = net.embed(m.aug(m.real(c), seed))
            d = distance(real, net.embed(m.aug(m.synthetic(c), seed))) / len(nets)
            d.backward()
            total += float(d.detach())
    synthetic_opt.step()
    return total


def distill(ctx: RunContext) -> Distilled:
    """Run ``optimize.iterations`` matching iterations from the initial synthetic set."""
    p = ctx.problem
    m = Matcher.create(ctx)
    opt = p.optimize
    synthetic_opt = make_optimizer(opt.optimizer, m.tensors.values(), opt.lr, opt.momentum, opt.weight_decay)
    step = gradient_iteration if p.distance.kind == "gradient_match" else distribution_iteration
    fix = f"lower optimize.lr (now {opt.lr:g}), e.g. to {opt.lr / 10:g}"
    loop = ctx.loop(opt.iterations, {**m.tensors, "opt": synthetic_opt}, desc=f"matching ({p.distance.kind})", fix=fix)
    for it in loop:
        loop.record(it, loss=step(m, synthetic_opt, it))
        loop.check_finite(it, **m.tensors)
    return m.result()
