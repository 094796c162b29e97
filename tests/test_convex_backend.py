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
