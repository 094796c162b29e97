"""One error hierarchy for every user-facing failure.

Each error carries a stable ``code``, the ``path`` in the spec it concerns (dotted, e.g.
``model.width``; empty when it concerns no single field), a ``message`` and a ``fix`` hint.
The CLI maps :class:`SpecError` (and its subclasses) to exit code 2 and :class:`RunError`
to exit code 1, printing :meth:`DDSpecError.render` instead of a traceback. Inside a run every failure
is a RunError: components raise :class:`RunFailure` subclasses for the failures they know, and any other
exception becomes :func:`internal_error` (code ``INTERNAL``).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True)
class Finding:
    """One problem found in a spec: ``severity`` is ``error`` (blocks compile), ``warning``
    (compiles, but the run may fail: shown by ``explain``) or ``note``."""

    code: str
    path: str
    message: str
    fix: str = ""
    severity: str = "error"

    def render(self) -> str:
        where = self.path or "<spec>"
        text = f"[{self.code}] {where}: {self.message}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


@dataclass
class DDSpecError(Exception):
    """Base class: one or more findings."""

    findings: list[Finding] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.render())

    @classmethod
    def one(cls, code: str, path: str, message: str, fix: str = "") -> DDSpecError:
        return cls([Finding(code, path, message, fix)])

    def render(self) -> str:
        headers = (  # the most specific class first: subclasses (e.g. plugins' RunFailures) get their base's header
            (WellPosednessError, "the spec is not well posed"),
            (BackendUnavailableError, "no backend can run this spec"),
            (CompileError, "compile failed"),
            (SpecError, "invalid spec"),
            (DivergenceError, "run diverged"),
            (InternalError, "internal error (a bug in ddspec or a plugin)"),
            (RunError, "run failed"),
        )
        header = next((text for cls, text in headers if isinstance(self, cls)), "error")
        n = len(self.findings)
        lines = [f"ddspec: {header} ({n} problem{'s' if n != 1 else ''})"]
        lines += [f.render() for f in self.findings]
        return "\n".join(lines)


class SpecError(DDSpecError):
    """The spec (or a CLI argument) is malformed: unknown key, wrong type, bad YAML, missing file."""


class WellPosednessError(SpecError):
    """The spec validates but asks for something that cannot be solved as stated."""


class BackendUnavailableError(SpecError):
    """No registered backend can lower this combination of components."""


class CompileError(SpecError):
    """The compiler could not build a plan."""


class RunError(DDSpecError):
    """A run failed after it started (I/O, device, interrupted)."""


class RankFailed(RunError):
    """Under torchrun, another rank failed: its findings are quoted (what every rank but the failing one raises)."""


class DivergenceError(RunError):
    """A loss or the synthetic data became NaN/inf."""


class RunFailure(RunError):
    """A known way a component can fail inside a run, raised as ``SomeFailure(message)``: the subclass fixes
    the stable ``CODE``, the spec ``PATH`` it concerns and the ``FIX``, so the failure reaches the user as a
    RunError (exit 1, no traceback) wherever it is raised."""

    CODE: ClassVar[str] = "RUN_FAILED"
    PATH: ClassVar[str] = ""
    FIX: ClassVar[str] = ""

    def __init__(self, message: str) -> None:
        super().__init__([Finding(self.CODE, self.PATH, message, self.FIX)])


#: The fix of an unexpected exception (a bug): see it whole, then report it.
INTERNAL_FIX = "rerun with --debug for the traceback and report it"


class InternalError(RunError):
    """An exception no component anticipated (a bug), code ``INTERNAL``: see :func:`internal_error`."""


def internal_error(exc: BaseException) -> InternalError:
    """The RunError ``INTERNAL`` for an exception no component anticipated: its type and message (raise it
    ``from exc`` so that ``--debug`` can show the original traceback)."""
    return InternalError([Finding("INTERNAL", "", f"unexpected {type(exc).__name__}: {exc}", INTERNAL_FIX)])


def format_traceback(exc: BaseException) -> str:
    """The full traceback of ``exc``, with the exceptions it was raised from (what ``--debug`` prints)."""
    return "".join(traceback.format_exception(exc))
