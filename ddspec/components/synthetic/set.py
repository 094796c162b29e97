"""D̂, the synthetic set: the one object that owns its learnable tensors, for every backend.

- Inputs of any per-sample shape, held standardized for first-order outer optimizers: x = μ + σ·z,
  (μ, σ) = ``data.input_stats()``: the per-channel mean and (population) std of the real training inputs (per
  feature for N x D data; a PDE's collocation box: its centre and a uniform draw's std), so reference learning rates set on normalized data carry over to data in any units (an SGD step
  of lr on z is a step of lr·σ² on x).
- Targets of the data's kind (:mod:`ddspec.components.objectives.targets`):
  class labels, fixed (int64) or learned as soft labels — ``labels="logits"``: logits ℓ with
  targets softmax(ℓ), initialised at one-hot·s so the class gets probability :data:`LABEL_INIT_PROB`;
  ``labels="rows"``: the label rows themselves (one-hot to start; what kernel regression fits) —
  or real-valued targets, fixed or learned as rows.
- Rows are stratum-major (class 0, class 1, ... or one stratum for real targets): ``slices[c]``.
- ``synthetic.init`` draws the start (:func:`ddspec.components.synthetic.init.init_synthetic`).

:meth:`SyntheticSet.tensors` names the learned leaves (``x`` as z, and ``labels`` when learned) for the
outer optimizer and checkpoints; :meth:`SyntheticSet.result` gives the tensors saved as artifacts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ddspec.components.data.base import Dataset
from ddspec.components.synthetic.init import init_synthetic

#: Learned soft labels start as one-hot x scale, with scale such that softmax gives the class this probability.
LABEL_INIT_PROB = 0.9

LabelForm = Literal["logits", "rows"]


def label_scale(num_classes: int) -> float:
    """s with softmax(s·e_c)_c = p: s = log(p (K − 1) / (1 − p)), p = :data:`LABEL_INIT_PROB`."""
    return math.log(LABEL_INIT_PROB * max(num_classes - 1, 1) / (1 - LABEL_INIT_PROB))


def label_logits(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The starting label logits (one-hot x :func:`label_scale`) for class indices ``y`` (the caller makes its
    learnable leaf of them)."""
    return torch.nn.functional.one_hot(y, num_classes).float() * label_scale(num_classes)


@dataclass
class SyntheticSet:
    """The synthetic set: standardized inputs ``z`` (a leaf), the fixed targets ``y`` (class indices or real
    rows), and the learned targets ``learned`` (label logits or target rows; None when fixed)."""

    z: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    y: torch.Tensor
    learned: torch.Tensor | None
    label_form: LabelForm
    slices: list[slice]

    @classmethod
    def create(cls, problem: Any, data: Dataset, generator: torch.Generator, dtype: torch.dtype = torch.float32,
               labels: LabelForm = "logits") -> SyntheticSet:
        """The initial synthetic set of ``problem.synthetic`` (draws from ``generator``), computed in ``dtype``;
        learned targets (``synthetic.learn_labels``) in the ``labels`` form."""
        x, y = init_synthetic(problem, data, generator)
        return cls.starting_at(problem, data, x, y, dtype, labels)

    @classmethod
    def starting_at(cls, problem: Any, data: Dataset, x: torch.Tensor, y: torch.Tensor,
                    dtype: torch.dtype = torch.float32, labels: LabelForm = "logits") -> SyntheticSet:
        """A synthetic set starting at (x, y), stratum-major. The data's targets decide what y is: class
        indices (``data.num_classes`` > 0), or real-valued rows, always learned as rows."""
        mean, std = data.input_stats()
        mean, std = mean.to(dtype), std.to(dtype)
        classes = data.num_classes > 0
        form: LabelForm = labels if classes else "rows"
        learned = None
        if problem.synthetic.learn_labels:
            start = data.targets.rows(y) if form == "rows" else label_logits(y, data.num_classes)
            learned = start.to(dtype).detach().clone().requires_grad_(True)
        strata = len(data.strata())
        counts = torch.bincount(y.cpu(), minlength=strata).tolist() if classes else [len(y)]
        ends = [sum(counts[: c + 1]) for c in range(strata)]
        z = ((x.to(dtype) - mean) / std).detach().requires_grad_(True)
        return cls(z, mean, std, y, learned, form, [slice(e - n, e) for e, n in zip(ends, counts)])

    @property
    def x(self) -> torch.Tensor:
        """The inputs in data units (differentiable w.r.t. ``z``)."""
        return self.mean + self.std * self.z

    def stratum(self, c: int) -> torch.Tensor:
        """The inputs of stratum (class) c, in data units."""
        return self.mean + self.std * self.z[self.slices[c]]

    @property
    def strata(self) -> list[int]:
        """Strata (classes) that have synthetic rows."""
        return [c for c, s in enumerate(self.slices) if s.stop > s.start]

    def targets(self, rows: slice | torch.Tensor = slice(None)) -> torch.Tensor:
        """The targets of ``rows``: fixed ``y``, softmax(logits) for learned labels, or the learned rows."""
        if self.learned is None:
            return self.y[rows]
        return self.targets_of(self.learned[rows])

    def targets_of(self, learned: torch.Tensor) -> torch.Tensor:
        """The targets that learned values ``learned`` (this set's form, any leading batch dimensions) stand for:
        softmax over the last dimension for label logits, the rows themselves otherwise."""
        return torch.softmax(learned, dim=-1) if self.label_form == "logits" else learned

    def project(self, low: float, high: float) -> None:
        """Project the inputs onto the box [low, high] (data units), in place: z clamped to [(low − μ)/σ, (high − μ)/σ]."""
        with torch.no_grad():
            self.z.copy_(torch.clamp(self.z, (low - self.mean) / self.std, (high - self.mean) / self.std))

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The learned leaves by name: ``x`` (held standardized, as z) and ``labels`` when learned."""
        return {"x": self.z} if self.learned is None else {"x": self.z, "labels": self.learned}

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, targets) detached copies: the artifacts ``x`` and ``y``."""
        with torch.no_grad():
            return self.x.detach().clone(), self.targets().detach().clone()
