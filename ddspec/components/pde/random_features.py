"""The closed-form random-feature PINN: the inner model of PINN distillation.

With fixed random features φ_j(p) = tanh(W_j·s(p) + b_j), j = 1..F, and s(p) = 2(p − low)/(high − low) − 1 the
record p = (z, a) scaled to [−1, 1]^D, the ansatz

    u_w(z, a) = g(z, a) + B(z) · φ(z, a)·w

is linear in w, so is its residual: L[u_w](p_i) = (A w + r0)_i with A_ij = L[B·φ_j](p_i), r0_i = L[g](p_i).
The physics-informed ridge fit over M collocation points

    w = argmin_w (1/M)‖A w + r0‖² + ridge·‖w‖² = −(AᵀA/M + ridge·I)⁻¹ Aᵀ r0 / M

is one linear solve, differentiable w.r.t. the points (second derivatives in z inside A and r0, first derivatives
in the points outside), which is what makes the points themselves learnable.

A is written in closed form: with t = 1 − φ² and G_jd = W_jd·2/(high_d − low_d) (d a coordinate),
∂_d φ_j = t_j G_jd and ∂_d∂_e φ_j = −2 φ_j t_j G_jd G_je; the product rule with B's derivatives (torch.func) gives
∂_d(Bφ) = B_d φ + B φ_d and ∂_d∂_e(Bφ) = B_de φ + B_d φ_e + B_e φ_d + B φ_de, combined by the problem's
``operator_terms``. r0 = L[g] comes from the problem's ``operator``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ddspec.components.pde.problems import PdeProblem, derivatives


@dataclass
class RandomFeatures:
    """φ(p) = tanh(W s(p) + b) ∈ R^F, s(p) = 2(p − low)/(high − low) − 1; W (F, D), b (F,), low/high (D,)."""

    weight: torch.Tensor
    bias: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    def __post_init__(self) -> None:
        if not bool((self.high > self.low).all()):
            raise ValueError(f"the records' box needs high > low in every dimension, got low={self.low.tolist()}, "
                             f"high={self.high.tolist()}")

    @classmethod
    def draw(cls, features: int, scale: float, low, high, generator: torch.Generator,
             dtype: torch.dtype = torch.float64) -> RandomFeatures:
        """W_jd ~ N(0, scale²) i.i.d., b_j ~ U(−scale, scale), drawn only from ``generator``."""
        low = torch.as_tensor(low, dtype=dtype)
        high = torch.as_tensor(high, dtype=dtype)
        weight = scale * torch.randn(features, low.numel(), generator=generator, dtype=dtype)
        bias = scale * (2 * torch.rand(features, generator=generator, dtype=dtype) - 1)
        return cls(weight, bias, low, high)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """φ(p) at ONE record p (D,) -> (F,)."""
        return self.values(p.unsqueeze(0))[0]

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """φ at records x (N, D) -> (N, F)."""
        s = 2 * (x - self.low) / (self.high - self.low) - 1
        return torch.tanh(s @ self.weight.T + self.bias)

    def derivatives(self, x: torch.Tensor, coords: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """φ (N, F), ∂φ/∂z (N, F, coords) and ∂²φ/∂z∂z (N, F, coords, coords) at records x, in closed form."""
        phi = self.values(x)
        g = self.weight[:, :coords] * (2 / (self.high - self.low))[:coords]
        t = 1 - phi ** 2
        first = t.unsqueeze(-1) * g
        second = (-2 * phi * t)[..., None, None] * g[:, :, None] * g[:, None, :]
        return phi, first, second


def design(problem: PdeProblem, features: RandomFeatures, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (M, F) with A_ij = L[B·φ_j](p_i), and r0 (M,) = L[g](p_i): the residual at the points is A w + r0."""
    c = problem.coords
    z, a = points[:, :c], points[:, c:]
    bubble = problem.bubble_at(z).unsqueeze(-1)
    d_bubble, dd_bubble = derivatives(lambda z, a: problem.bubble(z), z, a)
    phi, d_phi, dd_phi = features.derivatives(points, c)
    matrix = torch.zeros_like(phi)
    for coef, d in problem.operator_terms():
        if len(d) == 1:
            part = d_bubble[:, d[0], None] * phi + bubble * d_phi[..., d[0]]
        else:
            i, j = d
            part = (dd_bubble[:, i, j, None] * phi + d_bubble[:, i, None] * d_phi[..., j]
                    + d_bubble[:, j, None] * d_phi[..., i] + bubble * dd_phi[..., i, j])
        matrix = matrix + coef * part
    return matrix, problem.operator(problem.lift, z, a)


def fit(problem: PdeProblem, features: RandomFeatures, points: torch.Tensor, ridge: float) -> torch.Tensor:
    """w = argmin (1/M)‖A w + r0‖² + ridge‖w‖² = −(AᵀA/M + ridge·I)⁻¹ Aᵀr0/M, (F,); differentiable in the points."""
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0 (the normal equations are singular without it), got {ridge}")
    matrix, offset = design(problem, features, points)
    m, f = matrix.shape
    gram = matrix.T @ matrix / m + ridge * torch.eye(f, dtype=matrix.dtype, device=matrix.device)
    return -torch.linalg.solve(gram, matrix.T @ offset / m)


def solution(problem: PdeProblem, features: RandomFeatures, w: torch.Tensor, z: torch.Tensor,
             a: torch.Tensor) -> torch.Tensor:
    """u_w = g + B·φ·w at N points: z (N, coords), a (N, K) -> (N,)."""
    return problem.lift_at(z, a) + problem.bubble_at(z) * (features.values(torch.cat((z, a), 1)) @ w)


def residual(problem: PdeProblem, features: RandomFeatures, w: torch.Tensor, z: torch.Tensor,
             a: torch.Tensor) -> torch.Tensor:
    """L[u_w] = A w + r0 at N points: z (N, coords), a (N, K) -> (N,)."""
    matrix, offset = design(problem, features, torch.cat((z, a), 1))
    return matrix @ w + offset


@dataclass
class RandomFeaturePinn:
    """u_w = g + B·φ·w, the random-feature PINN with its fitted last layer w."""

    problem: PdeProblem
    features: RandomFeatures
    w: torch.Tensor

    def solution(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """u_w at N points -> (N,)."""
        return solution(self.problem, self.features, self.w, z, a)

    def residual(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """L[u_w] at N points -> (N,)."""
        return residual(self.problem, self.features, self.w, z, a)

    def coefficients(self) -> list[torch.Tensor]:
        """[w]."""
        return [self.w]

    def with_coefficients(self, coefficients: list[torch.Tensor]) -> RandomFeaturePinn:
        return replace(self, w=coefficients[0])
