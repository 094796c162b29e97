"""The analysis pass: structural facts the rules and the backends' ``can_lower`` read.

``targets:classes`` or ``targets:real`` says what the data's targets are (and so what the models predict).

Facts come from the registries' capability tags, so a new kind adds facts by declaring
capabilities, not by editing this module. A fact ``<axis>:<capability>`` is present when the
kind chosen on that axis declares the capability (e.g. ``distance:surrogate``,
``optimize:selection``, ``train:differentiable``, ``model:differentiable``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ddspec.registry import DATA, DISTANCES, MODELS, OPTIMIZERS, RISKS, TASKS, TRAIN, Registry
from ddspec.spec.data import DataInfo

AXES: dict[str, Registry] = {
    "model": MODELS, "train": TRAIN, "task": TASKS, "distance": DISTANCES, "risk": RISKS, "optimize": OPTIMIZERS,
}


@dataclass(frozen=True)
class Analysis:
    """A problem with its data described and its structure summarised as facts."""

    problem: Any
    data: DataInfo
    synthetic_counts: tuple[int, ...]
    facts: frozenset[str]

    def has(self, fact: str) -> bool:
        return fact in self.facts

    @property
    def n_synthetic(self) -> int:
        return sum(self.synthetic_counts)

    def kind(self, axis: str) -> str | None:
        """The kind chosen on ``axis`` (None if that section is unset)."""
        section = getattr(self.problem, axis)
        return None if section is None else section.kind


def analyse(problem: Any) -> Analysis:
    """Describe the data (cheaply, without loading tensors) and collect the facts of ``problem``."""
    info = problem.data.describe()
    facts = {f"inputs:{len(info.input_shape)}d", f"targets:{info.targets}"}
    facts.update(f"data:{cap}" for cap in DATA[problem.data.kind].capabilities)
    for axis, registry in AXES.items():
        section = getattr(problem, axis)
        if section is not None:
            facts.update(f"{axis}:{cap}" for cap in registry[section.kind].capabilities)
    if problem.synthetic.learn_labels:
        facts.add("synthetic:learned_targets")
    return Analysis(problem, info, tuple(problem.synthetic.counts(len(info.class_counts))), frozenset(facts))
