"""Baselines: random real subsets and the full training set, measured under the distilled set's protocol;
the full baseline's cache; the terminal summary; resuming a run killed during the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ddspec
from ddspec.cli import _print_metrics
from ddspec.components.data.base import Dataset
from ddspec.evaluate import baselines, evaluate_distilled
from ddspec.evaluate.protocol import Protocol
from ddspec.spec import Problem


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of unequal size (n/2, n/3, n/6) around ±2 in 4 coordinates."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([0] * (n // 2) + [1] * (n // 3) + [2] * (n - n // 2 - n // 3))
    centres = torch.tensor([[2.0] * 4, [-2.0] * 4, [2.0, -2.0, 2.0, -2.0]])
    return centres[y] + 0.8 * torch.randn(n, 4, generator=g), y


@pytest.fixture(scope="module")
def data() -> Dataset:
    x_train, y_train = _blobs(60, 0)
    x_test, y_test = _blobs(90, 1)
    return Dataset("blobs", x_train, y_train, x_test, y_test, 3)


def _problem(**evaluate: object) -> object:
    base = {"epochs": 20, "lr": 0.1, "seeds": [0, 1], "metrics": ["accuracy"], "corruptions": [{"kind": "noise"}]}
    return Problem.model_validate({"data": {"kind": "digits"}, "synthetic": {"per_class": 2},
                                   "model": {"kind": "linear"}, "evaluate": base | evaluate})


def test_random_rows_per_stratum(data: Dataset) -> None:
    rows = baselines.random_rows(data, [3, 2, 1], seed=5)
    assert data.y_train[rows].tolist() == [0, 0, 0, 1, 1, 2] and len(set(rows.tolist())) == 6
    assert torch.equal(rows, baselines.random_rows(data, [3, 2, 1], seed=5))
    assert not torch.equal(rows, baselines.random_rows(data, [3, 2, 1], seed=6))
    everything = baselines.random_rows(data, [30, 20, 10], seed=0)
    assert sorted(everything.tolist()) == list(range(60))  # as many as a stratum has: all of it, once


def test_random_baseline_is_the_protocol_on_each_seeds_subset(data: Dataset) -> None:
    problem = _problem(baselines=["random"])
    x, y = data.x_train[[0, 1, 30, 31, 50, 51]], data.y_train[[0, 1, 30, 31, 50, 51]]
    result = evaluate_distilled(x, y, data, problem, "cpu", progress=False)
    random = result["baselines"]["random"]
    assert set(random) == {"accuracy", "corruptions"} and set(random["corruptions"]) == {"noise"}
    for i, seed in enumerate([0, 1]):  # seed s trains on the subset drawn with seed s, from the same init
        rows = baselines.random_rows(data, [2, 2, 2], seed)
        alone = evaluate_distilled(data.x_train[rows], data.y_train[rows], data, _problem(seeds=[seed]), "cpu",
                                   progress=False)
        assert random["accuracy"]["values"][i] == alone["accuracy"]["values"][0]
        assert random["corruptions"]["noise"]["values"][i] == alone["corruptions"]["noise"]["values"][0]
    # the distilled figures are those of a run without baselines
    alone = evaluate_distilled(x, y, data, _problem(), "cpu", progress=False)
    assert {k: v for k, v in result.items() if k not in ("baselines", "protocol")} == {
        k: v for k, v in alone.items() if k != "protocol"}
    assert result["protocol"]["baselines"] == ["random"]


def test_full_baseline_cached(data: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDSPEC_CACHE", str(tmp_path))
    problem = _problem(baselines=["full"], seeds=[0])
    x, y = data.x_train[:6], data.y_train[:6]
    first = evaluate_distilled(x, y, data, problem, "cpu", progress=False)["baselines"]["full"]
    everything = evaluate_distilled(data.x_train, data.y_train, data, _problem(seeds=[0]), "cpu", progress=False)
    assert first["accuracy"] == everything["accuracy"] and first["accuracy"]["mean"] > 0.9
    (path,) = (tmp_path / "baselines").glob("*.json")
    assert json.loads(path.read_text())["figures"] == first

    def refuse(*args: object) -> None:
        raise AssertionError("the cached figures should be read")

    monkeypatch.setattr(Protocol, "measure", refuse)
    assert baselines.full_baseline(Protocol(problem, data, "cpu", progress=False)) == first
    monkeypatch.undo()
    monkeypatch.setenv("DDSPEC_CACHE", str(tmp_path))
    path.write_text('{"key": ')  # a corrupted cache file is recomputed and rewritten
    assert baselines.full_baseline(Protocol(problem, data, "cpu", progress=False)) == first
    assert json.loads(path.read_text())["figures"] == first
    other = _problem(baselines=["full"], seeds=[0], epochs=21)  # another protocol: another file
    baselines.full_baseline(Protocol(other, data, "cpu", progress=False))
    assert len(list((tmp_path / "baselines").glob("*.json"))) == 2


def test_baselines_listed_once() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="once"):
        _problem(baselines=["random", "random"])
    with pytest.raises(ValidationError):
        _problem(baselines=["best"])


def test_terminal_summary_shows_baselines_beside(capsys: pytest.CaptureFixture[str]) -> None:
    stats = lambda m, s: {"mean": m, "std": s, "values": [m]}
    _print_metrics({
        "accuracy": stats(0.404, 0.018), "corruptions": {"noise": stats(0.3, 0.01)},
        "baselines": {"random": {"accuracy": stats(0.26, 0.017), "corruptions": {"noise": stats(0.2, 0.02)}},
                      "full": {"accuracy": stats(0.96, 0.004), "corruptions": {}}},
        "distill_seconds": 3.0,
    })
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["accuracy", "0.4040", "±", "0.0180", "(n=1)", "random", "0.2600", "±", "0.0170",
                                "full", "0.9600", "±", "0.0040"]
    assert lines[1].split()[-4:] == ["random", "0.2000", "±", "0.0200"] and "full" not in lines[1]


def test_run_killed_during_baselines_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"data": {"kind": "digits"}, "synthetic": {"per_class": 1}, "model": {"kind": "linear"},
            "optimize": {"kind": "select", "method": "random"},
            "evaluate": {"seeds": [0], "epochs": 2, "metrics": ["accuracy"], "baselines": ["random"]},
            "runtime": {"progress": False, "threads": 1, "device": "cpu"}}
    plan = ddspec.compile(ddspec.load(spec))
    measure = baselines.random_baseline

    def killed(protocol: Protocol) -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(baselines.BASELINES, "random", killed)
    with pytest.raises(KeyboardInterrupt):
        plan.run(tmp_path / "r")
    assert not (tmp_path / "r" / "metrics.json").exists()
    monkeypatch.setitem(baselines.BASELINES, "random", measure)
    result = plan.run(tmp_path / "r", resume=True)
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    random = result.metrics["baselines"]["random"]
    assert saved["baselines"]["random"]["accuracy"]["values"] == random["accuracy"]["values"]
    assert 0.0 <= saved["baselines"]["random"]["accuracy"]["mean"] <= 1.0
