"""Kernel ridge models: a feature map φ (numpy float64, :mod:`ddspec.components.closed_form.krr`) with weights W fitted
in closed form, W = Y φ_λ(X)⁺ for target rows Y (one-hot classes, or real values); scores φ(x) Wᵀ (the class
prediction is their argmax). ``φ.torch`` is the same map in torch (differentiable, for KIP's gradient through the
kernel solve).

The builders of the :data:`~ddspec.registry.FEATURES` kinds (``model.features``) are here: each returns the
:class:`~ddspec.components.closed_form.krr.FeatureMap` of its spec on d-dimensional inputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ddspec.components.closed_form import krr
from ddspec.components.objectives.targets import ClassTargets, RealTargets
from ddspec.registry import FEATURES


def linear_features(spec: Any, d: int) -> krr.FeatureMap:
    """φ(x) = x."""
    return krr.LinearFeatures(d)


def random_fourier_features(spec: Any, d: int) -> krr.FeatureMap:
    """φ(x) = √(2/p) cos(A x + b) with the spec's p, bandwidth and seed."""
    return krr.RandomFourierFeatures(d, spec.features, spec.bandwidth, spec.seed)


def leaky_relu_features(spec: Any, d: int) -> krr.FeatureMap:
    """A random LeakyReLU network with the spec's widths, slope and seed."""
    return krr.LeakyReLUMLP(d, spec.widths, spec.slope, spec.seed)


def feature_map(spec: Any, d: int) -> krr.FeatureMap:
    """The :class:`~ddspec.components.closed_form.krr.FeatureMap` of a ``model.features`` spec on d-dimensional
    inputs (its registered builder)."""
    return FEATURES.build(spec, d)


def flat64(x: torch.Tensor) -> np.ndarray:
    """Samples as float64 numpy rows (n x d)."""
    return x.detach().cpu().double().reshape(len(x), -1).numpy()


def kernel_ridge_solve(phi: torch.Tensor, y: torch.Tensor, lam: float, relative: bool = False) -> torch.Tensor:
    """Wᵀ = Φᵀ (Φ Φᵀ + λ̃ I)⁻¹ Y (the kernel form: an n × n solve; Φ⁺ Y for λ = 0), differentiable in Φ and Y;
    λ̃ = λ, or λ · tr(Φ Φᵀ)/n with ``relative`` (invariant to the scale of Φ)."""
    if lam == 0:
        return torch.linalg.pinv(phi) @ y
    gram = phi @ phi.T
    if relative:
        lam = lam * torch.diagonal(gram).sum() / len(phi)
    return phi.T @ torch.linalg.solve(gram + lam * torch.eye(len(phi), dtype=phi.dtype, device=phi.device), y)


class KernelRidge(nn.Module):
    """f(x) = W φ(flatten(x)) with k = ``num_outputs`` outputs; :meth:`fit` solves W = Y φ_λ(X)⁺ exactly (float64)."""

    def __init__(self, fm: krr.FeatureMap, num_outputs: int) -> None:
        super().__init__()
        self.fm = fm
        self.num_outputs = num_outputs
        self.W: np.ndarray | None = None

    def features(self, x: torch.Tensor) -> np.ndarray:
        return self.fm(flat64(x))

    def fit(self, x: torch.Tensor, y: torch.Tensor, lam: float) -> KernelRidge:
        """W for targets ``y``: int64 class indices (one-hot rows), or float rows (soft labels, real values) as
        :meth:`~ddspec.components.objectives.targets.Targets.rows` gives them."""
        k = self.num_outputs
        kind = RealTargets(k) if y.is_floating_point() else ClassTargets(k)
        self.W = krr.fit_krr(self.features(x), kind.rows(y.detach().cpu()).double().numpy(), lam)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.W is None:
            raise RuntimeError("KernelRidge.fit must run before predictions")
        return torch.from_numpy(self.features(x) @ self.W.T).to(x.device)


def build_kernel_ridge(spec: Any, input_shape: tuple[int, ...], num_outputs: int) -> KernelRidge:
    """An unfitted :class:`KernelRidge` with the spec's feature map on flattened inputs."""
    return KernelRidge(feature_map(spec.features, math.prod(input_shape)), num_outputs)
