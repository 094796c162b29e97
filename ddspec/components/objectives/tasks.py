"""Built tasks (what ``TASKS.build(spec, ctx)`` returns): the inference task I as a per-sample loss on real data.

A task turns a real batch (x_i, y_i) into ℓ_i(f(x_i)), a function of a model's outputs on x; the bilevel
backend makes the outer loss ℓ(θ) = within_i ℓ_i(f_θ(x_i)) of it (the risk's ``within``: the mean, or a
group objective).

- ``test_error``: ℓ_i = the targets' loss, cross-entropy −log softmax(f(x_i))_{y_i} for classes, squared error
  ‖f(x_i) − y_i‖² for real-valued targets (:attr:`ddspec.components.data.base.Dataset.targets`).
- ``predictions``: ℓ_i = KL(p_T(x_i) ‖ softmax(f(x_i)/τ)), p_T = softmax(teacher(x_i)/τ), τ the temperature of
  distance ``kl``; the teacher is trained on the real data once per run and cached
  (:func:`ddspec.components.training.experts.teacher`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ddspec.components.objectives.targets import Targets

if TYPE_CHECKING:
    from ddspec.runtime.context import RunContext

#: f(x) → (ℓ_i)_i: per-sample losses of a model's outputs on a fixed real batch.
PerSample = Callable[[torch.Tensor], torch.Tensor]


class Task:
    """A built task. ``prepare_seconds``: the time its preparation (e.g. a teacher) took, counted in the run."""

    prepare_seconds: float = 0.0

    def per_sample(self, x: torch.Tensor, y: torch.Tensor) -> PerSample:
        """The per-sample losses ℓ_i on the real batch (x, y), as a function of the outputs f(x)."""
        raise NotImplementedError


@dataclass(frozen=True)
class TestError(Task):
    """ℓ_i = targets.loss(f(x_i), y_i): cross-entropy, or squared error for real-valued targets."""

    __test__ = False  # not a pytest class
    targets: Targets

    def per_sample(self, x: torch.Tensor, y: torch.Tensor) -> PerSample:
        return lambda outputs: self.targets.loss(outputs, y, reduction="none")


@dataclass(frozen=True)
class Predictions(Task):
    """ℓ_i = KL(softmax(teacher(x_i)/τ) ‖ softmax(f(x_i)/τ)); the teacher's log-probabilities are computed once
    per batch, without a graph."""

    teacher: nn.Module
    temperature: float
    prepare_seconds: float = 0.0

    def per_sample(self, x: torch.Tensor, y: torch.Tensor) -> PerSample:
        with torch.no_grad():
            teacher_logp = F.log_softmax(self.teacher(x) / self.temperature, dim=1)

        def kl(outputs: torch.Tensor) -> torch.Tensor:
            logp = F.log_softmax(outputs / self.temperature, dim=1)
            return F.kl_div(logp, teacher_logp, log_target=True, reduction="none").sum(1)
        return kl


def test_error(spec: Any, ctx: RunContext) -> TestError:
    """The builder of task ``test_error``: the loss of the run's data's targets."""
    return TestError(ctx.data.targets)


def predictions(spec: Any, ctx: RunContext) -> Predictions:
    """The builder of task ``predictions``: trains (or loads) the teacher; τ is the temperature of distance ``kl``."""
    from ddspec.components.training.experts import teacher

    model, seconds = teacher(ctx)
    return Predictions(model, float(ctx.problem.distance.temperature), seconds)
