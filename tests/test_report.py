"""The HTML report of a run folder built by hand (2-D, 1-D and flat distilled data)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddspec.components.data.base import Dataset
from ddspec.errors import SpecError
from ddspec.evaluate import evaluate_distilled
from ddspec.runtime.artifacts import DISTILLED, HISTORY, METRICS, PLAN, SPEC, atomic_write_json, save_distilled
from ddspec.runtime.report import (
    LOSS_PNG,
    ROBUSTNESS_PNG,
    SAMPLES_PNG,
    history_rows,
    loss_png,
    strata_of,
    write_report,
)
from ddspec.spec import Problem

METRICS_JSON = {
    "accuracy": {"mean": 0.8125, "std": 0.0125, "values": [0.8, 0.825]},
    "cluster_min": {
        "mean": 0.5, "std": 0.1, "values": [0.4, 0.6], "clusters": 2, "seed": 0,
        "cluster_sizes": [[30, 20], [30, 20]], "cluster_accuracies": [[0.4, 0.9], [0.6, 0.8]],
    },
    "corruptions": {"noise": {"mean": 0.75, "std": 0.0, "values": [0.75, 0.75], "variance": 0.005,
                              "metric": "accuracy"}},
    "baselines": {"random": {"accuracy": {"mean": 0.4, "std": 0.05, "values": [0.35, 0.45]},
                             "cluster_min": {"mean": 0.2, "std": 0.0, "values": [0.2, 0.2]},
                             "corruptions": {"noise": {"mean": 0.3, "std": 0.01, "values": [0.29, 0.31]}}}},
    "per_model": {"0:linear": {"accuracy": {"mean": 0.8125, "std": 0.0125, "values": [0.8, 0.825]}}},
    "protocol": {"models": [{"kind": "linear"}], "epochs": 3},
    "seeds": [0, 1],
    "std_ddof": 1,
    "distill_seconds": 1.5,
}


def _run_dir(tmp: Path, x: torch.Tensor, y: torch.Tensor, history: bool = True) -> Path:
    """A run folder; history.json as the runner writes it ({"distill_seconds", "rows"})."""
    rows = [{"iteration": i, "loss": 2.0 / (i + 1)} for i in range(20)] if history else []
    save_distilled(tmp / DISTILLED, x, y)
    atomic_write_json(tmp / METRICS, METRICS_JSON)
    atomic_write_json(tmp / HISTORY, {"distill_seconds": 1.5, "rows": rows})
    atomic_write_json(tmp / PLAN, {"backend": "matching", "explain": "gradient matching <approximates> test error"})
    (tmp / SPEC).write_text("name: toy-run\ndata:\n  kind: digits\n", encoding="utf-8")
    return tmp


def _check_png(path: Path) -> None:
    assert path.stat().st_size > 2000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 50


CASES = {
    "image": (torch.rand(12, 1, 8, 8), torch.arange(12) % 3),
    "rgb-soft": (torch.rand(6, 3, 8, 8), torch.softmax(torch.randn(6, 3), 1)),
    "series": (torch.randn(12, 1, 40), torch.arange(12) % 4),
    "flat": (torch.randn(15, 7), torch.arange(15) % 3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_report_contents(tmp_path: Path, case: str) -> None:
    out = _run_dir(tmp_path, *CASES[case])
    page = write_report(out).read_text(encoding="utf-8")
    assert "<title>toy-run" in page and "ddspec run: toy-run" in page
    for figure in ("<td>distill_seconds</td><td>1.5</td>", "81.2% ± 1.2", "50.0% ± 10.0", "75.0% ± 0.0", "clusters=2, seed=0", "variance=0.005"):
        assert figure in page
    # a column per baseline, beside the distilled figure of the same row
    assert "<th>baseline random</th>" in page and "<td>81.2% ± 1.2</td><td>40.0% ± 5.0</td>" in page
    assert "<td>noise</td><td>75.0% ± 0.0</td><td>30.0% ± 1.0</td>" in page and "Corruptions (accuracy)" in page
    assert "&lt;approximates&gt;" in page and "<approximates>" not in page  # escaped
    assert "backend: matching" in page and "kind: digits" in page
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)) == 3
    for name in (SAMPLES_PNG, LOSS_PNG, ROBUSTNESS_PNG):
        _check_png(out / name)


def test_report_without_history_or_metrics(tmp_path: Path) -> None:
    out = _run_dir(tmp_path, *CASES["flat"], history=False)
    (out / METRICS).unlink()
    page = write_report(out).read_text(encoding="utf-8")
    assert not (out / LOSS_PNG).exists() and not (out / ROBUSTNESS_PNG).exists()
    assert "No evaluation recorded" in page and page.count("data:image/png;base64,") == 1


def test_history_rows_formats() -> None:
    rows = [{"iteration": 0, "loss": 1.0}]
    assert history_rows(rows) == rows == history_rows({"distill_seconds": 2.0, "rows": rows})
    assert loss_png([]) is None and loss_png(rows)[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_regression(tmp_path: Path) -> None:
    """Real-valued targets: RMSE and R² are shown as values (not percentages), the corruption table names rmse,
    and the samples figure holds one stratum; without corruptions the chart shows the baselines' bars."""
    out = _run_dir(tmp_path, torch.randn(12, 10), torch.randn(12))
    stats = lambda m, s: {"mean": m, "std": s, "values": [m, m]}
    figures = {"rmse": stats(0.71, 0.02), "r2": stats(0.48, 0.03),
               "corruptions": {"noise": stats(0.9, 0.05) | {"variance": 0.1, "metric": "rmse"}},
               "baselines": {"random": {"rmse": stats(0.85, 0.04), "r2": stats(0.3, 0.05),
                                        "corruptions": {"noise": stats(1.0, 0.1)}}}}
    atomic_write_json(out / METRICS, figures)
    page = write_report(out).read_text(encoding="utf-8")
    assert "<td>rmse</td><td>0.71 ± 0.02</td><td>0.85 ± 0.04</td>" in page and "<td>0.48 ± 0.03</td>" in page
    assert "Corruptions (rmse)" in page and "%" not in page.split("<h2>Metrics</h2>")[1].split("<h2>Plan")[0]
    _check_png(out / ROBUSTNESS_PNG)
    strata, label = strata_of(np.array([0.5, -1.0], dtype=np.float32))
    assert strata.tolist() == [0, 0] and "by target" in label(0)  # one stratum, rows shown by target
    assert strata_of(np.array([2, 0]))[0].tolist() == [2, 0] and strata_of(np.array([2, 0]))[1](2) == "class 2"
    del figures["corruptions"]
    atomic_write_json(out / METRICS, figures)
    write_report(out)
    _check_png(out / ROBUSTNESS_PNG)


