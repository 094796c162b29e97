"""Regularizers of the training loss (``train.regularizers``): what the ``REGULARIZERS`` builders return, and the
one helper every training site calls (:func:`regularized_losses`, :func:`batch_loss`).

A regularizer maps (f, x, t, ℓ) — a forward function x ↦ outputs, a batch of inputs, their targets and the
per-sample loss ℓ(outputs, t) → (N,) — to R per sample (N,), differentiable w.r.t. whatever f and x depend on
(the model's parameters, and D̂ inside an unroll: third-order terms for the hypergradient). Input gradients
are taken with ``torch.func.vjp``, so the same code runs under plain autograd, inside ``torch.func.grad`` and
under ``torch.func.vmap`` (the zero-order backend's batched inner training). R_i is exact per sample when f
treats the samples of a batch independently (no batch norm in train mode).

A regularizer may hold quantities fixed in its parameter gradient (the curvature direction z): its ``held`` gives
them with their graph, and :func:`parameter_gradient` differentiates w.r.t. θ at those values held constant (the
training step) while an outer autograd still sees how they depend on θ and x (exact hypergradients through it).
With ``fraction`` f < 1 a regularizer is computed on k = ⌈f·N⌉ rows of each batch drawn from torch's global
(CPU) RNG, the rows a random permutation's first k (one permutation per batch, shared by the regularizers);
ℓ_R,i = ℓ_i + (N/k)·λR_i on those rows and ℓ_i elsewhere (unbiased per sample and for the mean). f = 1 draws
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch

from ddspec.registry import REGULARIZERS

Forward = Callable[[torch.Tensor], torch.Tensor]
#: ℓ(outputs, targets) → (N,), one loss per sample.
PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: (ℓ(x) per sample, ∇ₓ Σ_i ℓ_i(x)), both with their graph.
AtX = tuple[torch.Tensor, torch.Tensor]
#: A batch's draw for regularizers with fraction < 1: (a permutation of the N rows, k_r per regularizer).
Rows = tuple[torch.Tensor, list[int]]
#: θ's tensors and a batch of inputs ↦ outputs (``functional_call`` of a model).
ParamForward = Callable[[Sequence[torch.Tensor], torch.Tensor], torch.Tensor]


class Regularizer(Protocol):
    """A built regularizer: its weight λ, the fraction of each batch's rows it is computed on, and R per sample.
    ``held`` gives the quantities the parameter gradient holds fixed, with their graph (None: none);
    ``__call__`` takes them back as ``held`` (None: computed and detached)."""

    lam: float
    fraction: float

    def held(self, f: Forward, x: torch.Tensor, t: torch.Tensor, loss: PerSampleLoss,
             at_x: AtX | None = None) -> torch.Tensor | None: ...

    def __call__(self, f: Forward, x: torch.Tensor, t: torch.Tensor, loss: PerSampleLoss,
                 at_x: AtX | None = None, held: torch.Tensor | None = None) -> torch.Tensor: ...


def input_gradient(f: Forward, x: torch.Tensor, t: torch.Tensor, loss: PerSampleLoss) -> AtX:
    """(ℓ_i(x), ∇ₓ Σ_i ℓ_i(x)): row i of the gradient is ∇ₓᵢ ℓ_i (samples independent); both differentiable."""
    losses, pull = torch.func.vjp(lambda inputs: loss(f(inputs), t), x)
    (grad,) = pull(torch.ones_like(losses))
    return losses, grad


def unit_rows(v: torch.Tensor) -> torch.Tensor:
    """v_i / ‖v_i‖ per sample (row); a row of zeros stays zero (no ε: other rows are not moved)."""
    norm = v.flatten(1).norm(dim=1)
    norm = torch.where(norm > 0, norm, torch.ones_like(norm))
    return v / norm.reshape(-1, *[1] * (v.dim() - 1))


@dataclass(frozen=True)
class Curvature:
    """Regularizer ``curvature`` built: R = σ²‖∇ₓℓ(x + hσz) − ∇ₓℓ(x)‖² (``gradient_difference``) or
    |ℓ(x + hσz) − ℓ(x)| (``loss_difference``, first order ≈ hσ‖∇ₓℓ‖: a gradient-norm penalty), z the per-sample
    unit direction of ∇ₓℓ (or of its sign), held fixed (detached unless given as ``held``); σ = ``scale``, so h
    and R are in standardized units; computed on a ``fraction`` of each batch's rows."""

    lam: float
    h: float
    scale: float = 1.0
    direction: str = "normalized"
    form: str = "gradient_difference"
    fraction: float = 1.0

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        return unit_rows(torch.sign(grad) if self.direction == "sign" else grad)

    def held(self, f: Forward, x: torch.Tensor, t: torch.Tensor, loss: PerSampleLoss,
             at_x: AtX | None = None) -> torch.Tensor:
        """z with its graph through ∇ₓℓ (to θ and x); detached for ``sign`` (dz = 0 almost everywhere)."""
        _, grad = input_gradient(f, x, t, loss) if at_x is None else at_x
        return self._direction(grad.detach() if self.direction == "sign" else grad)

    def __call__(self, f: Forward, x: torch.Tensor, t: torch.Tensor, loss: PerSampleLoss,
                 at_x: AtX | None = None, held: torch.Tensor | None = None) -> torch.Tensor:
        losses, grad = input_gradient(f, x, t, loss) if at_x is None else at_x
        z = self._direction(grad.detach()) if held is None else held
        shifted = x + (self.h * self.scale) * z
        if self.form == "loss_difference":
            return (loss(f(shifted), t) - losses).abs()
        _, moved = input_gradient(f, shifted, t, loss)
        return self.scale**2 * ((moved - grad) ** 2).flatten(1).sum(1)


