"""The command line: exit codes 0/2/1, messages with paths and fixes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from ddspec.cli import main
from tests.conftest import ROOT


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddspec.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False)


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates_and_explains(example, capsys) -> None:
    assert main(["validate", str(example)]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["explain", str(example)]) == 0
    assert "backend" in capsys.readouterr().out


def write(tmp_path, spec: dict | str):
    path = tmp_path / "spec.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"data": {"kind": "digits"}, "distance": {"kind": "feature_mean"}, "extra": 1}, "[UNKNOWN_KEY] extra"),
        ({"data": {"kind": "digitz"}}, "[UNKNOWN_KIND] data.kind"),
        ({"data": {"kind": "digits"}, "synthetic": {"per_class": -3}}, "[OUT_OF_RANGE] synthetic.per_class"),
        ({"data": {"kind": "digits"}, "synthetic": {"per_class": 1000}, "distance": {"kind": "mmd"}}, "[CLASS_TOO_SMALL]"),
        ({"data": {"kind": "digits"}, "evaluate": {"epochs": "many"}}, "[BAD_TYPE] evaluate.epochs"),
        ({"data": {"kind": "npz", "path": "missing.npz"}, "distance": {"kind": "mmd"}}, "[DATA_FILE_NOT_FOUND] data.path"),
        ("data: {kind: digits\n", "[YAML_SYNTAX]"),
    ],
)
def test_bad_specs_exit_2_with_path_and_fix(tmp_path, spec, needle, capsys) -> None:
    assert main(["validate", write(tmp_path, spec)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "fix:" in err and "Traceback" not in err


def test_bad_arguments_exit_2(tmp_path, capsys) -> None:
    assert main(["validate", str(tmp_path / "none.yaml")]) == 2
    assert "[SPEC_NOT_FOUND]" in capsys.readouterr().err
    spec = write(tmp_path, {"data": {"kind": "digits"}, "distance": {"kind": "mmd"}})
    assert main(["validate", spec, "--set", "synthetic.per_class"]) == 2
    assert "[BAD_OVERRIDE]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_no_traceback_from_a_subprocess(tmp_path) -> None:
    proc = cli("explain", write(tmp_path, {"data": {"kind": "digits"}, "oops": True}))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "oops" in proc.stderr


def test_explain_json(tmp_path, capsys) -> None:
    assert main(["explain", str(ROOT / "examples" / "quickstart.yaml"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["backend"] == "matching" and "explain" in plan


def test_schema_command(capsys) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "ddspec problem" and "data" in schema["properties"]
