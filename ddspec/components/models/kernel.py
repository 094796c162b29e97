"""Kernel ridge models: a feature map φ (numpy float64, :mod:`ddspec.components.closed_form.krr`) with weights W fitted
in closed form, W = Y φ_λ(X)⁺; scores φ(x) Wᵀ, prediction argmax. :func:`torch_features` is the same φ in
torch (differentiable, for KIP's gradient through the kernel solve)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ddspec.components.closed_form import krr


def feature_map(spec: Any, d: int) -> krr.FeatureMap:
    """The :class:`~ddspec.components.closed_form.krr.FeatureMap` of a ``model.features`` spec on d-dimensional inputs."""
    if spec.kind == "rff":
        return krr.RandomFourierFeatures(d, spec.features, spec.bandwidth, spec.seed)
    if spec.kind == "leaky_relu_mlp":
        return krr.LeakyReLUMLP(d, spec.widths, spec.slope, spec.seed)
    return krr.LinearFeatures(d)


def torch_features(fm: krr.FeatureMap, x: torch.Tensor) -> torch.Tensor:
    """φ(x) for rows x (n×d) in torch, matching ``fm(x)`` (differentiable w.r.t. x)."""
    if isinstance(fm, krr.RandomFourierFeatures):
        a, b = (torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in (fm.A, fm.b))
        return fm.bound * torch.cos(x @ a.T + b)
    if isinstance(fm, krr.LeakyReLUMLP):
        h = x
        for w, b in zip(fm.weights, fm.biases):
            h = nn.functional.leaky_relu(h @ torch.as_tensor(w, dtype=x.dtype, device=x.device).T
                                         + torch.as_tensor(b, dtype=x.dtype, device=x.device), fm.slope)
        return h
    return x


def flat64(x: torch.Tensor) -> np.ndarray:
    """Samples as float64 numpy rows (n x d)."""
    return x.detach().cpu().double().reshape(len(x), -1).numpy()


def target_rows(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Regression targets (n×k, differentiable): one-hot rows for class indices, the rows themselves otherwise."""
    return torch.nn.functional.one_hot(y.long(), num_classes).to(dtype) if y.dim() == 1 else y.to(dtype)


def targets(y: torch.Tensor, num_classes: int) -> np.ndarray:
    """:func:`target_rows` as float64 numpy."""
    return target_rows(y.detach().cpu(), num_classes, torch.float64).numpy()


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
    """f(x) = W φ(flatten(x)); :meth:`fit` solves W = Y φ_λ(X)⁺ exactly (float64)."""

    def __init__(self, fm: krr.FeatureMap, num_classes: int) -> None:
        super().__init__()
        self.fm = fm
        self.num_classes = num_classes
        self.W: np.ndarray | None = None

    def features(self, x: torch.Tensor) -> np.ndarray:
        return self.fm(flat64(x))

    def fit(self, x: torch.Tensor, y: torch.Tensor, lam: float) -> KernelRidge:
        self.W = krr.fit_krr(self.features(x), targets(y, self.num_classes), lam)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.W is None:
            raise RuntimeError("KernelRidge.fit must run before predictions")
        return torch.from_numpy(self.features(x) @ self.W.T).to(x.device)


def build_kernel_ridge(spec: Any, input_shape: tuple[int, ...], num_classes: int) -> KernelRidge:
    """An unfitted :class:`KernelRidge` with the spec's feature map on flattened inputs."""
    return KernelRidge(feature_map(spec.features, math.prod(input_shape)), num_classes)
