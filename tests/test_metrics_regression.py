"""Evaluation of real-valued targets: RMSE and R² against hand computations and scikit-learn, the protocol
on a regression dataset, default metrics per targets, and metrics refused for targets they do not fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from ddspec.analysis.facts import Analysis
from ddspec.components.data.base import Dataset
from ddspec.evaluate import evaluate_distilled, metrics
from ddspec.evaluate.protocol import _outputs, _train
from ddspec.spec import DataInfo, Problem
from ddspec.spec.evaluate import R2Metric, RmseMetric, default_metrics, primary_metric


def _regression(n_train: int = 200, n_test: int = 100, dim: int = 4, outputs: int = 1, seed: int = 0) -> Dataset:
    """y = x W + 0.1 ε (ε ~ N(0, 1)): float y of shape N (one output) or N x T."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, outputs, generator=g)
    x = torch.randn(n_train + n_test, dim, generator=g)
    y = x @ w + 0.1 * torch.randn(n_train + n_test, outputs, generator=g)
    y = y[:, 0] if outputs == 1 else y
    return Dataset("regression", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 0)


def _data_with_test(y_test: torch.Tensor) -> Dataset:
    x = torch.zeros(len(y_test), 1)
    return Dataset("r", x, y_test, x, y_test, 0)


# -- metrics ----------------------------------------------------------------------------------------
def test_rmse_hand_case() -> None:
    data = _data_with_test(torch.tensor([1.0, 2.0, 3.0]))
    # residuals 0, −1, 2 → mean squared error 5/3
    pred = torch.tensor([[1.0], [1.0], [5.0]])
    assert metrics.Rmse(RmseMetric())(pred, data) == pytest.approx(math.sqrt(5 / 3), abs=1e-12)
    two = _data_with_test(torch.tensor([[0.0, 1.0], [2.0, 2.0]]))
    # ‖(1, −1)‖² = 2, ‖(0, 2)‖² = 4 → √3 (the squared error is summed over the outputs)
    assert metrics.rmse(torch.tensor([[1.0, 0.0], [2.0, 4.0]]), two) == pytest.approx(math.sqrt(3), abs=1e-12)


@pytest.mark.parametrize("outputs", [1, 3])
def test_r2_equals_scikit_learn(outputs: int) -> None:
    g = torch.Generator().manual_seed(outputs)
    y = torch.randn(50, outputs, dtype=torch.float64, generator=g) * torch.tensor([1.0, 5.0, 0.1][:outputs])
    pred = y + 0.7 * torch.randn(50, outputs, dtype=torch.float64, generator=g)
    data = _data_with_test(y[:, 0] if outputs == 1 else y)
    expected = r2_score(y.numpy(), pred.numpy())  # uniform average over the outputs
    assert metrics.R2(R2Metric())(pred, data) == pytest.approx(expected, abs=1e-12)
    assert metrics.rmse(pred, data) == pytest.approx(float(((pred - y) ** 2).sum(1).mean().sqrt()), abs=1e-12)


