"""Examples stay valid: every YAML compiles; the Python twin of the quickstart is the same problem."""

from __future__ import annotations

import importlib.util

from ddspec.spec.loading import load
from tests.conftest import ROOT


def test_quickstart_python_twin_equals_the_yaml() -> None:
    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "examples" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build_problem() == load(ROOT / "examples" / "quickstart.yaml")


def test_examples_point_editors_at_the_schema() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schemas/ddspec.schema.json", path.name
