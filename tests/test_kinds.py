"""Generic checks every registered kind must pass, whatever its axis (:func:`ddspec.testing.check_kind`,
scikit-learn's ``check_estimator`` in spirit): its builder imports, its spec class is documented, round-trips and
is in the JSON Schema and the reference, and its capability tags agree with what it does."""

from __future__ import annotations

import pytest

from ddspec.registry import REGISTRIES
from ddspec.spec.problem import problem_model
from ddspec.testing import check_kind

problem_model()  # imports the built-in spec modules and loads the plugins, so every kind is registered

ENTRIES = [(axis, entry) for axis, registry in REGISTRIES.items() for entry in registry.entries()]
KINDS = [(axis, entry.spec) for axis, entry in ENTRIES]
IDS = [f"{axis}:{entry.kind}" for axis, entry in ENTRIES]


@pytest.mark.parametrize(("axis", "spec_cls"), KINDS, ids=IDS)
def test_kind_passes_the_generic_checks(axis: str, spec_cls: type) -> None:
    check_kind(spec_cls, axis)
