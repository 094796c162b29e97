"""``task``: the inference task I applied to a trained model (what the distilled data must preserve).

A task's builder, called with (spec, run context), returns a :class:`ddspec.components.objectives.tasks.Task`
(the per-sample losses on a real batch). Capabilities: ``needs_teacher`` (a model trained on the real data
first), ``distributions`` (it outputs predictive distributions, which distance ``kl`` compares),
``targets_loss`` (its loss is the targets' own loss on real data, what a model fitted to D̂'s targets in closed
form or by a convex solver is judged by).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ddspec.errors import Finding
from ddspec.registry import TASKS
from ddspec.spec.base import LearningRate, Momentum, NonNegativeFloat, PositiveInt, SpecModel

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis
    from ddspec.spec.data import DataInfo


class TaskBase(SpecModel):
    """What every task kind says about itself, without torch."""

    def default_distance(self) -> dict[str, Any] | None:
        """The distance a backend resolves for this task when the spec declares none (None: no distance)."""
        return None

    def preparation(self, info: DataInfo, flops: float) -> tuple[float, str]:
        """(FLOPs, description) of the work before distilling, where training costs ``flops`` per sample."""
        return 0.0, ""

    def describe_scenarios(self, problem: Any) -> str:
        """The scenarios ω the risk ranges over in one outer iteration, in words (default: ``scenarios``')."""
        return problem.scenarios.describe()


TASKS.base = TaskBase


@TASKS.register(builder="ddspec.components.objectives.tasks:test_error", capabilities=("targets_loss",))
class TestErrorTask(TaskBase):
    """Error on the real data's distribution: the targets' loss on real samples (cross-entropy for classes,
    squared error for real-valued targets)."""

    __test__ = False  # not a pytest class
    kind: Literal["test_error"] = "test_error"


@TASKS.register(builder="ddspec.components.objectives.tasks:predictions",
                capabilities=("needs_teacher", "distributions"))
class PredictionsTask(TaskBase):
    """The trained model's predictive distribution on real inputs, compared (distance ``kl``) with a
    teacher's: the problem's model trained on the real training data once (SGD, lr × 0.1 at half),
    cached in the run directory as ``teacher.safetensors``."""

    smoke: ClassVar[dict[str, Any]] = {"teacher_epochs": 1}
    kind: Literal["predictions"] = "predictions"
    teacher_epochs: PositiveInt = Field(30, le=10_000, description="Epochs of teacher training on the real data.")
    teacher_lr: LearningRate = 0.01
    teacher_momentum: Momentum = 0.9
    teacher_weight_decay: NonNegativeFloat = 5e-4
    teacher_batch_size: PositiveInt = 256

    def default_distance(self) -> dict[str, Any] | None:
        return {"kind": "kl"}

    def preparation(self, info: DataInfo, flops: float) -> tuple[float, str]:
        """``teacher_epochs`` epochs of training on the real data."""
        return (self.teacher_epochs * info.n_train * flops,
                f"first a teacher, {self.teacher_epochs} epochs on the real data")

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """The teacher's predictive distribution is compared by a distance of distributions (``kl``), and exists
        only for class targets; the teacher is a network of ``model``, which an estimator model family has not."""
        if analysis.has("train:estimator"):
            yield Finding("TEACHER_NEEDS_NETWORK", "task", f"the teacher is a network of `model`, but the model "
                          f"family is the estimator of train `{analysis.kind('train')}`", "use task: test_error")
        if analysis.problem.distance is not None and not analysis.has("distance:distributions"):
            yield Finding("TASK_DISTANCE_MISMATCH", "distance", f"task `{self.kind}` is compared with `kl`, not "
                          f"`{analysis.kind('distance')}`", "set distance: {kind: kl}, or remove `distance`")
        if analysis.has("targets:real"):
            yield Finding("PREDICTIONS_NEED_CLASSES", "task", f"task `{self.kind}` compares predictive class "
                          f"distributions, but data `{analysis.problem.data.kind}` has real-valued targets "
                          "(there is no class distribution to match)", "use task: {kind: test_error}")
