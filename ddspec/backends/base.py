"""What a backend is: a lowering of a problem to an algorithm.

A backend class is registered with :func:`ddspec.register_backend` (usable as a class decorator) in a
light declaration module: a built-in one named in :data:`ddspec.registry.BUILTIN_BACKENDS`, or a
plugin's (entry-point group ``ddspec.plugins``). That module imports torch only inside
:meth:`Backend.run` (directly or through an implementation module), so that ``ddspec validate`` and
``ddspec explain`` stay fast. ``backend: <name>`` in a spec is checked against the registered names
when the problem is compiled.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ddspec.analysis.facts import Analysis
    from ddspec.runtime.context import RunContext


#: What the hypergradient backends (bilevel, convex, KIP) fill in for a gradient ``optimize`` left unset:
#: Adam with lr 0.01 on the synthetic tensors (held standardized), no augmentation.
HYPERGRADIENT_DEFAULTS: dict[str, Any] = {
    "optimize.optimizer": "adam", "optimize.lr": 0.01, "optimize.augmentation.enabled": False,
}


#: Inner steps K of torch training when the spec leaves train.steps unset (bilevel, zero-order).
DEFAULT_INNER_STEPS = 20


@dataclass
class Distilled:
    """The result of a backend: inputs ``x`` in the data's units and shape, targets ``y`` (int64 class indices,
    float N x K soft labels, or real values in the data's target shape: N or N x T), and any other learned
    tensors (e.g. ``lr``)."""

    x: torch.Tensor
    y: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Estimate:
    """Rough cost of a run, shown by ``explain`` before anything runs."""

    memory_bytes: int
    seconds: float
    detail: str = ""
    advice: str = ""  # what to change when the memory estimate exceeds what the device has


class Backend:
    """Base class. Subclasses set ``name``, ``summary`` and ``preference`` (lower wins among
    backends that can lower a problem) and implement the four methods."""

    name: str = ""
    summary: str = ""
    preference: int = 100

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        """(True, why) if this backend can run the problem, else (False, the reason it cannot)."""
        raise NotImplementedError

    def resolve(self, analysis: Analysis) -> dict[str, Any]:
        """Defaults this backend fills in: dotted spec path → value (only for fields left None)."""
        return {}

    def estimate(self, analysis: Analysis) -> Estimate:
        """Memory and time estimate for ``explain``."""
        raise NotImplementedError

    def run(self, ctx: RunContext) -> Distilled:
        """Distill; use ``ctx.outer``/``ctx.loop`` for iterations (progress, checkpoints, resume, divergence).
        By default: ``distill(ctx)`` of the module ``run`` beside the declaration (``backends/<name>/run.py``),
        imported here so that the declaration stays light."""
        return importlib.import_module(f"{type(self).__module__}.run").distill(ctx)

    def extra_metrics(self, problem: Any, data: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Backend-specific figures added to ``metrics.json`` after the evaluation protocol (default: none)."""
        return {}


def missing_facts(analysis: Analysis, required: Iterable[tuple[str, str, str]]) -> list[str]:
    """What ``can_lower`` says for each required fact the problem lacks: ``(fact, axis, why)`` gives
    "the <axis> `<kind>` <why>", or "no <axis> is declared" when that section is unset."""
    return [f"the {axis} `{analysis.kind(axis)}` {why}" if analysis.kind(axis) else f"no {axis} is declared"
            for fact, axis, why in required if not analysis.has(fact)]
