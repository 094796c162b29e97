"""The command line: exit codes 0/2/1, messages with paths and fixes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


# -- run folders: default runs/<name>, overwrite, interrupted --------------------------------------

def test_run_defaults_to_runs_name_and_refuses_to_overwrite(tmp_path, tiny_spec, monkeypatch, capsys) -> None:
    import torch
    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    tiny_spec["name"] = "tiny run/1"
    spec = write(tmp_path, tiny_spec)
    assert main(["run", spec]) == 0
    out = tmp_path / "runs" / "tiny_run_1"  # characters other than letters, digits, . _ - become _
    assert (out / "metrics.json").exists() and f"artifacts: {Path('runs') / 'tiny_run_1'}" in capsys.readouterr().out
    first = load_file(str(out / "distilled.safetensors"))["x"]
    assert main(["run", spec]) == 2
    err = capsys.readouterr().err
    assert "[RUN_EXISTS] --out: runs/tiny_run_1 already holds a finished run" in err and "--overwrite" in err
    assert main(["run", spec, "--resume", "--overwrite"]) == 2
    assert "[BAD_ARGUMENTS] --overwrite" in capsys.readouterr().err
    (out / "report.html").write_text("stale")
    assert main(["run", spec, "--overwrite", "--set", "runtime.seed=1"]) == 0
    assert not torch.equal(first, load_file(str(out / "distilled.safetensors"))["x"])
    assert "stale" not in (out / "report.html").read_text()
    assert yaml.safe_load((out / "spec.yaml").read_text())["runtime"]["seed"] == 1


def test_an_interrupted_run_says_to_resume(tmp_path, tiny_spec, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"")
    assert main(["run", write(tmp_path, tiny_spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "[RUN_INTERRUPTED] --out" in err and "continue it with --resume" in err and "Traceback" not in err


# -- relative data paths: kept as written, resolved against the spec file's folder ------------------

def test_relative_data_path_from_another_directory(tmp_path, monkeypatch, capsys) -> None:
    import numpy as np

    from tests.test_data_checks import arrays, spec

    folder, elsewhere, third = (tmp_path / name for name in ("specs", "elsewhere", "third"))
    for d in (folder / "data", elsewhere, third):
        d.mkdir(parents=True)
    np.savez(folder / "data" / "d.npz", **arrays())
    spec_file = folder / "problem.yaml"
    spec_file.write_text(yaml.safe_dump(spec({"kind": "npz", "path": "data/d.npz"})))
    monkeypatch.chdir(elsewhere)  # the path is not relative to the current directory
    assert main(["validate", str(spec_file)]) == 0
    assert main(["run", str(spec_file), "--out", "out"]) == 0
    out = elsewhere / "out"
    assert yaml.safe_load((out / "spec.yaml").read_text())["data"]["path"] == "data/d.npz"  # as written
    # the spec file's folder, relative to the run folder
    assert json.loads((out / "plan.json").read_text())["base_dir"] == str(Path("..", "..", "specs"))
    before = json.loads((out / "metrics.json").read_text())["accuracy"]["values"]
    monkeypatch.chdir(third)
    assert main(["evaluate", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["accuracy"]["values"] == before
    assert main(["run", str(spec_file), "--out", str(out), "--resume"]) == 0  # resumes (re-evaluates) from here too
    assert main(["run", str(out / "spec.yaml"), "--out", str(out), "--resume"]) == 0  # the saved spec, too
    # the run folder's spec.yaml repeats the run: its relative path is taken from the spec's folder, not DIR's
    import ddspec

    saved = ddspec.load(out / "spec.yaml")
    assert Path(saved.data.resolved(saved.data.path)).resolve() == (folder / "data" / "d.npz").resolve()
    assert main(["validate", str(out / "spec.yaml")]) == 0
    assert main(["run", str(out / "spec.yaml"), "--out", "again"]) == 0
    assert json.loads((third / "again" / "plan.json").read_text())["base_dir"] == str(Path("..", "..", "specs"))
    assert json.loads((third / "again" / "metrics.json").read_text())["accuracy"]["values"] == before
    capsys.readouterr()


# -- run folders: what --overwrite and a new run delete; bad --out; `ddspec evaluate` -------------

FAST = {"name": "fast", "data": {"kind": "digits"}, "synthetic": {"per_class": 1}, "model": {"kind": "linear"},
        "optimize": {"kind": "select", "method": "random"},
        "evaluate": {"seeds": [0], "epochs": 2, "metrics": ["accuracy"]},
        "runtime": {"progress": False, "threads": 1, "device": "cpu"}}
CACHES = ("teacher.safetensors", "experts.safetensors", "samples.png", "loss.png", "robustness.png")


def test_overwrite_and_a_new_run_delete_every_artifact(tmp_path) -> None:
    import ddspec
    from ddspec.runtime.runner import prepare_out

    plan = ddspec.compile(ddspec.load(FAST))
    out = tmp_path / "r"
    out.mkdir()
    for name in ("checkpoint.pt", "distilled.safetensors", "history.json", "metrics.json", "report.html", *CACHES):
        (out / name).write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    prepare_out(plan, out, resume=False, overwrite=True)
    assert {p.name for p in out.iterdir()} == {"spec.yaml", "plan.json", "notes.txt"}
    # a run that stopped before its first checkpoint left a teacher (of another spec, maybe): not reused
    for name in CACHES:
        (out / name).write_bytes(b"old")
    prepare_out(plan, out, resume=False)
    assert {p.name for p in out.iterdir()} == {"spec.yaml", "plan.json", "notes.txt"}
    # --resume keeps them: the teacher and experts of this run
    for name in ("checkpoint.pt", "teacher.safetensors", "experts.safetensors"):
        (out / name).write_bytes(b"old")
    prepare_out(plan, out, resume=True)
    assert {"checkpoint.pt", "teacher.safetensors", "experts.safetensors"} <= {p.name for p in out.iterdir()}


def test_a_bad_out_is_refused_with_a_fix(tmp_path, capsys) -> None:
    spec = write(tmp_path, FAST)
    (tmp_path / "file").write_text("not a folder")
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        assert main(["run", spec, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"[OUT_NOT_A_FOLDER] --out: {tmp_path / 'file'} is a file, not a folder" in err
        assert "fix: give --out a folder" in err and "INTERNAL" not in err


def test_evaluate_refuses_a_folder_without_its_plan(tmp_path, capsys) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "distilled.safetensors").write_bytes(b"")
    (out / "spec.yaml").write_text(yaml.safe_dump(FAST))
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"[NO_ARTIFACT] DIR: {out} has no plan.json" in err and "INTERNAL" not in err
    (out / "plan.json").write_text("[1, 2")
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err
    assert "[ARTIFACT_INVALID] DIR" in err and "--overwrite" in err and "INTERNAL" not in err


def test_evaluate_writes_the_spec_only_after_it_succeeds(tmp_path, monkeypatch, capsys) -> None:
    from ddspec.evaluate import protocol

    out = tmp_path / "r"
    assert main(["run", write(tmp_path, FAST), "--out", str(out)]) == 0
    spec, metrics = (out / "spec.yaml").read_bytes(), (out / "metrics.json").read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    monkeypatch.setattr(protocol, "evaluate_distilled", crash)
    assert main(["evaluate", str(out), "--set", "evaluate.seeds=[1]"]) == 1
    assert (out / "spec.yaml").read_bytes() == spec and (out / "metrics.json").read_bytes() == metrics
    monkeypatch.undo()
    assert main(["evaluate", str(out), "--set", "evaluate.seeds=[1]", "--set", "runtime.threads=2"]) == 0
    saved = yaml.safe_load((out / "spec.yaml").read_text())
    assert saved["evaluate"]["seeds"] == [1] and saved["runtime"]["threads"] == 2
    assert json.loads((out / "metrics.json").read_text())["seeds"] == [1]
    capsys.readouterr()
    for override in ("runtime.seed=5", "runtime={device: cpu, seed: 5}"):  # it made the saved data
        assert main(["evaluate", str(out), "--set", override]) == 2
        assert "[BAD_OVERRIDE] runtime.seed" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--set", "model.kind=mlp"]) == 2
    assert "[BAD_OVERRIDE] model.kind" in capsys.readouterr().err
