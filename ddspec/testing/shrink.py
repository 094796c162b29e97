"""``shrink``: the same problem at smoke size, so that a real spec runs in seconds.

Every spec section declares its own budgets (:attr:`ddspec.spec.base.SpecModel.smoke`, or an override of
:meth:`~ddspec.spec.base.SpecModel.shrunk` where budgets depend on one another): outer iterations, inner steps,
DC's outer loop, zero-order directions, a teacher's epochs, experts and their epochs, implicit solver iterations,
an attack's steps and samples, evaluation seeds and epochs (and whatever budgets a kind declares, e.g. a PDE's
boundary conditions and grid). Nothing else changes — synthetic sizes, kinds — and :func:`shrink` checks that the
result compiles to the same backend with the same facts.
"""

from __future__ import annotations

from typing import Any

from ddspec.errors import SpecError
from ddspec.testing.errors import ShrinkFailed, label, render
from ddspec.testing.wellposed import Spec, compiled


def shrink(spec: Spec) -> Any:
    """``spec`` (a YAML path, a mapping or a Problem) at smoke size, as a validated Problem. Fails with
    :class:`~ddspec.testing.errors.NotWellPosed` when ``spec`` itself is not well posed, and with
    :class:`ShrinkFailed` when the shrunk spec is invalid, not well posed, or compiles to another backend or other
    facts than the original."""
    from ddspec.spec.loading import load

    problem = load(spec)
    before = compiled(problem)
    try:
        small = load(problem.shrunk())
    except SpecError as err:
        raise ShrinkFailed(f"{label(spec)} at smoke size does not validate (a kind's `smoke` budgets break its "
                           f"constraints):\n{render(err.findings)}") from err
    return same_problem(spec, before, small, "at smoke size")


def same_problem(spec: Spec, before: Any, changed: Any, how: str) -> Any:
    """``changed`` (a Problem), after checking that it compiles like ``before`` (the original's Plan): the same
    backend and the same facts; :class:`ShrinkFailed` naming what differs otherwise."""
    from ddspec.compiler.plan import compile

    try:
        after = compile(changed)
    except SpecError as err:
        raise ShrinkFailed(f"{label(spec)} {how} is not well posed (a kind's `smoke` budgets or `shrunk()` break a "
                           f"rule):\n{render(err.findings)}") from err
    if after.backend != before.backend:
        raise ShrinkFailed(f"{label(spec)} {how} compiles to backend `{after.backend}` ({after.reason}), the original "
                           f"to `{before.backend}` ({before.reason}); a kind's `smoke` budgets must keep the backend")
    if after.analysis.facts != before.analysis.facts:
        lost = sorted(before.analysis.facts - after.analysis.facts)
        gained = sorted(after.analysis.facts - before.analysis.facts)
        raise ShrinkFailed(f"{label(spec)} {how} has other facts than the original: lost {lost}, gained {gained}")
    return changed
