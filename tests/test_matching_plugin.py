"""A matching distance registered from user code (an embedding surrogate: the squared L1 distance of class
means) is validated, explained and run by the matching backend like the built-in ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
import yaml
from test_matching import BACKEND, context

import ddspec
from ddspec.cli import main
from ddspec.components.synthetic.init import init_synthetic
from ddspec.registry import DISTANCES
from ddspec.spec.distance import MatchingDistance

pytestmark = pytest.mark.usefixtures("one_thread")


class L1MeansDistance(MatchingDistance):
    """Squared L1 distance of class means: (Σ_k |mean_i φ(real_i)_k − mean_j φ(syn_j)_k|)²."""

    kind: Literal["l1_means"] = "l1_means"
    reference_lr: ClassVar[float] = 0.05
    approximates: ClassVar[str] = "test_error after training on D̂: equal class means of random-network embeddings"


def l1_means(f_real: torch.Tensor, f_syn: torch.Tensor) -> torch.Tensor:
    return (f_real.flatten(1).mean(0) - f_syn.flatten(1).mean(0)).abs().sum().pow(2)


def build(spec: L1MeansDistance, ctx: Any) -> Any:
    """The builder (spec, run context), like every distance builder: the embedding surrogate itself."""
    return l1_means


@pytest.fixture
def plugin() -> Iterator[None]:
    ddspec.register("distance", L1MeansDistance, builder=build, capabilities=("surrogate", "embedding"))
    yield
    DISTANCES.unregister("l1_means")


def tiny(tiny_spec: dict[str, Any]) -> dict[str, Any]:
    return {**tiny_spec, "distance": {"kind": "l1_means"},
            "optimize": {**tiny_spec["optimize"], "iterations": 2},
            "evaluate": {**tiny_spec["evaluate"], "epochs": 2}}


def test_validate_explain_and_run_from_the_cli(plugin: None, tiny_spec: dict[str, Any], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "l1.yaml"
    path.write_text(yaml.safe_dump(tiny(tiny_spec)))
    assert main(["validate", str(path)]) == 0
    assert "well posed (backend: matching)" in capsys.readouterr().out
    assert main(["explain", str(path)]) == 0
    explained = capsys.readouterr().out
    assert "`l1_means` is a matching surrogate" in explained
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    rows = json.loads((tmp_path / "run" / "history.json").read_text())["rows"]
    losses = [row["loss"] for row in rows]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses))) and losses[1] != losses[0]


def test_resolved_defaults_come_from_the_distance_class(plugin: None, tiny_spec: dict[str, Any]) -> None:
    plan = ddspec.compile(ddspec.load(tiny(tiny_spec)))
    assert plan.backend == "matching" and plan.problem.optimize.lr == 0.05
    assert (plan.problem.optimize.outer_loop, plan.problem.train.steps) == (1, 1)


def test_first_loss_is_the_hand_computed_distance(plugin: None, tmp_path: Path) -> None:
    """Linear model (φ(x) = x), whole classes as real batches, no augmentation: the first recorded loss is
    Σ_c (Σ_k |μ_c,k − mean S_c,k|)² at the initial synthetic set; the SGD step then lowers it."""
    raw = {
        "data": {"kind": "tabular", "name": "wine"}, "model": {"kind": "linear"}, "synthetic": {"per_class": 2},
        "distance": {"kind": "l1_means"},
        "optimize": {"kind": "gradient", "iterations": 2, "real_batch_per_class": 1000, "lr": 0.01},
        "runtime": {"progress": False},
    }
    ctx = context(raw, tmp_path)
    x0, y0 = init_synthetic(ctx.problem, ctx.data, torch.Generator().manual_seed(ctx.problem.runtime.seed))
    BACKEND.run(ctx)
    want = sum(l1_means(ctx.data.x_train[rows], x0[y0 == c]) for c, rows in enumerate(ctx.data.strata()))
    losses = [row["loss"] for row in ctx.loops[0].history]
    assert losses[0] == pytest.approx(float(want), rel=1e-5)
    assert losses[1] < losses[0]
