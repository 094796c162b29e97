"""The full MLP PINN, what distilled collocation points are evaluated with, and residual-adaptive resampling.

u_θ(z, a) = g(z, a) + B(z) · N_θ(s(z, a)) (the problem's ansatz, so every BC holds for any θ), N_θ a tanh MLP on
the record scaled to [−1, 1]^D, s(p) = 2(p − low)/(high − low) − 1. Training minimises the mean squared residual
(1/M) Σ_i L[u_θ](p_i)² over the collocation points p_i, with torch.func derivatives in z.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ddspec.components.pde.problems import PdeProblem


class PinnMLP(nn.Module):
    """u_θ(z, a) = lift + bubble · N_θ(s(z, a)), N_θ a tanh MLP with `depth` hidden layers of `width`.

    float64; Xavier-normal weights (gain 1) and zero biases, drawn from ``generator`` when one is given (else from
    the global RNG, like any nn.Module). ``low``/``high`` (D,) is the box of the records, scaled to [−1, 1]^D.
    """

    def __init__(self, problem: PdeProblem, width: int, depth: int, low, high, *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
        low = torch.as_tensor(low, dtype=torch.float64)
        high = torch.as_tensor(high, dtype=torch.float64)
        if low.shape != (problem.dim,) or high.shape != (problem.dim,) or not bool((high > low).all()):
            raise ValueError(f"low/high must be ({problem.dim},) with high > low, got {low.tolist()}, {high.tolist()}")
        self.problem = problem
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        sizes = [problem.dim] + [width] * depth
        layers: list[nn.Module] = []
        for n_in, n_out in pairwise(sizes):
            layers += [nn.Linear(n_in, n_out, dtype=torch.float64), nn.Tanh()]
        layers.append(nn.Linear(width, 1, dtype=torch.float64))
        self.layers = nn.Sequential(*layers)
        with torch.no_grad():
            for layer in self.layers:
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_normal_(layer.weight, generator=generator)
                    layer.bias.zero_()

    def scale(self, p: torch.Tensor) -> torch.Tensor:
        """s(p) = 2(p − low)/(high − low) − 1, the records (..., D) scaled to [−1, 1]^D."""
        return 2 * (p - self.low) / (self.high - self.low) - 1

    def net(self, p: torch.Tensor) -> torch.Tensor:
        """N_θ(s(p)) at records p (..., D) -> (...)."""
        return self.layers(self.scale(p)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """u_θ at records x (N, D) -> (N, 1), batched: g(z, a) + B(z)·N_θ(s(x))."""
        c = self.problem.coords
        z, a = x[:, :c], x[:, c:]
        return (self.problem.lift_at(z, a) + self.problem.bubble_at(z) * self.net(x)).unsqueeze(-1)


def residuals(model: PinnMLP, points: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """L[u_θ](p_i) at the points (M, D) -> (M,), θ = ``params`` (names as in named_parameters) or the model's own;
    batched autograd in the coordinates (:meth:`PdeProblem.apply`)."""
    state = dict(model.named_buffers()) | (dict(model.named_parameters()) if params is None else params)
    return model.problem.apply(lambda x: functional_call(model, state, (x,)).squeeze(-1), points)


def train_pinn(model: PinnMLP, points: torch.Tensor, steps: int, lr: float, *, optimizer: str = "adam",
               batch_size: int | None = None, generator: torch.Generator | None = None,
               resample: Callable[[nn.Module], torch.Tensor] | None = None, resample_every: int = 0,
               lr_drop_at: int | None = None) -> torch.Tensor:
    """Minimise (1/M) Σ_i L[u_θ](p_i)² by Adam or SGD at ``lr`` for ``steps`` steps (lr x 0.1 from step
    ``lr_drop_at`` on, when given); returns the final points.

    Full batch, or a fresh random mini-batch of ``batch_size`` points (without replacement) per step drawn from
    ``generator`` (full batch again when batch_size >= the number of points). When ``resample`` is given, the points are replaced by ``resample(model)`` before every step
    s > 0 with s % resample_every == 0. Nothing is drawn from the global RNG.
    """
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if batch_size is not None and generator is None:
        raise ValueError("mini-batches need a generator (train_pinn never draws from the global RNG)")
    if resample is not None and resample_every < 1:
        raise ValueError(f"resample needs resample_every >= 1, got {resample_every}")
    opt_class = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = opt_class(model.parameters(), lr=lr)
    points = points.detach()
    for step in range(steps):
        if step == lr_drop_at:
            for group in opt.param_groups:
                group["lr"] = lr * 0.1
        if resample is not None and step > 0 and step % resample_every == 0:
            points = resample(model).detach()
        batch = points
        if batch_size is not None and batch_size < len(points):
            batch = points[torch.randperm(len(points), generator=generator)[:batch_size]]
        opt.zero_grad(set_to_none=True)
        residuals(model, batch).square().mean().backward()
        opt.step()
    return points


def rad(model: PinnMLP, pool: torch.Tensor, m: int, generator: torch.Generator, k: float = 1.0,
        c: float = 1.0) -> torch.Tensor:
    """RAD (Wu et al. 2023): m pool points (P, D) drawn without replacement with probability ∝ |r|^k/mean|r|^k + c."""
    r = residuals(model, pool).detach().abs() ** k
    weights = r / r.mean() + c
    return pool[torch.multinomial(weights, m, replacement=False, generator=generator)]


def rel_l2(pred: torch.Tensor, exact: torch.Tensor) -> float:
    """‖pred − exact‖₂ / ‖exact‖₂."""
    return float(torch.linalg.vector_norm(pred - exact) / torch.linalg.vector_norm(exact))


def build_pinn_mlp(spec: Any, data: Any) -> PinnMLP:
    """The PINN of ``model: pinn_mlp`` for a PDE dataset (its problem and its points' box), from the global RNG."""
    return PinnMLP(data.physics, spec.width, spec.depth, data.low.cpu(), data.high.cpu())
