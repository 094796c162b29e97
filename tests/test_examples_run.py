"""Examples run: every examples/*.yaml, and examples/quickstart.py, distills and evaluates end to end
when shrunk to a few seconds (same problem, backend and objective; fewer iterations, steps and epochs)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from ddspec.cli import main
from ddspec.runtime import artifacts as art
from ddspec.spec.evaluate import is_fraction, primary_metric
from ddspec.spec.loading import load
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
FAST = ["evaluate.seeds=[0]", "evaluate.epochs=2", "runtime.device=cpu", "runtime.progress=false"]
#: The adversarial metric at smoke size (the examples' own attack takes minutes).
ATTACK_SMOKE = "evaluate.metrics=[accuracy, {kind: adversarial, steps: 2, samples: 20, targets: 1, square: {queries: 5}}]"
EXTRA = {  # what an example's own schedule would still make slow after tiny_overrides' rules
    "digits_dc": ["optimize.outer_loop=1", "train.steps=1"],  # DC's default: 10 updates x 50 network steps
    "mnist1d_bilevel_predictions": ["task.teacher_epochs=1"],
    "digits_dc_curvature": ["optimize.outer_loop=1", "train.steps=1", ATTACK_SMOKE],
    "digits_bilevel_curvature": [ATTACK_SMOKE],
    "mnist1d_dc_curvature": [ATTACK_SMOKE],
    "mnist1d_predictions_curvature": ["task.teacher_epochs=1", ATTACK_SMOKE],
    "mnist1d_trajectory": ["distance.experts=1", "distance.expert_epochs=2", "distance.max_start_epoch=1",
                           "distance.expert_span=1"],
}


def tiny_overrides(path: Path) -> list[str]:
    """FAST, 2 outer iterations for iterative optimizers, at most 2 inner steps, then the example's EXTRA."""
    problem = load(path)
    overrides = list(FAST)
    if getattr(problem.optimize, "iterations", None):  # iterative optimizers (gradient, zero_order)
        overrides.append("optimize.iterations=2")
    steps = getattr(problem.train, "steps", None)
    if steps:
        overrides.append(f"train.steps={min(steps, 2)}")
    return overrides + EXTRA.get(path.stem, [])


def assert_finished_run(out: Path) -> None:
    """The artifact contract (docs/concepts.md#artifacts) of a run in ``out`` that evaluated seed 0."""
    files = {p.name for p in out.iterdir()}
    assert {art.DISTILLED, art.SPEC, art.PLAN, art.HISTORY, art.METRICS, art.REPORT} <= files
    assert art.CHECKPOINT not in files
    problem = load(out / art.SPEC)  # the resolved spec is itself a valid spec
    tensors = art.load_distilled(out / art.DISTILLED)
    x, y = tensors["x"], tensors["y"]
    info = problem.data.describe()
    strata = max(info.num_classes, 1)  # the classes, or all rows as one stratum for real targets
    assert len(x) == len(y) == sum(problem.synthetic.counts(strata)) and x.isfinite().all()
    iterations = getattr(problem.optimize, "iterations", 0)
    rows = art.read_json(out / art.HISTORY)["rows"]
    assert [r["iteration"] for r in rows] == list(range(iterations))
    metrics = art.read_json(out / art.METRICS)
    assert metrics["seeds"] == [0]
    targets = info.targets
    kinds = {m.kind for m in problem.evaluate.metric_specs(targets)}  # the metrics, or the targets' defaults
    primary = primary_metric(targets).kind
    corruptions = {c.kind for c in problem.evaluate.corruptions}
    assert kinds <= set(metrics) and set(metrics["corruptions"]) == corruptions
    assert set(metrics.get("baselines", {})) == set(problem.evaluate.baselines)
    for figures in [metrics, *metrics.get("baselines", {}).values()]:
        assert kinds <= set(figures) and set(figures["corruptions"]) == corruptions
        for name, m in [*((k, figures[k]) for k in kinds), *((primary, c) for c in figures["corruptions"].values())]:
            assert len(m["values"]) == 1, name
            assert all(math.isfinite(v) for v in [m["mean"], *m["values"]]), (name, m)
            assert not is_fraction(name) or all(0.0 <= v <= 1.0 for v in [m["mean"], *m["values"]]), (name, m)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_runs(path: Path, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    sets = [arg for item in tiny_overrides(path) for arg in ("--set", item)]
    assert main(["run", str(path), "--out", str(out), *sets]) == 0, capsys.readouterr().err
    assert_finished_run(out)


def test_quickstart_script_runs(tmp_path, monkeypatch, capsys) -> None:
    spec = importlib.util.spec_from_file_location("quickstart_script", EXAMPLES / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    full = module.build_problem
    overrides = tiny_overrides(EXAMPLES / "quickstart.yaml")
    monkeypatch.setattr(module, "build_problem", lambda: load(full(), overrides))
    monkeypatch.setattr(sys, "argv", ["quickstart.py", str(tmp_path / "run")])
    module.main()
    assert_finished_run(tmp_path / "run")
    assert "accuracy" in capsys.readouterr().out
