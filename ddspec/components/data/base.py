"""The in-memory dataset every backend and the evaluation consume."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ddspec.components.objectives.targets import ClassTargets, RealTargets, Targets


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of N x C x ... inputs (per feature for N x D), shaped to
    broadcast over one sample; a zero std becomes 1."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims, keepdim=True)[0]
    std = x.std(dims, keepdim=True, unbiased=False)[0]
    return mean, torch.where(std > 0, std, torch.ones_like(std))


@dataclass(frozen=True)
class Dataset:
    """Real data in its own units: ``x_*`` float32 N x (per-sample shape); ``y_*`` int64 class indices
    (``num_classes`` > 0) or float real-valued targets, N or N x T (``num_classes`` = 0).

    ``groups_*``: int64 subgroup ids of the samples (e.g. label x spurious cue, for the ``worst_group``
    metric), or None for data without groups."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    groups_train: torch.Tensor | None = None
    groups_test: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def targets(self) -> Targets:
        """What the models predict: the classes, or the real-valued targets (see :mod:`ddspec.components.objectives.targets`)."""
        if self.num_classes > 0:
            return ClassTargets(self.num_classes)
        return RealTargets(1 if self.y_train.dim() == 1 else int(self.y_train.shape[1]))

    def strata(self) -> list[torch.Tensor]:
        """Indices of the training samples of each stratum: each class in class order, or all rows as one
        stratum for real-valued targets. Synthetic sizes, initialisations and real batches are per stratum."""
        if self.num_classes == 0:
            return [torch.arange(len(self.y_train), device=self.y_train.device)]
        return [torch.nonzero(self.y_train == c).flatten() for c in range(self.num_classes)]

    def input_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) the synthetic inputs are held standardized with: :func:`channel_stats` of the training inputs."""
        return channel_stats(self.x_train)

    def global_std(self) -> float:
        """σ, the population standard deviation of every value of the training inputs: the unit of input-space
        radii (the curvature regularizer's h, the adversarial ε)."""
        return float(self.x_train.double().std(correction=0))

    def value_range(self) -> tuple[float, float]:
        """(min, max) of the training inputs."""
        return float(self.x_train.min()), float(self.x_train.max())

    def to(self, device: torch.device | str) -> Dataset:
        return replace(
            self,
            x_train=self.x_train.to(device), y_train=self.y_train.to(device),
            x_test=self.x_test.to(device), y_test=self.y_test.to(device),
            groups_train=None if self.groups_train is None else self.groups_train.to(device),
            groups_test=None if self.groups_test is None else self.groups_test.to(device),
        )
