"""Differentiable inner training and the hypergradient through it (reverse mode).

The inner procedure O is K steps on the synthetic set D̂ = (x, y), written as a pure function of the
parameters θ, the optimizer buffers, D̂ and the per-step learning rates η_k (PyTorch's conventions):

    g_k  = ∇θ ℓ(f_θk(x_Bk), y_Bk) + λ θ_k                     (λ: weight decay, B_k: step k's batch)
    SGD  b_{k+1} = μ b_k + g_k,           θ_{k+1} = θ_k − η_k b_{k+1}
    Adam m ← β1 m + (1−β1) g,  v ← β2 v + (1−β2) g²,  θ ← θ − η_k √(1−β2^{k+1})/(1−β1^{k+1}) · m/(√v + ε)

(Adam in the form of Kingma & Ba's Algorithm 1 with ε added to √v, as ``higher`` implements it; the
derivative of √v is taken as 0 where v = 0.) ℓ is the batch mean of the targets' loss (:attr:`InnerData.loss`):
cross-entropy for classes, squared error ‖f(x) − y‖² for real-valued targets; with ``train.regularizers``
(:attr:`InnerData.regularizers`) it is mean_i ℓ_i + Σ_r λ_r mean_i R_r,i, and every engine differentiates through
the regularized steps (third-order terms for the curvature regularizer): a step's gradient is the partial
derivative at the regularizer's held quantities (the curvature direction z), and a differentiated step computes it
with :func:`~ddspec.components.training.regularizers.parameter_gradient`, so the hypergradient also follows
z(θ_k, D̂) — exact. A regularizer with ``fraction`` < 1 draws its rows from torch's global RNG once per step; the
checkpointed engine replays the same draws when it recomputes a segment.

The hypergradient of an outer loss L(θ_K) with respect to (x, y, η) is computed by one of:

- :func:`unroll` (engine ``torch_func``): ``torch.func.functional_call`` with autograd ``create_graph``
  steps, so the whole unroll is one graph;
- :func:`unroll_higher` (engine ``higher``): ``higher.innerloop_ctx`` over the same steps;
- :func:`checkpointed_hypergradient`: the same numbers with the state kept only every S steps; each
  segment is recomputed in the backward pass and its vector-Jacobian product taken there. (Written by
  hand: ``torch.utils.checkpoint`` does not fit an unroll whose segments take gradients themselves — the
  non-reentrant form unpacks the checkpointed tensors during the forward's own ``autograd.grad`` and so
  recomputes and keeps them, the reentrant form forbids ``autograd.grad``; both were slower and used more
  memory than this, see ``docs/backends/bilevel.md``.)

Truncation (``track_from = K − T``) runs the first K − T steps without a graph: D̂ influences θ_K only
through the last T steps (a biased, cheaper hypergradient).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ddspec.components.training.regularizers import Regularizer, batch_loss, parameter_gradient

Tensors = list[torch.Tensor]
#: ℓ(outputs, targets) averaged over the batch.
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: Adam's constants (PyTorch's and higher's defaults).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class InnerRecipe:
    """The inner optimizer: ``optimizer`` sgd (with ``momentum``) or adam, weight decay λ, K ``steps``."""

    optimizer: str
    momentum: float
    weight_decay: float
    steps: int

    @classmethod
    def of(cls, train: Any) -> InnerRecipe:
        """The recipe ``train`` (a gradient train spec) declares (momentum only for SGD)."""
        return cls(train.optimizer, train.momentum if train.optimizer == "sgd" else 0.0, train.weight_decay,
                   train.steps)


@dataclass
class InnerData:
    """What the unroll trains on: inputs ``x``, targets (int64 classes, N x K probabilities or real values),
    the per-step learning rates ``lrs`` (K), each step's batch indices (None = the whole set), the
    batch-mean ``loss`` ℓ (no default: ``Dataset.targets.loss``, cross-entropy for classes, squared error for
    real-valued targets; with ``regularizers`` it must accept ``reduction="none"``) and the training loss's
    built regularizers (none by default)."""

    x: torch.Tensor
    targets: torch.Tensor
    lrs: torch.Tensor
    batches: Sequence[torch.Tensor | None]
    loss: Loss
    regularizers: Sequence[Regularizer] = ()

    def batch(self, k: int, differentiable: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x, t = (self.x, self.targets) if differentiable else (self.x.detach(), self.targets.detach())
        rows = self.batches[k]
        return (x, t) if rows is None else (x[rows], t[rows])

    def lr(self, k: int, differentiable: bool) -> torch.Tensor:
        return self.lrs[k] if differentiable else self.lrs[k].detach()

    def leaves(self) -> Tensors:
        """The tensors a hypergradient is taken with respect to: x, and targets / lrs if they require grad."""
        return [t for t in (self.x, self.targets, self.lrs) if t.requires_grad]


def train_loss(model: nn.Module, names: Sequence[str], params: Sequence[torch.Tensor], x: torch.Tensor,
               targets: torch.Tensor, loss: Loss, regularizers: Sequence[Regularizer] = ()) -> torch.Tensor:
    """The batch mean of ℓ(f_θ(x), targets), ℓ = ``loss`` (the data's ``targets.loss``), plus Σ_r λ_r mean_i R_r,i
    with ``regularizers``."""
    state = dict(zip(names, params))
    return batch_loss(lambda inputs: functional_call(model, state, (inputs,)), x, targets, loss, regularizers)


def step_gradient(model: nn.Module, names: Sequence[str], params: Sequence[torch.Tensor], x: torch.Tensor,
                  targets: torch.Tensor, loss: Loss, regularizers: Sequence[Regularizer], differentiable: bool
                  ) -> Tensors:
    """∇θ of :func:`train_loss` (the step's gradient); ``differentiable``: with its graph, through the regularizers'
    held quantities too (:func:`~ddspec.components.training.regularizers.parameter_gradient`)."""
    if differentiable and regularizers:
        return parameter_gradient(lambda p, inputs: functional_call(model, dict(zip(names, p)), (inputs,)),
                                  params, x, targets, loss, regularizers)
    value = train_loss(model, names, params, x, targets, loss, regularizers)
    return list(torch.autograd.grad(value, params, create_graph=differentiable))


def init_buffers(recipe: InnerRecipe, params: Sequence[torch.Tensor]) -> Tensors:
    """Zero optimizer buffers: [] for plain SGD, the momentum buffers, or Adam's m then v."""
    if recipe.optimizer == "adam":
        return [torch.zeros_like(p) for _ in range(2) for p in params]
    return [torch.zeros_like(p) for p in params] if recipe.momentum > 0 else []


def inner_step(recipe: InnerRecipe, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor],
               grads: Sequence[torch.Tensor], lr: torch.Tensor, k: int) -> tuple[Tensors, Tensors]:
    """One optimizer step (see the module docstring); ``k`` is the 0-based step index."""
    g = [gi + recipe.weight_decay * p for gi, p in zip(grads, params)] if recipe.weight_decay else list(grads)
    if recipe.optimizer == "adam":
        n, (b1, b2) = len(params), ADAM_BETAS
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(buffers[:n], g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(buffers[n:], g)]
        scale = lr * (1 - b2 ** (k + 1)) ** 0.5 / (1 - b1 ** (k + 1))
        new = [p - scale * mi / (_safe_sqrt(vi) + ADAM_EPS) for p, mi, vi in zip(params, m, v)]
        return new, m + v
    if recipe.momentum > 0:
        b = [recipe.momentum * bi + gi for bi, gi in zip(buffers, g)]
        return [p - lr * bi for p, bi in zip(params, b)], b
    return [p - lr * gi for p, gi in zip(params, g)], []


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """√v with a zero (not infinite) derivative where v = 0."""
    positive = v > 0
    return torch.where(positive, v, torch.ones_like(v)).sqrt() * positive


def run_steps(model: nn.Module, names: Sequence[str], params: Tensors, buffers: Tensors, data: InnerData,
              recipe: InnerRecipe, start: int, stop: int, differentiable: bool) -> tuple[Tensors, Tensors]:
    """Steps ``start..stop-1`` from (params, buffers). Without ``differentiable`` the result carries no graph
    to D̂ (nor to the incoming state) and requires grad afresh, ready for the next segment."""
    for k in range(start, stop):
        if not differentiable:
            params = [p.detach().requires_grad_(True) for p in params]
            buffers = [b.detach() for b in buffers]
        x, t = data.batch(k, differentiable)
        grads = step_gradient(model, names, params, x, t, data.loss, data.regularizers, differentiable)
        params, buffers = inner_step(recipe, params, buffers, grads, data.lr(k, differentiable), k)
    if not differentiable:
        params = [p.detach().requires_grad_(True) for p in params]
        buffers = [b.detach() for b in buffers]
    return params, buffers


def start_params(model: nn.Module, params0: Sequence[torch.Tensor] | None = None) -> tuple[list[str], Tensors]:
    """(names, θ_0): the model's own parameters (or ``params0``), detached and requiring grad."""
    names = [n for n, _ in model.named_parameters()]
    source = params0 if params0 is not None else [p for _, p in model.named_parameters()]
    return names, [p.detach().clone().requires_grad_(True) for p in source]


def unroll(model: nn.Module, data: InnerData, recipe: InnerRecipe, track_from: int = 0,
           params0: Sequence[torch.Tensor] | None = None) -> Tensors:
    """θ_K by the ``torch_func`` engine, differentiable w.r.t. D̂ through steps ``track_from..K-1``."""
    names, params = start_params(model, params0)
    buffers = init_buffers(recipe, params)
    params, buffers = run_steps(model, names, params, buffers, data, recipe, 0, track_from, False)
    params, _ = run_steps(model, names, params, buffers, data, recipe, track_from, recipe.steps, True)
    return params


def unroll_higher(model: nn.Module, data: InnerData, recipe: InnerRecipe, track_from: int = 0,
                  params0: Sequence[torch.Tensor] | None = None) -> Tensors:
    """θ_K by the ``higher`` engine: ``higher.innerloop_ctx`` over a copy of ``model`` with the lr overridden
    per step; at ``track_from`` the fast weights and the optimizer state are cut from the graph. A tracked step
    with regularizers hands higher's optimizer the gradient of :func:`step_gradient` (its ``grad_callback``, on a
    zero loss), so the engines agree to rounding."""
    import higher

    model = copy.deepcopy(model)
    names = [n for n, _ in model.named_parameters()]
    if params0 is not None:
        with torch.no_grad():
            for p, value in zip(model.parameters(), params0):
                p.copy_(value)
    with higher.innerloop_ctx(model, _torch_optimizer(recipe, model.parameters()), copy_initial_weights=True) as (
        fmodel, diffopt,
    ):
        for k in range(recipe.steps):
            if k == track_from and k > 0:
                _cut(fmodel, diffopt)
            tracked = k >= track_from
            x, t = data.batch(k, tracked)
            lr = {"lr": [data.lr(k, tracked)]}
            if tracked and data.regularizers:
                fast = list(fmodel.fast_params)  # type: ignore[attr-defined]
                grads = step_gradient(model, names, fast, x, t, data.loss, data.regularizers, True)
                zero = sum((p * 0).sum() for p in fast)
                diffopt.step(zero, override=lr, grad_callback=lambda _, grads=grads: grads)
            else:
                diffopt.step(batch_loss(fmodel, x, t, data.loss, data.regularizers), override=lr)
        return list(fmodel.parameters())


def _cut(fmodel: object, diffopt: object) -> None:
    """Detach higher's fast weights and optimizer state (truncation)."""
    fmodel.update_params([p.detach().requires_grad_(True) for p in fmodel.parameters()])  # type: ignore[attr-defined]
    for group in diffopt.state:  # type: ignore[attr-defined]
        for state in group.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    state[key] = value.detach()


def _torch_optimizer(recipe: InnerRecipe, params: object) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=1.0, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=1.0, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


Outer = Callable[[Tensors], torch.Tensor]


def grads_or_zeros(output: torch.Tensor | Tensors, inputs: Sequence[torch.Tensor],
                   grad_outputs: Tensors | None = None, retain_graph: bool = False) -> Tensors:
    """torch.autograd.grad with zeros for inputs the output does not depend on."""
    grads = torch.autograd.grad(output, list(inputs), grad_outputs=grad_outputs, allow_unused=True,
                                retain_graph=retain_graph)
    return [torch.zeros_like(i) if g is None else g for i, g in zip(inputs, grads)]


def unit_norm(grads: Sequence[torch.Tensor]) -> Tensors:
    """g / ‖g‖ with ‖g‖² = Σ_i ‖g_i‖² over all the tensors (all zeros stay zeros)."""
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    if norm == 0:
        return list(grads)
    return [g / norm.to(g.dtype) for g in grads]


def unrolled_hypergradient(model: nn.Module, data: InnerData, recipe: InnerRecipe, outer: Outer,
                           engine: str = "torch_func", track_from: int = 0,
                           params0: Sequence[torch.Tensor] | None = None) -> tuple[float, Tensors]:
    """(L(θ_K), dL/d :meth:`InnerData.leaves`) through the whole unroll graph of ``engine``."""
    fn = unroll_higher if engine == "higher" else unroll
    loss = outer(fn(model, data, recipe, track_from, params0))
    return float(loss.detach()), grads_or_zeros(loss, data.leaves())


def checkpointed_hypergradient(model: nn.Module, data: InnerData, recipe: InnerRecipe, outer: Outer, every: int,
                               track_from: int = 0, params0: Sequence[torch.Tensor] | None = None
                               ) -> tuple[float, Tensors]:
    """The same (L(θ_K), dL/dD̂) as :func:`unrolled_hypergradient` with memory O(K/S + S) steps.

    Forward: run without a graph, keeping the state (θ, buffers) at steps track_from, track_from + S, ….
    Backward: for each segment, last first, recompute it with a graph from its saved start state and pull
    the adjoint (dL/dstate at its end) back to its start, adding its contribution to dL/dD̂."""
    names, params = start_params(model, params0)
    buffers = init_buffers(recipe, params)
    params, buffers = run_steps(model, names, params, buffers, data, recipe, 0, track_from, False)
    bounds = list(range(track_from, recipe.steps, every)) + [recipe.steps]
    saved = []
    for start, stop in itertools.pairwise(bounds):
        saved.append((params, buffers, torch.get_rng_state()))  # a regularizer's row draws, replayed below
        params, buffers = run_steps(model, names, params, buffers, data, recipe, start, stop, False)
    after = torch.get_rng_state()
    loss = outer(params)
    adjoint = grads_or_zeros(loss, params) + [torch.zeros_like(b) for b in buffers]
    leaves = data.leaves()
    total = [torch.zeros_like(t) for t in leaves]
    for (start, stop), (p0, b0, rng) in zip(reversed(list(itertools.pairwise(bounds))), reversed(saved)):
        b0 = [b.detach().requires_grad_(True) for b in b0]
        torch.set_rng_state(rng)
        p1, b1 = run_steps(model, names, p0, b0, data, recipe, start, stop, True)
        grads = grads_or_zeros(p1 + b1, [*p0, *b0, *leaves], grad_outputs=adjoint, retain_graph=True)
        adjoint = grads[: len(p0) + len(b0)]
        total = [t + g for t, g in zip(total, grads[len(p0) + len(b0):])]
    torch.set_rng_state(after)
    return float(loss.detach()), total


#: (model, D̂ as the unroll sees it, outer loss L, θ_0 or None: the model's own) → (L(θ_K), dL/d data.leaves()).
Hypergradient = Callable[[nn.Module, InnerData, Outer, Sequence[torch.Tensor] | None], tuple[float, Tensors]]


def unrolled(spec: Any, recipe: InnerRecipe) -> Hypergradient:
    """The builder of hypergradient ``unrolled``: (model, data, outer, θ_0) → (L(θ_K), dL/dD̂) through the last
    ``spec.truncate`` steps (all by default), with segment checkpointing when ``spec.checkpoint_every`` is set."""
    track_from = max(recipe.steps - spec.truncate, 0) if spec.truncate else 0
    if spec.checkpoint_every:
        return lambda model, data, outer, params0: checkpointed_hypergradient(
            model, data, recipe, outer, spec.checkpoint_every, track_from, params0)
    return lambda model, data, outer, params0: unrolled_hypergradient(
        model, data, recipe, outer, spec.engine, track_from, params0)
