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


def test_full_baseline_cache_keys_on_the_data_contents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two specs naming `reg.npz` in two folders: the same data spec as written, different files, two entries."""
    import numpy as np

    from ddspec.components.data import load_dataset

    monkeypatch.setenv("DDSPEC_CACHE", str(tmp_path / "cache"))
    for folder, seed in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        x, y = _blobs(60, seed)
        x_test, y_test = _blobs(30, seed + 10)
        y_test = (y_test + seed) % 3  # b's test labels disagree with its training data: other figures
        np.savez(tmp_path / folder / "reg.npz", x_train=x.numpy(), y_train=y.numpy(), x_test=x_test.numpy(),
                 y_test=y_test.numpy())
    measured: list[str] = []
    measure = Protocol.measure

    def counting(self: Protocol, training: object, desc: str) -> object:
        measured.append(desc)
        return measure(self, training, desc)

    monkeypatch.setattr(Protocol, "measure", counting)
    spec = {"data": {"kind": "npz", "path": "reg.npz"}, "synthetic": {"per_class": 2}, "model": {"kind": "linear"},
            "evaluate": {"epochs": 5, "lr": 0.1, "seeds": [0], "metrics": ["accuracy"], "baselines": ["full"]}}
    figures = []
    for folder in ("a", "b", "a"):
        problem = ddspec.load(spec, base_dir=tmp_path / folder)
        assert problem.data.model_dump() == ddspec.load(spec).data.model_dump()  # the spec as written is the same
        figures.append(baselines.full_baseline(Protocol(problem, load_dataset(problem.data), "cpu", progress=False)))
    assert measured == ["baseline full", "baseline full"]  # a, then b (another file), then a from the cache
    assert figures[0] == figures[2] and figures[0] != figures[1]
    assert len(list((tmp_path / "cache" / "baselines").glob("*.json"))) == 2


def test_full_baseline_cache_key_holds_the_evaluation_augmentation(monkeypatch: pytest.MonkeyPatch) -> None:
    from ddspec.components.data import load_dataset

    keys: list[dict] = []
    monkeypatch.setattr(baselines, "cached", lambda key, compute: keys.append(key) or {})
    spec = {"data": {"kind": "digits"}, "synthetic": {"per_class": 1}, "model": {"kind": "linear"},
            "distance": {"kind": "feature_mean"}, "optimize": {"kind": "gradient"},
            "evaluate": {"seeds": [0], "augment": True, "baselines": ["full"]}}
    data = None
    for noise in (0.05, 0.5):
        problem = ddspec.load(spec, [f"optimize.augmentation.noise={noise}"])
        data = data or load_dataset(problem.data)
        baselines.full_baseline(Protocol(problem, data, "cpu", progress=False))
    assert keys[0]["augmentation"]["noise"] == 0.05 and keys[1]["augmentation"]["noise"] == 0.5
    assert keys[0]["data"] == keys[1]["data"] == baselines.data_digest(data)
    problem = ddspec.load(spec, ["optimize.augmentation.noise=0.5", "evaluate.augment=false"])
    baselines.full_baseline(Protocol(problem, data, "cpu", progress=False))
    assert keys[2]["augmentation"] is None  # not used by the evaluation: not part of the key
