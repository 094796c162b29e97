"""The convex backend end to end: compiler choice, outer steps that lower the real-data loss, the weight metrics."""

from __future__ import annotations

import json

import pytest
import torch

import ddspec


def test_compiler_picks_convex(convex_spec) -> None:
    plan = ddspec.compile(ddspec.load(convex_spec))
    assert plan.backend == "convex" and "KKT" in plan.reason
    assert "not differentiable training" in plan.rejected["bilevel"]


def test_estimate_counts_the_solves_and_the_reference_solve(convex_spec) -> None:
    """breast_cancer (30 features, 2 classes: q = 31 unknowns, 427 training rows), 4 synthetic samples: per
    iteration a conic solve on 4 samples and a q³ KKT solve; once, the reference solve on the 427 real rows."""
    from ddspec.backends.convex import CONIC_SLOWDOWN, IPM_ITERATIONS, SOLVE_OVERHEAD_S
    from ddspec.compiler.estimate import THROUGHPUT

    def estimate(iterations: int) -> float:
        spec = {**convex_spec, "optimize": {**convex_spec["optimize"], "iterations": iterations}}
        return ddspec.compile(ddspec.load(spec)).estimate.seconds

    q, rate = 31, THROUGHPUT["cpu"]
    per_iteration = IPM_ITERATIONS * CONIC_SLOWDOWN * 4 * q * q / rate + SOLVE_OVERHEAD_S + q**3 / rate
    reference = IPM_ITERATIONS * CONIC_SLOWDOWN * 427 * q * q / rate + SOLVE_OVERHEAD_S
    assert estimate(3) - estimate(1) == pytest.approx(2 * per_iteration)
    assert estimate(1) == pytest.approx(per_iteration + reference)


@pytest.mark.parametrize("train", [
    {"loss": "logistic", "penalty": "l2"},
    {"loss": "logistic", "penalty": "l1"},
    {"loss": "svm"},
    {"loss": "squared", "constraint": "box", "box": 0.5},
])
def test_outer_steps_lower_the_real_data_loss(convex_spec, tmp_path, train) -> None:
    convex_spec["train"].update(train)
    result = ddspec.compile(ddspec.load(convex_spec)).run(tmp_path / "r")
    losses = [r["loss"] for r in json.loads((tmp_path / "r" / "history.json").read_text())["rows"]]
    assert min(losses[-3:]) < losses[0]
    m = result.metrics
    assert 0 < m["w_rel_error"] and 0.5 < m["accuracy_full_model"] <= 1.0
    assert 0.0 <= m["agreement"] <= 1.0 and 0.0 <= m["accuracy_distilled_model"] <= 1.0


def test_learned_soft_labels_move(convex_spec, tmp_path) -> None:
    result = ddspec.compile(ddspec.load(convex_spec, ["synthetic.learn_labels=true"])).run(tmp_path / "s")
    assert result.y.shape == (4, 2) and torch.allclose(result.y.sum(1), torch.ones(4, dtype=result.y.dtype))
    assert float((result.y.max(1).values - 0.9).abs().max()) > 1e-4  # moved away from the initial 0.9


def test_the_full_data_solution_is_solved_once_and_cached(convex_spec, tmp_path, monkeypatch) -> None:
    """The weight metrics' full-data solve does not depend on D̂: a second call reads it from $DDSPEC_CACHE/convex,
    bit for bit; another inner problem (λ) is solved again."""
    import numpy as np

    from ddspec.backends.convex import run
    from ddspec.components.closed_form import convex
    from ddspec.components.data import load_dataset

    monkeypatch.setenv("DDSPEC_CACHE", str(tmp_path))
    problem = ddspec.load(convex_spec)
    data = load_dataset(problem.data)
    model = convex.ConvexModel.of_train(problem.train, data.num_classes)
    solves = []
    solve = convex.solve
    monkeypatch.setattr(convex, "solve", lambda *a, **k: solves.append(1) or solve(*a, **k))
    first = run.full_data_weights(problem.train, model, data)
    assert np.array_equal(first, run.full_data_weights(problem.train, model, data)) and len(solves) == 1
    assert len(list((tmp_path / "convex").glob("*.json"))) == 1
    other = problem.train.model_copy(update={"lam": 0.1})
    run.full_data_weights(other, convex.ConvexModel.of_train(other, data.num_classes), data)
    assert len(solves) == 2
