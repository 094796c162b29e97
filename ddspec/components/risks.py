"""Risk measures R_ω: differentiable maps from a vector of per-scenario losses to one scalar."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Risk = Callable[[torch.Tensor], torch.Tensor]


def mean(spec: Any) -> Risk:
    """R(ℓ) = (1/S) Σ_s ℓ_s."""
    return lambda losses: losses.mean()


def worst(spec: Any) -> Risk:
    """R(ℓ) = max_s ℓ_s (subgradient: the indicator of the first maximizer)."""
    return lambda losses: losses.max()
