"""Examples run: every examples/*.yaml, and examples/quickstart.py, distills and evaluates end to end at smoke size
(:func:`ddspec.testing.run_smoke`: the same problem, backend and objective, each kind's budgets shrunk), and its
run folder keeps the artifact contract."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from ddspec.testing import check_artifacts, run_smoke, shrink
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_runs(path: Path, tmp_path) -> None:
    result = run_smoke(path, tmp_path / "run")
    assert result.metrics["seeds"] == [0]


def test_quickstart_script_runs(tmp_path, monkeypatch, capsys) -> None:
    spec = importlib.util.spec_from_file_location("quickstart_script", EXAMPLES / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    full = module.build_problem
    monkeypatch.setattr(module, "build_problem", lambda: shrink(full()))
    monkeypatch.setattr(sys, "argv", ["quickstart.py", str(tmp_path / "run")])
    module.main()
    check_artifacts(tmp_path / "run")
    assert "accuracy" in capsys.readouterr().out
