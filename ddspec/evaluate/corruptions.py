"""Corrupted copies of the test set (builders of the ``corruption`` registry).

Every builder is ``f(spec, x, value_range, generator) -> Tensor``: ``x`` is the N x ... test input in
data units, ``value_range`` the (min, max) of the training inputs, ``generator`` a seeded CPU
``torch.Generator`` (the only randomness used, so a corruption is a deterministic function of it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ddspec.errors import SpecError
from ddspec.spec.evaluate import BlurCorruption, InvertCorruption, NoiseCorruption


def gaussian_noise(
    spec: NoiseCorruption, x: torch.Tensor, value_range: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """x + ε, ε ~ N(0, variance) i.i.d. per element (no clipping)."""
    eps = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return x + math.sqrt(spec.variance) * eps.to(x.device)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalized 1-D Gaussian taps k_i ∝ exp(−i²/2σ²), i = −⌈3σ⌉..⌈3σ⌉, Σ k_i = 1."""
    half = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-half, half + 1, dtype=torch.float64)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def blur(
    spec: BlurCorruption, x: torch.Tensor, value_range: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Separable Gaussian blur, σ = radius/2, along each spatial axis of N x C x L or N x C x H x W
    inputs (borders replicated, so a constant input stays constant)."""
    if x.dim() not in (3, 4):
        raise SpecError.one(
            "CORRUPTION_SHAPE", "evaluate.corruptions",
            f"blur needs spatial inputs (N x C x L or N x C x H x W); the test inputs have shape {tuple(x.shape)}",
            "remove the blur corruption for flat (tabular) data, or use noise / invert",
        )
    kernel = gaussian_kernel(spec.radius / 2).to(device=x.device, dtype=x.dtype).view(1, 1, -1)
    half = kernel.shape[-1] // 2
    out = x
    for axis in range(2, x.dim()):
        moved = out.movedim(axis, -1)
        flat = F.pad(moved.reshape(-1, 1, moved.shape[-1]), (half, half), mode="replicate")
        out = F.conv1d(flat, kernel).reshape(moved.shape).movedim(-1, axis)
    return out


def invert(
    spec: InvertCorruption, x: torch.Tensor, value_range: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """x ↦ max + min − x, with (min, max) the training range (1 − x for inputs in [0, 1])."""
    low, high = value_range
    return high + low - x
