"""``assert_well_posed``: validate and analyse a spec, and fail unless exactly the expected finding codes come back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from os import PathLike
from typing import Any

from ddspec.errors import Finding, SpecError
from ddspec.testing.errors import NotWellPosed, label, render

#: A spec as the checks take it: a YAML file, a mapping of sections, or a Problem.
Spec = str | PathLike | Mapping[str, Any] | Any


def findings(spec: Spec) -> tuple[list[Finding], Any]:
    """(findings, plan): what validating, analysing and compiling ``spec`` reports — the errors that stop it (plan
    None), or the plan's warnings and notes."""
    from ddspec.compiler.plan import compile
    from ddspec.spec.loading import load

    try:
        plan = compile(load(spec))
    except SpecError as err:  # invalid, not well posed, no backend
        return list(err.findings), None
    return list(plan.notes), plan


def assert_well_posed(spec: Spec, expect: Iterable[str] = ()) -> Any:
    """Validate and analyse ``spec`` (a YAML path, a mapping or a Problem) and compile it; return the
    :class:`~ddspec.compiler.plan.Plan` (None when errors were expected). Fails with :class:`NotWellPosed` — every
    finding's code, spec path, message and fix — unless the codes of the errors and warnings that come back are
    exactly ``expect`` (notes count only when expected, e.g. ``SURROGATE_OBJECTIVE``)."""
    expected = set(expect)
    found, plan = findings(spec)
    codes = {f.code for f in found if f.severity != "note" or f.code in expected}
    if codes != expected:
        want = f"expected {sorted(expected)}" if expected else "expected no errors or warnings"
        raise NotWellPosed(f"{label(spec)}: {want}, found {sorted(codes)}:\n{render(found)}", found, expected)
    return plan


def compiled(spec: Spec) -> Any:
    """The Plan of a well-posed ``spec`` (:class:`NotWellPosed` with its findings otherwise; warnings allowed)."""
    found, plan = findings(spec)
    if plan is None:
        codes = sorted({f.code for f in found})
        raise NotWellPosed(f"{label(spec)} is not well posed ({', '.join(codes)}):\n{render(found)}", found)
    return plan