def test_report_needs_a_run(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="distilled"):
        write_report(tmp_path)


def test_report_of_protocol_output(tmp_path: Path) -> None:
    """The protocol's figures, through metrics.json, land in the report as percentages."""
    x, y = torch.randn(40, 1, 6), torch.arange(40) % 2
    x[y == 1] += 2
    data = Dataset("toy", x, y, x, y, 2)
    problem = Problem.model_validate({
        "name": "toy-run", "data": {"kind": "digits"}, "model": {"kind": "linear"},
        "evaluate": {"epochs": 2, "seeds": [0], "metrics": ["accuracy", {"kind": "cluster_min", "clusters": 2}],
                     "corruptions": [{"kind": "invert"}]},
    })
    result = evaluate_distilled(x[:8], y[:8], data, problem, "cpu", progress=False)
    out = _run_dir(tmp_path, x[:8], y[:8])
    atomic_write_json(out / METRICS, json.loads(json.dumps(result)))
    page = write_report(out).read_text(encoding="utf-8")
    assert f"{100 * result['accuracy']['mean']:.1f}% ± 0.0" in page and "<td>invert</td>" in page


def test_a_figure_this_report_does_not_draw_is_deleted(tmp_path: Path) -> None:
    out = _run_dir(tmp_path, *CASES["flat"])
    write_report(out)
    assert (out / LOSS_PNG).exists()
    _run_dir(tmp_path, *CASES["flat"], history=False)  # e.g. a rerun whose backend has no loss history
    page = write_report(out).read_text(encoding="utf-8")
    assert not (out / LOSS_PNG).exists() and (out / SAMPLES_PNG).exists()
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2
