"""What a model predicts, and the loss that compares a prediction with a target.

The real data's targets decide it (:attr:`ddspec.components.data.base.Dataset.targets`):

- :class:`ClassTargets` (K classes; y int64 class indices or float N x K probability rows):
  ℓ(f(x), y) = cross-entropy = −Σ_k y_k log softmax(f(x))_k; the model has K outputs.
- :class:`RealTargets` (T real values; y float N or N x T): ℓ(f(x), y) = ‖f(x) − y‖² (squared error,
  summed over the T outputs); the model has T outputs.

Backends and the evaluation ask these objects for the loss, the number of outputs and the strata
(classes, or all rows as one stratum) instead of assuming class labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


class Targets:
    """Base class: the kind of target of a dataset."""

    #: What a synthetic row's target is: "classes" or "real" (shown by ``explain`` and in docs).
    kind: str = ""

    @property
    def num_outputs(self) -> int:
        """Outputs of a model fitted to these targets."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """ℓ(outputs, y) per sample (``reduction="none"``) or its mean."""
        raise NotImplementedError

    def rows(self, y: torch.Tensor) -> torch.Tensor:
        """y as float N x num_outputs rows (one-hot for class indices)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ClassTargets(Targets):
    """K classes: cross-entropy against class indices or probability rows."""

    num_classes: int
    kind = "classes"

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    def loss(self, outputs: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(outputs, y, reduction=reduction)

    def rows(self, y: torch.Tensor) -> torch.Tensor:
        if y.dim() == 2:
            return y.float() if not y.is_floating_point() else y
        return F.one_hot(y, self.num_classes).float()


@dataclass(frozen=True)
class RealTargets(Targets):
    """T real values per row: squared error ‖f(x) − y‖²."""

    dim: int
    kind = "real"

    @property
    def num_outputs(self) -> int:
        return self.dim

    def loss(self, outputs: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        per_sample = ((outputs - self.rows(y).to(outputs.dtype)) ** 2).sum(1)
        return per_sample if reduction == "none" else per_sample.mean()

    def rows(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(len(y), self.dim)
