"""The tangent PINN: the evaluated MLP PINN linearized in its parameters, fitted in closed form.

With N_θ the MLP of the evaluated architecture at a fresh initialisation θ0 (a scenario over initialisations),
the first-order expansion in its P parameters

    u_Δ(z, a) = g(z, a) + B(z)·(N_θ0(s(p)) + J(p)·Δ),   J(p) = ∂N_θ(s(p))/∂θ at θ0 (the tangent features),

is linear in Δ, so is its residual: L[u_Δ](p_i) = (A Δ + r)_i with A_i = ∂_θ L[B·N_θ](p_i) at θ0 and
r_i = L[g](p_i) + L[B·N_θ0](p_i). The ridge fit over the M collocation points, in kernel form (P ≫ M),

    Δ = argmin (1/M)‖A Δ + r‖² + λ‖Δ‖² = −Aᵀ(AAᵀ/M + λI)⁻¹ r / M,

is one M x M solve, differentiable in the points (second derivatives in z inside A and r, first derivatives in
the points outside); as λ → 0 it is the minimum-norm Δ, where gradient descent on the linearized loss from θ0
converges. Values and residuals of u_Δ elsewhere are Jacobian-vector products with Δ (``torch.func.jvp``), so the
tangent features of the evaluation grids are never formed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch.func import functional_call, jacrev, jvp, vmap

from ddspec.components.pde.pinn import PinnMLP
from ddspec.components.pde.problems import PdeProblem

Parameters = dict[str, torch.Tensor]


def network(model: PinnMLP, params: Parameters, x: torch.Tensor) -> torch.Tensor:
    """N_θ(s(x)) with θ = ``params`` (the names of ``model.layers``): records x (..., D) -> (...)."""
    return functional_call(model.layers, params, (model.scale(x),)).squeeze(-1)


def network_residual(model: PinnMLP, params: Parameters, x: torch.Tensor) -> torch.Tensor:
    """L[B·N_θ] at records x (N, D) -> (N,), torch.func derivatives in z (composable with jacrev/jvp in θ)."""
    problem, c = model.problem, model.problem.coords

    def part(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return problem.bubble(z) * network(model, params, torch.cat((z, a)))

    return problem.operator(part, x[:, :c], x[:, c:])


@dataclass
class TangentPinn:
    """u_Δ = g + B·(N_θ0 + J·Δ): the linearized ``model`` at its own parameters θ0, with the fitted step Δ."""

    model: PinnMLP
    delta: Parameters

    @property
    def problem(self) -> PdeProblem:
        return self.model.problem

    def coefficients(self) -> list[torch.Tensor]:
        """Δ's tensors, in the order of the model's parameters."""
        return list(self.delta.values())

    def with_coefficients(self, coefficients: list[torch.Tensor]) -> TangentPinn:
        return replace(self, delta=dict(zip(self.delta, coefficients)))

    def initial(self) -> Parameters:
        """θ0, detached from the module."""
        return {name: p.detach() for name, p in self.model.layers.named_parameters()}

    def solution(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """u_Δ at N points: z (N, coords), a (N, K) -> (N,)."""
        x = torch.cat((z, a), 1)
        value, step = jvp(lambda q: network(self.model, q, x), (self.initial(),), (self.delta,))
        return self.problem.lift_at(z, a) + self.problem.bubble_at(z) * (value + step)

    def residual(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """L[u_Δ] = L[g] + L[B·N_θ0] + (∂_θ L[B·N_θ])·Δ at N points -> (N,)."""
        x = torch.cat((z, a), 1)
        value, step = jvp(lambda q: network_residual(self.model, q, x), (self.initial(),), (self.delta,))
        return self.problem.operator(self.problem.lift, z, a) + value + step


def design(model: PinnMLP, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (M, P) with A_i = ∂_θ L[B·N_θ](p_i) at the model's θ0 (parameters flattened in ``named_parameters``
    order), and r (M,) = L[g](p_i) + L[B·N_θ0](p_i): the linearized residual at the points is A Δ + r."""
    problem, c = model.problem, model.problem.coords
    theta = {name: p.detach() for name, p in model.layers.named_parameters()}
    jac = vmap(jacrev(lambda q, p: network_residual(model, q, p[None])[0]), in_dims=(None, 0))(theta, points)
    matrix = torch.cat([jac[name].reshape(len(points), -1) for name in theta], 1)
    offset = problem.operator(problem.lift, points[:, :c], points[:, c:]) + network_residual(model, theta, points)
    return matrix, offset


def fit(model: PinnMLP, points: torch.Tensor, ridge: float) -> TangentPinn:
    """Δ = −Aᵀ(AAᵀ/M + ridge·I)⁻¹ r / M (see the module docstring); differentiable in the points."""
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0 (the kernel system is singular without it), got {ridge}")
    matrix, offset = design(model, points)
    m = len(points)
    kernel = matrix @ matrix.T / m + ridge * torch.eye(m, dtype=matrix.dtype, device=matrix.device)
    flat = -matrix.T @ torch.linalg.solve(kernel, offset / m)
    delta, start = {}, 0
    for name, p in model.layers.named_parameters():
        delta[name] = flat[start:start + p.numel()].reshape(p.shape)
        start += p.numel()
    return TangentPinn(model, delta)
