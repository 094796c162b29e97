"""Corrupted copies of the test set (builders of the ``corruption`` registry).

Every builder is ``f(spec, x, value_range, generator) -> Tensor``: ``x`` is the N x ... test input in
data units, ``value_range`` the (min, max) of the training inputs, ``generator`` a seeded CPU
``torch.Generator`` (the only randomness used, so a corruption is a deterministic function of it).
"""

from __future__ import annotations

import math

import torch

from ddspec.errors import SpecError
from ddspec.spec.evaluate import BlurCorruption, InvertCorruption, NoiseCorruption


def gaussian_noise(
    spec: NoiseCorruption, x: torch.Tensor, value_range: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """x + ε, ε ~ N(0, variance) i.i.d. per element (no clipping)."""
    eps = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return x + math.sqrt(spec.variance) * eps.to(x.device)


def blur(
    spec: BlurCorruption, x: torch.Tensor, value_range: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Gaussian blur along each spatial axis of N x C x L or N x C x H x W inputs:
    ``scipy.ndimage.gaussian_filter`` with σ = radius/2, taps k_i ∝ exp(−i²/2σ²) for i = −⌈3σ⌉..⌈3σ⌉
    (normalized, Σ k_i = 1) and borders replicated (mode ``nearest``, so a constant input stays constant)."""
    if x.dim() not in (3, 4):
        raise SpecError.one(
            "CORRUPTION_SHAPE", "evaluate.corruptions",
            f"blur needs spatial inputs (N x C x L or N x C x H x W); the test inputs have shape {tuple(x.shape)}",
            "remove the blur corruption for flat (tabular) data, or use noise / invert",
        )
    from scipy.ndimage import gaussian_filter

    sigma = spec.radius / 2
    out = gaussian_filter(x.detach().cpu().numpy(), sigma, mode="nearest", radius=math.ceil(3 * sigma),
                          axes=tuple(range(2, x.dim())))
    return torch.from_numpy(out).to(x.device)


def invert(
    spec: InvertCorruption, x: torch.Tensor, value_range: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """x ↦ max + min − x, with (min, max) the training range (1 − x for inputs in [0, 1])."""
    low, high = value_range
    return high + low - x
