"""The inner model of PINN distillation (``train: {kind: residual, inner: ...}``): a PINN whose residual is linear
in its trainable part, fitted to D̂'s points in closed form every outer iteration from fresh draws of the run's
generator, differentiable in the points.

- ``random_features``: u = g + B·φ·w, F random tanh features φ (:mod:`.random_features`);
- ``tangent``: the evaluated MLP PINN linearized in its parameters at a fresh initialisation (:mod:`.tangent`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch

from ddspec.components.pde import random_features as rf
from ddspec.components.pde import tangent
from ddspec.components.pde.pinn import PinnMLP

if TYPE_CHECKING:
    from ddspec.runtime.context import RunContext


class InnerPinn(Protocol):
    """A fitted inner PINN: its values and its residual at N points z (N, coords), a (N, K) -> (N,); its fitted
    coefficients c (w, or Δ: the only part that depends on D̂'s points) and the same PINN with other coefficients
    (e.g. detached leaves: the scenarios are differentiated in c, then the chain rule to the points runs once)."""

    def solution(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor: ...

    def residual(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor: ...

    def coefficients(self) -> list[torch.Tensor]: ...

    def with_coefficients(self, coefficients: list[torch.Tensor]) -> InnerPinn: ...


def evaluated_model(problem: Any) -> Any:
    """The model spec the points are evaluated with: the first of ``evaluate.models``, else ``model``."""
    return (list(problem.evaluate.models) or [problem.model])[0]


def fit_random_features(ctx: RunContext, points: torch.Tensor) -> InnerPinn:
    """Fresh φ (``train.features``, ``train.scale``), w = −(AᵀA/M + λI)⁻¹Aᵀr₀/M."""
    t, data = ctx.problem.train, ctx.data
    features = rf.RandomFeatures.draw(t.features, t.scale, data.low, data.high, ctx.generator)
    return rf.RandomFeaturePinn(data.physics, features, rf.fit(data.physics, features, points, t.ridge))


def fit_tangent(ctx: RunContext, points: torch.Tensor) -> InnerPinn:
    """A fresh initialisation θ0 of the evaluated architecture (Xavier-normal from the run's generator), linearized,
    Δ = −Aᵀ(AAᵀ/M + λI)⁻¹r/M."""
    spec, data = evaluated_model(ctx.problem), ctx.data
    model = PinnMLP(data.physics, spec.width, spec.depth, data.low.cpu(), data.high.cpu(), generator=ctx.generator)
    return tangent.fit(model.to(points.device), points, ctx.problem.train.ridge)


#: ``train.inner`` → its closed-form fit on the points.
FITS: dict[str, Callable[[RunContext, torch.Tensor], InnerPinn]] = {
    "random_features": fit_random_features, "tangent": fit_tangent}


def fit_inner(ctx: RunContext, points: torch.Tensor) -> InnerPinn:
    """The run's inner PINN (``train.inner``) fitted to ``points`` (M, D)."""
    return FITS[ctx.problem.train.inner](ctx, points)
