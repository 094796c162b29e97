"""One error hierarchy for every user-facing failure.

Each error carries a stable ``code``, the ``path`` in the spec it concerns (dotted, e.g.
``model.width``; empty when it concerns no single field), a ``message`` and a ``fix`` hint.
The CLI maps :class:`SpecError` (and its subclasses) to exit code 2 and :class:`RunError`
to exit code 1, printing :meth:`DDSpecError.render` instead of a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
        header = {
            SpecError: "invalid spec",
            WellPosednessError: "the spec is not well posed",
            BackendUnavailableError: "no backend can run this spec",
            CompileError: "compile failed",
            RunError: "run failed",
            DivergenceError: "run diverged",
        }.get(type(self), "error")
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


class DivergenceError(RunError):
    """A loss or the synthetic data became NaN/inf."""