def curvature(spec: Any, scale: float = 1.0) -> Curvature:
    """The builder of regularizer ``curvature``; ``scale`` σ is the global std of the real training inputs."""
    return Curvature(spec.lam, spec.h, scale, spec.direction, spec.form, spec.fraction)


def build_regularizers(train: Any, data: Any) -> list[Regularizer]:
    """The active regularizers (λ > 0) of ``train`` built with σ = the data's global std
    (:meth:`~ddspec.components.data.base.Dataset.global_std`); [] when none."""
    specs = train.active_regularizers()
    if not specs:
        return []
    scale = data.global_std()
    return [REGULARIZERS.build(spec, scale) for spec in specs]


def subset_size(fraction: float, n: int) -> int:
    """k = ⌈f·N⌉ (at least 1, at most N; f·N rounded to 9 digits first, so 0.3 x 10 is 3)."""
    return min(n, max(1, math.ceil(round(fraction * n, 9))))


def draw_rows(n: int, regularizers: Sequence[Regularizer], device: torch.device) -> Rows | None:
    """The batch's rows for regularizers with fraction < 1: one permutation of the N rows from torch's global
    (CPU, checkpointed) RNG, regularizer r taking its first k_r; None — nothing drawn — when every fraction is 1."""
    fractions = [r.fraction for r in regularizers]
    if all(f >= 1 for f in fractions):
        return None
    order = torch.randperm(n).to(device)
    return order, [n if f >= 1 else subset_size(f, n) for f in fractions]


def _head(at: AtX, k: int) -> AtX:
    return at if k == len(at[0]) else (at[0][:k], at[1][:k])


def held_values(f: Forward, x: torch.Tensor, t: torch.Tensor, loss: PerSampleLoss,
                regularizers: Sequence[Regularizer], rows: Rows | None) -> list[torch.Tensor | None]:
    """Each regularizer's ``held`` quantities on its rows, with their graph (None for one that holds none)."""
    if rows is not None:
        order, sizes = rows
        x, t = x[order[:max(sizes)]], t[order[:max(sizes)]]
    else:
        sizes = [len(x)] * len(regularizers)
    at = input_gradient(f, x, t, loss)
    return [r.held(f, x[:k], t[:k], loss, _head(at, k)) for r, k in zip(regularizers, sizes)]


