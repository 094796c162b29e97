"""`ddspec run` end to end on a tiny problem: artifacts, determinism, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch
import yaml
from safetensors.torch import load_file

from ddspec.cli import main
from tests.conftest import ROOT


def write_spec(tmp_path, spec: dict) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_run_writes_the_artifact_contract(tmp_path, tiny_spec, capsys) -> None:
    out = tmp_path / "run"
    assert main(["run", write_spec(tmp_path, tiny_spec), "--out", str(out)]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"distilled.safetensors", "spec.yaml", "plan.json", "metrics.json", "report.html", "history.json"} <= files
    assert "checkpoint.pt" not in files
    tensors = load_file(str(out / "distilled.safetensors"))
    assert tensors["x"].shape == (20, 1, 8, 8) and tensors["x"].dtype == torch.float32
    assert tensors["y"].dtype == torch.int64 and tensors["y"].tolist() == [c for c in range(10) for _ in range(2)]
    metrics = json.loads((out / "metrics.json").read_text())
    acc = metrics["accuracy"]
    assert 0.0 <= acc["mean"] <= 1.0 and len(acc["values"]) == 1 and acc["std"] == 0.0
    assert metrics["distill_seconds"] > 0 and metrics["seeds"] == [0]
    assert json.loads((out / "plan.json").read_text())["backend"] == "matching"
    resolved = yaml.safe_load((out / "spec.yaml").read_text())
    assert resolved["optimize"]["lr"] is not None and resolved["model"]["width"] == 8
    assert "accuracy" in capsys.readouterr().out


def test_same_seed_same_tensors_and_refuses_to_overwrite(tmp_path, tiny_spec, capsys) -> None:
    spec = write_spec(tmp_path, tiny_spec)
    for name in ("a", "b"):
        assert main(["run", spec, "--out", str(tmp_path / name)]) == 0
    a, b = (load_file(str(tmp_path / n / "distilled.safetensors")) for n in "ab")
    assert torch.equal(a["x"], b["x"])
    assert main(["run", spec, "--out", str(tmp_path / "a")]) == 2
    assert "[RUN_EXISTS]" in capsys.readouterr().err
    assert main(["run", spec, "--out", str(tmp_path / "c"), "--set", "runtime.seed=1"]) == 0
    assert not torch.equal(a["x"], load_file(str(tmp_path / "c" / "distilled.safetensors"))["x"])


def test_kill_then_resume_equals_a_straight_run(tmp_path, tiny_spec) -> None:
    tiny_spec["optimize"]["iterations"] = 600
    tiny_spec["runtime"]["checkpoint_every"] = 20
    spec = write_spec(tmp_path, tiny_spec)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ddspec.cli", "run", spec, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:  # the loop is running
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "[INTERRUPTED]" in err and "--resume" in err
    done = torch.load(out / "checkpoint.pt", weights_only=True)["iteration"]
    assert 20 <= done < 600
    assert main(["run", spec, "--out", str(out), "--resume"]) == 0
    assert main(["run", spec, "--out", str(tmp_path / "straight")]) == 0
    resumed = load_file(str(out / "distilled.safetensors"))
    straight = load_file(str(tmp_path / "straight" / "distilled.safetensors"))
    assert torch.equal(resumed["x"], straight["x"])
    rows = json.loads((out / "history.json").read_text())["rows"]
    assert [r["iteration"] for r in rows] == list(range(600))


def test_resume_refuses_a_changed_spec(tmp_path, tiny_spec, capsys) -> None:
    spec = write_spec(tmp_path, tiny_spec)
    out = str(tmp_path / "r")
    assert main(["run", spec, "--out", out]) == 0
    assert main(["run", spec, "--out", out, "--resume", "--set", "optimize.iterations=7"]) == 2
    assert "[RESUME_SPEC_CHANGED]" in capsys.readouterr().err


def test_divergence_exits_1_naming_the_iteration(tmp_path, tiny_spec, capsys) -> None:
    # With a linear model the DM loss per class is ‖m_real − mean(x_i)‖², so one SGD step maps the
    # synthetic mean's error e to (1 − 2·lr/n)·e: with lr = 100 and n = 2 it grows 99× per step.
    tiny_spec["model"] = {"kind": "linear"}
    tiny_spec["optimize"].update({"lr": 100, "optimizer": "sgd", "momentum": 0.0, "iterations": 50,
                                  "augmentation": {"enabled": False}})
    assert main(["run", write_spec(tmp_path, tiny_spec), "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "[DIVERGED]" in err and "iteration" in err and "optimize.lr" in err and "Traceback" not in err


def test_evaluate_and_report_commands(tmp_path, tiny_spec, capsys) -> None:
    out = tmp_path / "e"
    assert main(["run", write_spec(tmp_path, tiny_spec), "--out", str(out)]) == 0
    before = json.loads((out / "metrics.json").read_text())
    assert main(["evaluate", str(out), "--set", "evaluate.seeds=[0, 1]"]) == 0
    after = json.loads((out / "metrics.json").read_text())
    assert after["seeds"] == [0, 1] and after["accuracy"]["values"][0] == before["accuracy"]["values"][0]
    assert main(["evaluate", str(out), "--set", "optimize.lr=3"]) == 2
    os.remove(out / "report.html")
    assert main(["report", str(out)]) == 0 and (out / "report.html").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    capsys.readouterr()


def test_python_api(tmp_path, tiny_spec) -> None:
    import ddspec

    plan = ddspec.compile(ddspec.load(tiny_spec))
    assert "matching" in plan.explain()
    result = plan.run(out=tmp_path / "api")
    assert result.x.shape == (20, 1, 8, 8) and 0 <= result.metrics["accuracy"]["mean"] <= 1
