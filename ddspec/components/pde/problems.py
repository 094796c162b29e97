"""The torch side of a PDE problem: BCs built into an ansatz, the differential operator, the exact solution.

A record is a row p = (z, a): z the ``coords`` coordinates, a the ``terms`` = K boundary-condition (BC)
parameters, D = coords + K. Every problem writes its solution as the ansatz

    u(z, a) = g(z, a) + B(z) · N(z, a),

where the lift g satisfies every BC and the bubble B vanishes exactly where the BCs are imposed, so u meets the
BCs for ANY network N and only the residual L[u] is left to fit. ``operator`` differentiates in z only, with
``torch.func`` (vmap over points of nested Jacobians), so it composes with ordinary autograd in the network's
parameters and in the points themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.func import jacfwd, jacrev, vmap

PointFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PdeProblem:
    """A linear PDE L[u] = 0 on a box, with BCs parameterised by a ∈ R^K (see the module docstring)."""

    name: str = ""
    coord_names: tuple[str, ...] = ()

    def __init__(self, terms: int = 3) -> None:
        if terms < 1:
            raise ValueError(f"terms must be >= 1, got {terms}")
        self.terms = terms

    @property
    def coords(self) -> int:
        """The number of coordinates of z."""
        return len(self.coord_names)

    @property
    def dim(self) -> int:
        """D = coords + terms, the length of a record."""
        return self.coords + self.terms

    def domain(self) -> torch.Tensor:
        """The box of z: (coords, 2) rows [low, high], float64."""
        raise NotImplementedError

    def lift(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """g(z, a) at ONE point (z (coords,), a (K,)) -> scalar; g satisfies every BC."""
        raise NotImplementedError

    def bubble(self, z: torch.Tensor) -> torch.Tensor:
        """B(z) at ONE point -> scalar; B = 0 exactly where the BCs are imposed."""
        raise NotImplementedError

    def exact(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The exact solution, batched: z (N, coords), a (N, K) -> (N,)."""
        raise NotImplementedError

    def operator_terms(self) -> tuple[tuple[float, tuple[int, ...]], ...]:
        """L as a sum of coefficient x partial derivative in z: ((c, (i,)), (c, (i, j)), ...) for c ∂_i + c ∂_i∂_j."""
        raise NotImplementedError

    def operator(self, f: PointFunction, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """L[f] at N points, f(z (coords,), a (K,)) -> shape S a single-point function; returns (N, *S), linear in f."""
        first, second = derivatives(f, z, a)
        return sum(c * (first[..., d[0]] if len(d) == 1 else second[..., d[0], d[1]]) for c, d in self.operator_terms())

    def apply(self, u: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """L[u] at records x (N, D) for a batched u: (N, D) -> (N,), by autograd in the coordinate columns (keeps the
        graph: differentiable in u's parameters and in x). Faster than :meth:`operator` for networks."""
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        (first,) = torch.autograd.grad(u(x).sum(), x, create_graph=True)
        second: dict[int, torch.Tensor] = {}
        total = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for c, d in self.operator_terms():
            if len(d) == 1:
                total = total + c * first[:, d[0]]
                continue
            if d[0] not in second:
                (second[d[0]],) = torch.autograd.grad(first[:, d[0]].sum(), x, create_graph=True)
            total = total + c * second[d[0]][:, d[1]]
        return total

    def lift_at(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """g at N points: z (N, coords), a (N, K) -> (N,)."""
        return vmap(self.lift)(z, a)

    def bubble_at(self, z: torch.Tensor) -> torch.Tensor:
        """B at N points: z (N, coords) -> (N,)."""
        return vmap(self.bubble)(z)

    def ansatz(self, net: PointFunction) -> PointFunction:
        """u(z, a) = g(z, a) + B(z) · net(z, a) at one point (net may return any shape S; g and B broadcast)."""

        def u(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            return self.lift(z, a) + self.bubble(z) * net(z, a)

        return u

    def grid(self, n: int) -> torch.Tensor:
        """The tensor grid of n points per coordinate over the domain, boundaries included: (n^coords, coords)."""
        axes = [torch.linspace(float(lo), float(hi), n, dtype=torch.float64) for lo, hi in self.domain()]
        return torch.cartesian_prod(*axes).reshape(-1, self.coords)

    def _modes(self, like: torch.Tensor) -> torch.Tensor:
        """kπ for k = 1..K, in the dtype and device of ``like``."""
        return math.pi * torch.arange(1, self.terms + 1, dtype=like.dtype, device=like.device)


def derivatives(f: PointFunction, z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """∂f/∂z (N, *S, coords) and ∂²f/∂z∂z (N, *S, coords, coords) at N points.

    Forward over reverse mode for a scalar f (one vector-Jacobian product inside), forward over forward otherwise
    (coords Jacobian-vector products per level whatever the size of S; reverse inside would cost one per output).
    """
    with torch.no_grad():
        scalar = f(z[0].detach(), a[0].detach()).dim() == 0
    inner = jacrev if scalar else jacfwd

    def jacobian(z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = inner(f)(z, a)
        return first, first

    second, first = vmap(jacfwd(jacobian, has_aux=True))(z, a)
    return first, second


class LaplaceSquare(PdeProblem):
    """Δu = 0 on (0,1)², u = 0 on x = 0, x = 1, y = 0 and u(x, 1) = g_a(x) = Σ_k a_k sin(kπx).

    Exact u = Σ_k a_k sin(kπx) sinh(kπy) / sinh(kπ); lift g = y·g_a(x); bubble B = x(1−x)y(1−y);
    L[f] = f_xx + f_yy.
    """

    name = "laplace_square"
    coord_names = ("x", "y")

    def domain(self) -> torch.Tensor:
        return torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)

    def lift(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return z[1] * (a * torch.sin(self._modes(z) * z[0])).sum()

    def bubble(self, z: torch.Tensor) -> torch.Tensor:
        x, y = z[0], z[1]
        return x * (1 - x) * y * (1 - y)

    def exact(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        k = self._modes(z)
        x, y = z[:, :1], z[:, 1:2]
        # sinh(kπy)/sinh(kπ) = e^{kπ(y−1)} (1 − e^{−2kπy}) / (1 − e^{−2kπ}): no overflow at large k
        ratio = torch.exp(k * (y - 1)) * -torch.expm1(-2 * k * y) / -torch.expm1(-2 * k)
        return (a * torch.sin(k * x) * ratio).sum(-1)

    def operator_terms(self) -> tuple[tuple[float, tuple[int, ...]], ...]:
        return ((1.0, (0, 0)), (1.0, (1, 1)))


class Heat1d(PdeProblem):
    """u_t = ν u_xx on [0,1]×[0,T], u = 0 at x = 0 and x = 1, u(x, 0) = Σ_k a_k sin(kπx); coordinates z = (x, t).

    Exact u = Σ_k a_k exp(−ν k²π² t) sin(kπx); lift g = Σ_k a_k sin(kπx); bubble B = x(1−x)·t;
    L[f] = f_t − ν f_xx.
    """

    name = "heat_1d"
    coord_names = ("x", "t")

    def __init__(self, terms: int = 3, nu: float = 0.05, T: float = 1.0) -> None:
        super().__init__(terms)
        if nu <= 0 or T <= 0:
            raise ValueError(f"nu and T must be positive, got nu={nu}, T={T}")
        self.nu = nu
        self.T = T

    def domain(self) -> torch.Tensor:
        return torch.tensor([[0.0, 1.0], [0.0, self.T]], dtype=torch.float64)

    def lift(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return (a * torch.sin(self._modes(z) * z[0])).sum()

    def bubble(self, z: torch.Tensor) -> torch.Tensor:
        x, t = z[0], z[1]
        return x * (1 - x) * t

    def exact(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        k = self._modes(z)
        x, t = z[:, :1], z[:, 1:2]
        return (a * torch.exp(-self.nu * k**2 * t) * torch.sin(k * x)).sum(-1)

    def operator_terms(self) -> tuple[tuple[float, tuple[int, ...]], ...]:
        return ((1.0, (1,)), (-self.nu, (0, 0)))


PROBLEMS: dict[str, type[PdeProblem]] = {"laplace_square": LaplaceSquare, "heat_1d": Heat1d}


def build_problem(spec: Any) -> PdeProblem:
    """The problem of a ``data.problem`` spec: its class in :data:`PROBLEMS`, with the spec's ``terms`` and
    ``physics_args()``."""
    return PROBLEMS[spec.kind](terms=spec.terms, **spec.physics_args())