def _losses(f: Forward, x: torch.Tensor, t: torch.Tensor, loss: PerSampleLoss, regularizers: Sequence[Regularizer],
            rows: Rows | None, held: Sequence[torch.Tensor | None] | None) -> torch.Tensor:
    held = list(held) if held is not None else [None] * len(regularizers)
    if rows is None:
        at_x = input_gradient(f, x, t, loss)
        total = at_x[0]
        for r, h in zip(regularizers, held):
            total = total + r.lam * r(f, x, t, loss, at_x, h)
        return total
    order, sizes = rows
    n, top = len(x), max(sizes)
    xs, ts = x[order[:top]], t[order[:top]]
    at = input_gradient(f, xs, ts, loss)  # one forward for ℓ and ∇ₓℓ on the rows any regularizer uses
    part = at[0]
    for r, k, h in zip(regularizers, sizes, held):
        value = (n / k * r.lam) * r(f, xs[:k], ts[:k], loss, _head(at, k), h)
        part = part + (value if k == top else torch.nn.functional.pad(value, (0, top - k)))
    if top < n:  # the other rows: the plain loss only
        part = torch.cat([part, loss(f(x[order[top:]]), t[order[top:]])])
    return part[order.argsort()]


def regularized_losses(f: Forward, x: torch.Tensor, t: torch.Tensor, loss: PerSampleLoss,
                       regularizers: Sequence[Regularizer]) -> torch.Tensor:
    """ℓ_R,i = ℓ_i + Σ_r λ_r R_r,i per sample (N,); ℓ(x) and ∇ₓℓ come from one shared forward pass. A regularizer
    with fraction < 1 contributes (N/k)·λR_i on its k drawn rows and 0 elsewhere (:func:`draw_rows`)."""
    return _losses(f, x, t, loss, regularizers, draw_rows(len(x), regularizers, x.device), None)


def batch_loss(f: Forward, x: torch.Tensor, t: torch.Tensor, loss: Callable[..., torch.Tensor],
               regularizers: Sequence[Regularizer] = ()) -> torch.Tensor:
    """mean_i ℓ_R,i for a batch-mean ``loss(outputs, t, reduction=...)``; without regularizers exactly
    ``loss(f(x), t)`` (the unregularized code path, bit for bit)."""
    if not regularizers:
        return loss(f(x), t)
    return regularized_losses(f, x, t, partial(loss, reduction="none"), regularizers).mean()


def parameter_gradient(forward: ParamForward, params: Sequence[torch.Tensor], x: torch.Tensor, t: torch.Tensor,
                       loss: Callable[..., torch.Tensor], regularizers: Sequence[Regularizer]) -> list[torch.Tensor]:
    """The training step's gradient ∂_θ mean_i ℓ_R,i(θ, x, z)|_{z = z(θ, x)}: the partial derivative with each
    regularizer's ``held`` quantities z constant (the same values as ``autograd.grad`` of :func:`batch_loss`),
    taken by ``torch.func.grad`` w.r.t. θ alone while z is computed with its graph — so an outer autograd
    (a hypergradient) differentiates the step through z(θ, x) too. Costs one more forward and input gradient
    (on the regularized rows) than :func:`batch_loss`; use it only where the step is differentiated."""
    per_sample = partial(loss, reduction="none")
    rows = draw_rows(len(x), regularizers, x.device)
    held = held_values(lambda inputs: forward(params, inputs), x, t, per_sample, regularizers, rows)

    def total(p: list[torch.Tensor], held: list[torch.Tensor | None]) -> torch.Tensor:
        return _losses(lambda inputs: forward(p, inputs), x, t, per_sample, regularizers, rows, held).mean()
    return list(torch.func.grad(total)(list(params), held))
