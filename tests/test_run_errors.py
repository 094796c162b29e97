"""Every failure inside a run is a RunError: a code, the spec path and a fix, exit 1, no traceback (``--debug``
adds it); a failed run leaves whole files that a rerun or ``--resume`` continues from."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import cvxpy as cp
import numpy as np
import pytest
import torch
import yaml

from ddspec.cli import main
from ddspec.components.closed_form import convex
from ddspec.errors import RunError
from tests.conftest import ROOT
from tests.test_data_checks import broken_source, run  # noqa: F401  (the plugin source fixture)


def convex_spec() -> dict:
    return {
        "name": "convex-errors", "data": {"kind": "tabular", "name": "wine"}, "synthetic": {"per_class": 1},
        "model": {"kind": "linear"}, "task": {"kind": "test_error"},
        "train": {"kind": "convex", "loss": "logistic", "lam": 0.01},
        "optimize": {"kind": "gradient", "iterations": 1, "lr": 0.05, "real_batch_per_class": 8},
        "evaluate": {"seeds": [0]},
        "runtime": {"device": "cpu", "progress": False, "threads": 1},
    }


def run_convex(tmp_path, capsys) -> tuple[int, str]:
    path = tmp_path / "convex.yaml"
    path.write_text(yaml.safe_dump(convex_spec()))
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    return code, capsys.readouterr().err


def test_a_failed_conic_solve_is_a_run_error(tmp_path, capsys, monkeypatch) -> None:
    def fail(self, *args, **kwargs):
        raise cp.error.SolverError("Solver 'CLARABEL' failed: numerical trouble")

    monkeypatch.setattr(cp.Problem, "solve", fail)
    code, err = run_convex(tmp_path, capsys)
    assert code == 1 and "Traceback" not in err
    assert "[CONVEX_SOLVE_FAILED] train: CLARABEL failed on the logistic_l2 problem" in err and "train.lam" in err


def test_a_singular_kkt_matrix_is_a_run_error(tmp_path, capsys, monkeypatch) -> None:
    def singular(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.solve: The solver failed because the input matrix is singular.")

    monkeypatch.setattr(torch.linalg, "solve", singular)
    code, err = run_convex(tmp_path, capsys)
    assert code == 1 and "Traceback" not in err
    assert "[SINGULAR_KKT] train.lam: the KKT matrix of the logistic_l2 solution is singular" in err
    assert "fix: raise train.lam" in err


def test_singular_kkt_is_still_a_value_error_for_library_callers(monkeypatch) -> None:
    X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    Y = np.array([0, 1, 1, 0])
    model = convex.ConvexModel("logistic_l2", 0.1, 2)
    solution = convex.solve(model, X, Y)
    monkeypatch.setattr(torch.linalg, "solve", lambda *a, **k: (_ for _ in ()).throw(torch.linalg.LinAlgError("x")))
    with pytest.raises(ValueError, match="singular") as e:
        convex.hypergradient(model, X, Y, solution, np.ones_like(solution.W), np.ones_like(solution.b))
    assert isinstance(e.value, RunError)
    assert [(f.code, f.path) for f in e.value.findings] == [("SINGULAR_KKT", "train.lam")]


@pytest.mark.usefixtures("broken_source")
def test_an_unexpected_exception_is_internal_with_the_fix_to_rerun_with_debug(tmp_path, capsys) -> None:
    code, err = run(tmp_path, {"kind": "broken_test", "defect": "crash"}, capsys)
    assert code == 1 and "Traceback" not in err
    assert "[INTERNAL] <spec>: unexpected KeyError: 'no such column'" in err
    assert "fix: rerun with --debug for the traceback and report it" in err
    # the failed run left whole files only, and no run to resume: the same folder runs once the source is fixed
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"spec.yaml", "plan.json"}
    code, _ = run(tmp_path, {"kind": "broken_test", "defect": "none"}, capsys)
    assert code == 0 and (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.usefixtures("broken_source")
def test_out_of_memory(tmp_path, capsys) -> None:
    code, err = run(tmp_path, {"kind": "broken_test", "defect": "memory"}, capsys)
    assert code == 1 and "[OUT_OF_MEMORY] runtime.device: out of memory (MemoryError: cannot allocate 10 GiB)" in err
    assert "Traceback" not in err


SCRIPT = """
import sys
from ddspec.cli import main
from ddspec.registry import DATA
from tests.test_data_checks import BrokenData, build_broken
DATA.register(BrokenData, builder=build_broken)
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("debug", [False, True])
def test_no_traceback_from_a_process_unless_debug(tmp_path, debug) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"data": {"kind": "broken_test", "defect": "crash"}, "distance": {"kind": "mmd"},
                                    "evaluate": {"metrics": ["accuracy"]},  # 8 test rows: too few for cluster_min
                                    "runtime": {"device": "cpu", "progress": False}}))
    argv = ["run", str(spec), "--out", str(tmp_path / "out"), *(["--debug"] if debug else [])]
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), *argv], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 1 and "[INTERNAL]" in proc.stderr
    assert ("Traceback" in proc.stderr) == debug
    if debug:  # the original exception, where it was raised
        assert "KeyError: 'no such column'" in proc.stderr and "build_broken" in proc.stderr


@pytest.mark.usefixtures("broken_source")
def test_a_run_that_failed_in_evaluation_resumes_there(tmp_path, capsys, monkeypatch) -> None:
    from ddspec.runtime import runner

    evaluate_into = runner.evaluate_into

    def fail(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    monkeypatch.setattr(runner, "evaluate_into", fail)
    data = {"kind": "broken_test", "defect": "none"}
    code, err = run(tmp_path, data, capsys)
    assert code == 1 and "[INTERNAL] <spec>: unexpected RuntimeError: evaluation crashed" in err
    out = tmp_path / "out"
    assert (out / "distilled.safetensors").exists() and not (out / "metrics.json").exists()
    monkeypatch.setattr(runner, "evaluate_into", evaluate_into)
    code, err = run(tmp_path, data, capsys)
    assert code == 2 and "[RUN_INTERRUPTED] --out" in err and "--resume" in err
    path = tmp_path / "spec.yaml"
    assert main(["run", str(path), "--out", str(out), "--resume"]) == 0 and (out / "metrics.json").exists()
