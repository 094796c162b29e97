"""Closed-form backends on real-valued targets (diabetes), the feature registry, and the one weight comparison.

Ground truth: the full-data ridge weights computed independently (scikit-learn ``Ridge`` without intercept, the
KRR convention: f(x) = W φ(x), ‖Y − W φ(X)‖² + λ‖W‖²), hand-computed RMSEs, and the numpy feature maps."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ddspec
from ddspec.components.closed_form import krr
from ddspec.components.closed_form.compare import Fitted, weight_metrics
from ddspec.errors import WellPosednessError
from ddspec.registry import DATA, FEATURES

LAM = 1e-2


@pytest.fixture
def diabetes_krr() -> dict:
    return {
        "name": "diabetes_krr",
        "data": {"kind": "tabular", "name": "diabetes"},
        "synthetic": {"per_class": 10},
        "model": {"kind": "kernel_ridge", "lam": LAM},
        "train": {"kind": "closed_form"},
        "optimize": {"kind": "exact"},
        "evaluate": {"seeds": [0]},
        "runtime": {"progress": False, "threads": 1},
    }


def test_exact_krr_on_diabetes_reproduces_the_ridge_weights(diabetes_krr, tmp_path) -> None:
    """10 synthetic rows; W_S = Y_S X_S⁺ (λ_S = 0, numpy) equals scikit-learn's ridge W on the 332 training rows."""
    from sklearn.linear_model import Ridge

    plan = ddspec.compile(ddspec.load(diabetes_krr))
    assert plan.backend == "krr" and "real-valued targets" in plan.reason
    result = plan.run(tmp_path / "r")
    data = DATA.build(ddspec.load(diabetes_krr).data)
    X, y = data.x_train.double().numpy(), data.y_train.double().numpy()
    W = Ridge(alpha=LAM, fit_intercept=False, solver="svd").fit(X, y).coef_[None]  # 1 x 10
    x_s, y_s = result.x.double().numpy(), result.y.double().numpy().reshape(len(result.x), -1)
    assert x_s.shape == (10, 10) and y_s.shape == (10, 1)
    W_s = (np.linalg.pinv(x_s, rcond=1e-15) @ y_s).T
    assert np.linalg.norm(W_s - W) / np.linalg.norm(W) <= 1e-10
    m = result.metrics
    assert m["w_rel_error"] <= 1e-10 and m["prediction_rel_error"] <= 1e-9
    full = np.sqrt(np.mean((data.x_test.double().numpy() @ W[0] - data.y_test.double().numpy()) ** 2))
    assert m["rmse_full_model"] == pytest.approx(full, rel=1e-9)
    assert m["rmse_distilled_model"] == pytest.approx(full, rel=1e-9)


def test_kip_on_diabetes_lowers_its_loss(diabetes_krr, tmp_path) -> None:
    result = ddspec.compile(ddspec.load(diabetes_krr, [
        "optimize={kind: gradient, iterations: 30, real_batch_per_class: 64}", "task={kind: test_error}",
        "train.lam_synthetic=1e-3", "synthetic.learn_labels=true"])).run(tmp_path / "k")
    rows = json.loads((tmp_path / "k" / "history.json").read_text())["rows"]
    assert sum(r["loss"] for r in rows[-5:]) < sum(r["loss"] for r in rows[:5])
    assert result.y.shape == (10, 1) and result.metrics["w_rel_error"] > 1e-3
    assert result.metrics["rmse_distilled_model"] > 0


def test_convex_ridge_on_diabetes_runs_and_logistic_refuses(diabetes_krr, tmp_path) -> None:
    spec = {**diabetes_krr, "model": {"kind": "linear"}, "task": {"kind": "test_error"},
            "train": {"kind": "convex", "loss": "squared", "lam": 0.01},
            "optimize": {"kind": "gradient", "iterations": 8, "real_batch_per_class": 10_000, "lr": 0.05},
            "evaluate": {"seeds": [0], "epochs": 5}}
    plan = ddspec.compile(ddspec.load(spec))
    assert plan.backend == "convex"
    result = plan.run(tmp_path / "c")
    losses = [r["loss"] for r in json.loads((tmp_path / "c" / "history.json").read_text())["rows"]]
    assert min(losses[-3:]) < losses[0]
    assert {"rmse_full_model", "rmse_distilled_model", "prediction_rel_error"} <= set(result.metrics)
    with pytest.raises(WellPosednessError) as err:
        ddspec.compile(ddspec.load(spec, ["train.loss=logistic"]))
    finding = next(f for f in err.value.findings if f.code == "CONVEX_LOSS_NEEDS_CLASSES")
    assert finding.path == "train.loss" and "squared" in finding.fix


def test_weight_metrics_by_hand() -> None:
    """Regression: RMSE and relative prediction error by hand; classes: one column is a binary model (score > 0)."""
    x_test = torch.tensor([[1.0], [2.0], [3.0]])
    real = SimpleNamespace(num_classes=0, x_test=x_test, y_test=torch.tensor([1.0, 2.0, 4.0]))
    full, distilled = Fitted(np.array([[1.0]]), lambda r: r * 1.0), Fitted(np.array([[2.0]]), lambda r: r * 2.0)
    m = weight_metrics(full, distilled, real)
    assert m["w_rel_error"] == pytest.approx(1.0)
    assert m["rmse_full_model"] == pytest.approx(np.sqrt(1 / 3))  # errors 0, 0, -1
    assert m["rmse_distilled_model"] == pytest.approx(np.sqrt((1 + 4 + 4) / 3))  # errors 1, 2, 2
    assert m["prediction_rel_error"] == pytest.approx(1.0)  # ‖2x − x‖ / ‖x‖
    binary = SimpleNamespace(num_classes=2, x_test=x_test, y_test=torch.tensor([0, 1, 1]))
    m = weight_metrics(Fitted(np.ones(1), lambda r: r - 1.5), Fitted(np.ones(1), lambda r: r - 2.5), binary)
    assert m["accuracy_full_model"] == 1.0 and m["accuracy_distilled_model"] == pytest.approx(2 / 3)
    assert m["agreement"] == pytest.approx(2 / 3) and m["w_rel_error"] == 0.0


@pytest.mark.parametrize("spec", [{"kind": "linear"}, {"kind": "rff", "features": 5, "bandwidth": 2.0, "seed": 3},
                                  {"kind": "leaky_relu_mlp", "widths": [6, 4], "slope": 0.2, "seed": 1}])
def test_feature_registry_builds_maps_whose_torch_twin_agrees(spec) -> None:
    from ddspec.components.models.kernel import feature_map
    from ddspec.spec.kernel import KernelRidgeSpec

    features = KernelRidgeSpec(features=spec).features
    assert spec["kind"] in FEATURES.kinds()
    fm = feature_map(features, 8)
    assert isinstance(fm, krr.FeatureMap) and fm.p == features.dim(8)
    X = np.random.default_rng(0).standard_normal((7, 8))
    np.testing.assert_allclose(fm.torch(torch.from_numpy(X)).numpy(), fm(X), rtol=1e-13, atol=1e-15)


def test_the_python_examples_of_the_closed_form_docs_run() -> None:
    """Every ```python block of docs/backends/krr.md runs as written (its asserts hold)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "backends" / "krr.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/backends/krr.md", "exec"), {})  # noqa: S102 - the documented example itself
