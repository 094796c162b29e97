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
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ddspec.errors import Finding, SpecError

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


#: Learned tensors by name (what a backend's outer optimizer steps on).
Tensors = dict[str, "torch.Tensor"]


@dataclass
class OuterGradient:
    """What a backend's outer optimizer steps along, as functions of its learned tensors, built from the code its
    run uses (for :func:`ddspec.testing.check_hypergradient`): ``tensors`` their starting values (name → tensor),
    ``objective(tensors) → float`` the objective, and ``gradient(tensors) → tensors`` what the backend steps along:
    the objective's gradient, or with ``stochastic`` an estimate whose mean is (zero-order's, from ``samples``
    directions), or with an ``approximation`` (why, in words) a deliberate approximation of it (e.g. a truncated
    unroll). Every evaluation replays the same random draws (scenarios, batches: common random numbers).

    ``held``, for an approximation that holds a quantity of the objective constant (MMD's median bandwidth):
    the objective with that quantity frozen at its value at ``tensors``, of which ``gradient`` is the exact
    gradient; None where the approximation has no such objective (a truncated unroll)."""

    tensors: Tensors
    objective: Callable[[Tensors], float]
    gradient: Callable[[Tensors], Tensors]
    stochastic: bool = False
    samples: int = 0
    approximation: str = ""
    #: The relative precision of ``objective`` (e.g. a conic solver's tolerance), which sets the finite-difference step.
    precision: float = 1e-16
    held: Callable[[Tensors], float] | None = None


class NoOuterGradient(Exception):
    """The backend (for this problem) steps along no outer gradient (e.g. a closed-form construction, a selection
    of real samples); the message says why."""


#: A context-manager factory: every ``with block():`` replays the same random draws (or holds the same values).
Block = Callable[[], AbstractContextManager[Any]]


def stepped_gradient(tensors: Tensors, replay: Block, step: Callable[[], float], *, hold: Block | None = None,
                     **options: Any) -> OuterGradient:
    """The :class:`OuterGradient` of a backend whose outer step is ``step()``: it computes the objective at the
    current values of the learned ``tensors`` and accumulates its gradient into their ``.grad`` (what the run does
    before ``optimizer.step()``). Each evaluation copies the given values in and calls ``step`` inside a
    ``replay()`` block (:meth:`~ddspec.runtime.context.RunContext.replay`); ``options`` go to OuterGradient. With
    ``hold`` (a factory of blocks whose first one records the held quantities and whose later ones reuse them),
    ``held`` is the objective evaluated inside ``hold()`` blocks, recorded here at the starting values."""
    import torch

    def evaluate(values: Tensors, held: Block | None = None) -> tuple[float, Tensors]:
        with torch.no_grad():
            for name, t in tensors.items():
                t.copy_(values[name])
                t.grad = None
        with replay(), (held or nullcontext)():
            loss = step()
        return loss, {n: torch.zeros_like(t) if t.grad is None else t.grad.detach().clone() for n, t in tensors.items()}

    start = {name: t.detach().clone() for name, t in tensors.items()}
    if hold is not None:
        evaluate(start, hold)  # records the held quantities at the start
    return OuterGradient(start, lambda values: evaluate(values)[0], lambda values: evaluate(values)[1],
                         held=None if hold is None else lambda values: evaluate(values, hold)[0], **options)


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
    #: Why this backend computes on the CPU whatever ``runtime.device`` says ("" when it runs on CUDA too):
    #: ``compile`` then resolves ``runtime.device: auto`` to cpu (``explain`` says why) and refuses cuda
    #: (DEVICE_CPU_ONLY).
    cpu_only: str = ""

    def device_findings(self, problem: Any) -> list[Finding]:
        """For a backend that computes on the CPU only (``cpu_only``): with ``runtime.device: auto`` a note that
        the run is on the CPU and why (the caller resolves the device to cpu); ``cuda`` is a SpecError
        DEVICE_CPU_ONLY. ``compile`` asks it for a new run, ``ddspec evaluate`` for the saved run's backend."""
        if not self.cpu_only or problem.runtime.device == "cpu":
            return []
        if problem.runtime.device == "cuda":
            raise SpecError.one("DEVICE_CPU_ONLY", "runtime.device", f"backend `{self.name}` has no CUDA path: "
                                f"{self.cpu_only}", "set runtime.device: cpu (or auto, which runs it on the CPU)")
        return [Finding("DEVICE_CPU_ONLY", "runtime.device", f"runs on the CPU: {self.cpu_only}", severity="note")]

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        """(True, why) if this backend can run the problem, else (False, the reason it cannot)."""
        raise NotImplementedError

    def resolve(self, analysis: Analysis) -> dict[str, Any]:
        """Defaults this backend fills in: dotted spec path → value (only for fields left None)."""
        return {}

    def estimate(self, analysis: Analysis) -> Estimate:
        """Memory and time estimate for ``explain``."""
        raise NotImplementedError

    def parallel(self, analysis: Analysis) -> tuple[str, int] | None:
        """The units this backend splits across torchrun's ranks, (name, count per outer iteration), or None when
        every rank runs the whole distillation (the evaluation is split either way; docs/distributed.md)."""
        return None

    def run(self, ctx: RunContext) -> Distilled:
        """Distill; use ``ctx.outer``/``ctx.loop`` for iterations (progress, checkpoints, resume, divergence).
        By default: ``distill(ctx)`` of the module ``run`` beside the declaration (``backends/<name>/run.py``),
        imported here so that the declaration stays light."""
        return importlib.import_module(f"{type(self).__module__}.run").distill(ctx)

    def extra_metrics(self, problem: Any, data: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Backend-specific figures added to ``metrics.json`` after the evaluation protocol (default: none)."""
        return {}

    def outer_gradient(self, ctx: RunContext) -> OuterGradient:
        """The outer objective and the gradient this backend steps along, at the start of a run of ``ctx``
        (:class:`OuterGradient`). By default: ``outer_gradient(ctx)`` of the module ``run`` beside the
        declaration, as :meth:`run` finds ``distill``; :class:`NoOuterGradient` when that module defines none
        (the backend steps along no gradient) or there is no such module."""
        name = f"{type(self).__module__}.run"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            raise NoOuterGradient(f"backend `{self.name}` has no module {name} with an outer_gradient(ctx)") from err
        build = vars(module).get("outer_gradient")
        if build is None:
            raise NoOuterGradient(f"backend `{self.name}` steps along no outer gradient")
        return build(ctx)


def missing_facts(analysis: Analysis, required: Iterable[tuple[str, str, str]]) -> list[str]:
    """What ``can_lower`` says for each required fact the problem lacks: ``(fact, axis, why)`` gives
    "the <axis> `<kind>` <why>", or "no <axis> is declared" when that section is unset."""
    return [f"the {axis} `{analysis.kind(axis)}` {why}" if analysis.kind(axis) else f"no {axis} is declared"
            for fact, axis, why in required if not analysis.has(fact)]