def test_r2_constant_target_matches_scikit_learn() -> None:
    y = torch.tensor([[2.0, 1.0], [2.0, 3.0], [2.0, 5.0]], dtype=torch.float64)
    data = _data_with_test(y)
    for pred in (y.clone(), y + torch.tensor([[0.5, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)):
        assert metrics.r2(pred, data) == pytest.approx(r2_score(y.numpy(), pred.numpy()), abs=1e-12)


def test_defaults_and_primary_per_targets() -> None:
    assert [m.kind for m in default_metrics("classes")] == ["accuracy", "cluster_min"]
    assert [m.kind for m in default_metrics("real")] == ["rmse", "r2"]
    assert primary_metric("classes").kind == "accuracy" and primary_metric("real").kind == "rmse"
    problem = Problem.model_validate({"data": {"kind": "digits"}, "evaluate": {"metrics": ["r2"]}})
    assert [m.kind for m in problem.evaluate.metric_specs("real")] == ["r2"]


# -- well-posedness -----------------------------------------------------------------------------------
def _analysis(problem: object, targets: str) -> Analysis:
    real = targets == "real"
    info = DataInfo("d", (4,), 0 if real else 2, (100,) if real else (50, 50), 20, targets, 1 if real else 0)
    return Analysis(problem, info, (5,) if real else (5, 5), frozenset({f"targets:{targets}", "inputs:1d"}))


def test_metrics_that_do_not_fit_the_targets_are_refused() -> None:
    problem = Problem.model_validate({"data": {"kind": "digits"},
                                      "evaluate": {"metrics": ["accuracy", "rmse"], "corruptions": ["blur"]}})
    real = list(problem.evaluate.findings(_analysis(problem, "real")))
    classes = list(problem.evaluate.findings(_analysis(problem, "classes")))
    assert [(f.code, f.path) for f in real] == [("METRIC_TARGETS", "evaluate.metrics"),
                                                ("CORRUPTION_SHAPE", "evaluate.corruptions")]
    assert "`accuracy`" in real[0].message and "rmse, r2" in real[0].fix
    assert [f.code for f in classes] == ["METRIC_TARGETS", "CORRUPTION_SHAPE"] and "`rmse`" in classes[0].message
    assert "accuracy, cluster_min" in classes[0].fix
    unset = Problem.model_validate({"data": {"kind": "digits"}})
    assert list(unset.evaluate.findings(_analysis(unset, "real"))) == []  # the defaults always fit


def test_compile_refuses_rmse_on_classes() -> None:
    import ddspec
    from ddspec.errors import WellPosednessError

    spec = {"data": {"kind": "digits"}, "optimize": {"kind": "select"}, "evaluate": {"metrics": ["rmse"]}}
    with pytest.raises(WellPosednessError) as err:
        ddspec.compile(ddspec.load(spec))
    assert [(f.code, f.path) for f in err.value.findings] == [("METRIC_TARGETS", "evaluate.metrics")]


# -- the protocol on real-valued targets -------------------------------------------------------------
def _problem(**evaluate: object) -> object:
    base = {"epochs": 60, "lr": 0.05, "seeds": [0, 1], "batch_size": 32}
    spec = {"data": {"kind": "digits"}, "model": {"kind": "linear"}, "evaluate": base | evaluate}
    return Problem.model_validate(spec)


def test_protocol_regression_scores_equal_scikit_learn_on_its_predictions() -> None:
    data = _regression()
    problem = _problem(corruptions=[{"kind": "noise", "variance": 0.0}])
    x, y = data.x_train[:40], data.y_train[:40]
    result = evaluate_distilled(x, y, data, problem, "cpu", progress=False)
    assert [k for k in result if k in ("rmse", "r2", "accuracy", "cluster_min")] == ["rmse", "r2"]
    for i, seed in enumerate(problem.evaluate.seeds):  # the same training again → the same predictions
        model = _train(problem.model, seed, x, y, data, problem.evaluate, None, "cpu")
        pred = _outputs(model, data.x_test, "cpu").double()
        truth = data.y_test.double()
        assert result["r2"]["values"][i] == pytest.approx(r2_score(truth.numpy(), pred[:, 0].numpy()), abs=1e-9)
        assert result["rmse"]["values"][i] == pytest.approx(float(((pred[:, 0] - truth) ** 2).mean().sqrt()), abs=1e-9)
    assert min(result["r2"]["values"]) > 0.95 and max(result["rmse"]["values"]) < 0.5  # a linear model fits
    # a corruption reports the primary metric (rmse); noise of variance 0 leaves the test set as it is
    noise = result["corruptions"]["noise"]
    assert noise["metric"] == "rmse" and noise["values"] == result["rmse"]["values"]
    assert [m["kind"] for m in result["protocol"]["metrics"]] == ["rmse", "r2"]


def test_protocol_regression_multi_output_and_bad_targets() -> None:
    data = _regression(outputs=2)
    problem = _problem(seeds=[0], optimizer="adam", lr=0.05)
    result = evaluate_distilled(data.x_train[:50], data.y_train[:50], data, problem, "cpu", progress=False)
    assert result["r2"]["mean"] > 0.9
    from ddspec.errors import RunError

    with pytest.raises(RunError, match="real values"):
        evaluate_distilled(data.x_train[:50], data.y_train[:50, 0], data, problem, "cpu", progress=False)
    with pytest.raises(RunError, match="real values"):
        evaluate_distilled(data.x_train[:50], torch.zeros(50, dtype=torch.long), data, problem, "cpu", progress=False)


def test_regression_training_minimizes_squared_error() -> None:
    """One full-batch SGD step of the protocol's fit equals a hand gradient step on the mean squared error."""
    from ddspec.components.training.fit import fit
    from ddspec.registry import MODELS

    data = _regression(n_train=16, outputs=1)
    problem = _problem(epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=16, lr_drop_at_half=False)
    torch.manual_seed(0)
    model = MODELS.build(problem.model, data.input_shape, 1)
    w0, b0 = (p.detach().clone() for p in model.parameters())
    fit(model, data.x_train, data.y_train, problem.evaluate, torch.Generator().manual_seed(0), loss=data.targets.loss)
    x, y = data.x_train, data.y_train
    res = x @ w0.T[:, 0] + b0 - y  # f(x) − y
    grad_w, grad_b = 2 * (res[:, None] * x).mean(0), 2 * res.mean()
    w1, b1 = model.parameters()
    assert torch.allclose(w1[0], w0[0] - 0.1 * grad_w, atol=1e-6) and torch.allclose(b1, b0 - 0.1 * grad_b, atol=1e-6)
    assert np.isfinite(w1.detach().numpy()).all()
