"""What the checks of :mod:`ddspec.testing` raise.

A check that fails raises a :class:`CheckFailed` (an ``AssertionError``, so pytest reports a failure, not an
error) whose message says what is wrong, where (finding codes and spec paths, tensor names, relative errors) and
how to fix it. A check that does not apply to the spec it is given (e.g. a gradient check on a backend that steps
along no gradient) raises :class:`NotApplicable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ddspec.errors import Finding


class CheckFailed(AssertionError):
    """A check of :mod:`ddspec.testing` failed; the message says what, where and how to fix it."""


class NotWellPosed(CheckFailed):
    """Validation and analysis of a spec did not return exactly the expected finding codes. ``findings``: what came
    back (:class:`ddspec.errors.Finding`: code, path, message, fix); ``expected``: the codes that were expected."""

    def __init__(self, message: str, findings: Sequence[Finding] = (), expected: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.findings, self.expected = list(findings), sorted(expected)

    @property
    def codes(self) -> list[str]:
        return sorted({f.code for f in self.findings})


class ShrinkFailed(CheckFailed):
    """The spec at smoke size is not the same problem: it does not validate, is not well posed, or compiles to
    another backend or other facts."""


class SmokeRunFailed(CheckFailed):
    """The run of the shrunk spec stopped with a ddspec error (its findings are in the message)."""


class ArtifactContractBroken(CheckFailed):
    """A run folder breaks the artifact contract (docs/concepts.md#artifacts); ``problems`` lists every breach."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class HypergradientMismatch(CheckFailed):
    """The outer gradient a backend steps along differs from finite differences of its objective by more than
    ``rtol`` (``relative_error``)."""

    def __init__(self, message: str, relative_error: float, rtol: float) -> None:
        super().__init__(message)
        self.relative_error, self.rtol = relative_error, rtol


class NotDeterministic(CheckFailed):
    """Two runs of one spec with one seed gave different tensors or figures."""


class ResumeDiffers(CheckFailed):
    """A run interrupted after a checkpoint and resumed differs from an uninterrupted one (or did not resume)."""


class KindCheckFailed(CheckFailed):
    """A kind class failed generic checks; ``failures`` lists (check, what is wrong) for every one."""

    def __init__(self, message: str, failures: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


class NotApplicable(Exception):
    """The check does not apply to this spec or kind (the message says why and what would apply)."""


def render(findings: Iterable[Finding], indent: str = "  ") -> str:
    """Findings one per line: ``[CODE] path: message`` and the fix below it."""
    return "\n".join(indent + f.render().replace("\n", "\n" + indent) for f in findings)


def label(spec: Any) -> str:
    """How a spec is named in messages: its file, or its name."""
    from pydantic import BaseModel

    if isinstance(spec, str | PathLike):
        return f"spec {spec}"
    name = spec.get("name") if isinstance(spec, Mapping) else spec.name if isinstance(spec, BaseModel) else None
    return f"spec `{name or 'ddspec'}`"
