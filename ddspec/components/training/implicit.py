"""Implicit-function-theorem hypergradients: memory independent of the number of inner steps.

At a stationary point θ* of the inner objective L_train(θ, D̂) = ℓ(f_θ(x), y) + (λ/2)‖θ‖² (ℓ: the batch mean
of the targets' loss, cross-entropy or squared error, plus the ``train.regularizers`` terms Σ_r λ_r mean_i R_r,i)
(∇θ L_train(θ*, D̂) = 0), the implicit function theorem gives dθ*/dD̂ = −H⁻¹ ∂²L_train/∂θ∂D̂ with
H = ∇²θ L_train(θ*, D̂), so for an outer loss L(θ*):

    dL/dD̂ = −∂/∂D̂ [ ∇θ L_train(θ*, D̂) · v ],   (H + δI) v = ∇θ L(θ*)

v comes from conjugate gradient (H + δI symmetric positive definite: a strongly convex inner problem,
or enough damping δ) or from the Neumann series v ≈ α Σ_{j<J} (I − α(H + δI))^j ∇θ L (needs
α·λ_max < 2). Only Hessian-vector products are formed (double backward), never H.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ddspec.components.training.unroll import (
    Hypergradient,
    InnerData,
    InnerRecipe,
    Outer,
    Tensors,
    grads_or_zeros,
    step_gradient,
    unroll,
)

LinearMap = Callable[[Tensors], Tensors]


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def conjugate_gradient(apply: LinearMap, b: Tensors, iterations: int, tol: float = 1e-12) -> Tensors:
    """Solve A v = b for symmetric positive definite A given as ``apply`` (lists of tensors), from v = 0."""
    v = [torch.zeros_like(t) for t in b]
    r = [t.clone() for t in b]
    d = [t.clone() for t in b]
    rr = _dot(r, r)
    for _ in range(iterations):
        if float(rr) <= tol:
            break
        ad = apply(d)
        alpha = rr / _dot(d, ad)
        v = [vi + alpha * di for vi, di in zip(v, d)]
        r = [ri - alpha * ai for ri, ai in zip(r, ad)]
        rr_new = _dot(r, r)
        d = [ri + (rr_new / rr) * di for ri, di in zip(r, d)]
        rr = rr_new
    return v


def neumann(apply: LinearMap, b: Tensors, iterations: int, step: float) -> Tensors:
    """v = α Σ_{j=0}^{J-1} (I − αA)^j b, which tends to A⁻¹ b when the spectrum of αA lies in (0, 2)."""
    term = [t.clone() for t in b]
    total = [t.clone() for t in b]
    for _ in range(iterations - 1):
        term = [t - step * a for t, a in zip(term, apply(term))]
        total = [s + t for s, t in zip(total, term)]
    return [step * t for t in total]


def stationarity(model: nn.Module, names: Sequence[str], params: Tensors, data: InnerData, recipe: InnerRecipe,
                 differentiable: bool) -> Tensors:
    """∇θ L_train(θ, D̂) on the whole synthetic set, with a graph (for HVPs and the mixed term)."""
    x, t = (data.x, data.targets) if differentiable else (data.x.detach(), data.targets.detach())
    grads = step_gradient(model, names, params, x, t, data.loss, data.regularizers, True)
    return [g + recipe.weight_decay * p for g, p in zip(grads, params)]


def implicit_hypergradient(model: nn.Module, data: InnerData, recipe: InnerRecipe, outer: Outer, solver: str = "cg",
                           iterations: int = 20, damping: float = 0.0, step: float = 0.01,
                           params0: Sequence[torch.Tensor] | None = None) -> tuple[float, Tensors]:
    """(L(θ*), dL/d :meth:`InnerData.leaves`) with θ* ≈ θ_K from K steps run without a graph.

    The learned per-step lrs get zero: the stationary point does not depend on how it was reached."""
    names = [n for n, _ in model.named_parameters()]
    params = unroll(model, data, recipe, track_from=recipe.steps, params0=params0)
    loss = outer(params)
    g_out = grads_or_zeros(loss, params)
    rows = torch.get_rng_state()
    g_train = stationarity(model, names, params, data, recipe, differentiable=False)

    def hessian_vector(v: Tensors) -> Tensors:
        hv = grads_or_zeros(g_train, params, grad_outputs=v, retain_graph=True)
        return [h + damping * vi for h, vi in zip(hv, v)]

    if solver == "neumann":
        v = neumann(hessian_vector, g_out, iterations, step)
    else:
        v = conjugate_gradient(hessian_vector, g_out, iterations)
    after = torch.get_rng_state()  # both stationarity calls regularize the same rows (regularizer fraction < 1)
    torch.set_rng_state(rows)
    mixed = _dot(stationarity(model, names, params, data, recipe, differentiable=True), [vi.detach() for vi in v])
    torch.set_rng_state(after)
    return float(loss.detach()), [-g for g in grads_or_zeros(mixed, data.leaves())]


def implicit(spec: Any, recipe: InnerRecipe) -> Hypergradient:
    """The builder of hypergradient ``implicit``: :func:`implicit_hypergradient` with the spec's solver, iterations,
    damping δ and Neumann step α."""
    return lambda model, data, outer, params0: implicit_hypergradient(
        model, data, recipe, outer, spec.solver, spec.iterations, spec.damping, spec.neumann_step, params0)
