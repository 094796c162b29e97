"""``train: sklearn``: the fitted estimator's outputs against scikit-learn itself, the evaluation protocol, the
spec's findings and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.tree import DecisionTreeClassifier

from ddspec.backends.base import Estimate
from ddspec.compiler.plan import Plan, compile
from ddspec.components.data import load_dataset
from ddspec.components.objectives.targets import ClassTargets, RealTargets
from ddspec.components.training.estimators import LOW, estimator_fit, floored_log
from ddspec.errors import WellPosednessError
from ddspec.evaluate import evaluate_distilled
from ddspec.spec.loading import load
from ddspec.spec.train import SklearnTrain

FLOOR = 1e-3


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x[:600], y[:600]


def _fit(spec: SklearnTrain, x: np.ndarray, y: np.ndarray, seed: int = 0, k: int = 10) -> torch.Tensor:
    """The ddspec outputs on x of ``spec`` fitted on (x, y)."""
    targets = ClassTargets(k) if y.dtype.kind == "i" else RealTargets(1)
    fitted = estimator_fit(spec, targets).fit(torch.from_numpy(x), torch.from_numpy(y), seed)
    return fitted(torch.from_numpy(x).float())


def _log_floored(proba: np.ndarray, columns: np.ndarray, k: int = 10) -> np.ndarray:
    full = np.zeros((len(proba), k))
    full[:, columns] = proba
    clipped = np.maximum(full, FLOOR)
    return np.log(clipped / clipped.sum(1, keepdims=True))


@pytest.mark.parametrize(("name", "reference"), [
    ("logistic_regression", LogisticRegression(max_iter=200, random_state=0)),
    ("decision_tree", DecisionTreeClassifier(max_depth=4, random_state=0)),
])
def test_log_proba_equals_sklearn(digits: tuple, name: str, reference: object) -> None:
    x, y = digits
    params = {"max_iter": 200} if name == "logistic_regression" else {"max_depth": 4}
    out = _fit(SklearnTrain(estimator=name, params=params), x[:300], y[:300])
    expected = _log_floored(reference.fit(x[:300], y[:300]).predict_proba(x[:300]), reference.classes_)
    assert out.dtype == torch.float32 and out.shape == (300, 10)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6, rtol=1e-5)
    assert np.allclose(np.exp(out.double().numpy()).sum(1), 1.0)


def test_missing_classes_map_to_their_columns(digits: tuple) -> None:
    x, y = digits
    keep = np.isin(y, [2, 5, 7])
    out = _fit(SklearnTrain(estimator="decision_tree", params={"max_depth": 3}), x[keep], y[keep]).numpy()
    reference = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x[keep], y[keep])
    np.testing.assert_allclose(out, _log_floored(reference.predict_proba(x[keep]), np.array([2, 5, 7])), atol=1e-6)
    absent = [c for c in range(10) if c not in (2, 5, 7)]
    assert (out[:, absent] <= np.log(FLOOR) + 1e-6).all()
    assert (out.argmax(1) == reference.predict(x[keep])).all()


def test_ridge_classifier_scores_equal_decision_function(digits: tuple) -> None:
    x, y = digits
    keep = np.isin(y, [1, 3, 4, 8])
    out = _fit(SklearnTrain(estimator="ridge", params={"alpha": 2.0}), x[keep], y[keep]).numpy()
    scores = RidgeClassifier(alpha=2.0).fit(x[keep], y[keep]).decision_function(x[keep])
    np.testing.assert_allclose(out[:, [1, 3, 4, 8]], scores, atol=1e-4, rtol=1e-5)
    assert (out[:, [0, 2, 5, 6, 7, 9]] == LOW).all()
    two = np.isin(y, [0, 6])  # sklearn's binary case: one score s for classes_[1]
    out = _fit(SklearnTrain(estimator="ridge"), x[two], y[two]).numpy()
    s = RidgeClassifier().fit(x[two], y[two]).decision_function(x[two])
    np.testing.assert_allclose(out[:, [0, 6]], np.stack([-s, s], 1), atol=1e-4, rtol=1e-5)


def test_ridge_regression_equals_sklearn(digits: tuple) -> None:
    x, _ = digits
    target = x @ np.linspace(-1, 1, x.shape[1]) + 0.5
    out = _fit(SklearnTrain(estimator="ridge", params={"alpha": 0.5}), x, target)
    assert out.shape == (len(x), 1)
    np.testing.assert_allclose(out[:, 0].numpy(), Ridge(alpha=0.5).fit(x, target).predict(x), rtol=1e-5, atol=1e-3)


def test_one_class_is_a_constant_prediction(digits: tuple) -> None:
    x, y = digits
    ones = y == 1
    out = _fit(SklearnTrain(estimator="logistic_regression"), x[ones][:5], y[ones][:5], k=10)
    expected = np.full(10, np.log(FLOOR / (1 + 9 * FLOOR)))  # one-hot, floored, renormalised (by hand)
    expected[1] = np.log(1 / (1 + 9 * FLOOR))
    np.testing.assert_allclose(out.numpy(), np.tile(expected, (5, 1)), rtol=1e-6)
    large = _fit(SklearnTrain(estimator="logistic_regression", proba_floor=0.2), x[ones][:5], y[ones][:5], k=10)
    assert torch.isfinite(large).all() and torch.allclose(large.exp().sum(1), torch.ones(5))
    scores = _fit(SklearnTrain(estimator="ridge"), x[ones][:5], y[ones][:5]).numpy()
    assert (scores[:, 1] == 0).all() and (np.delete(scores, 1, axis=1) == LOW).all()


def test_probability_rows_fit_their_argmax(digits: tuple) -> None:
    x, y = digits
    fit = estimator_fit(SklearnTrain(params={"max_depth": 3}), ClassTargets(10))
    soft = torch.nn.functional.one_hot(torch.from_numpy(y[:200]), 10).double() * 0.8 + 0.02
    hard = fit.fit(torch.from_numpy(x[:200]), torch.from_numpy(y[:200]), 0)
    assert torch.equal(fit.fit(torch.from_numpy(x[:200]), soft, 0)(torch.from_numpy(x)), hard(torch.from_numpy(x)))


def test_floored_log_is_finite_for_zero_one_rows() -> None:
    out = floored_log(np.array([[1.0, 0.0, 0.0]]), 0.1)
    np.testing.assert_allclose(out, np.log([[1 / 1.2, 0.1 / 1.2, 0.1 / 1.2]]))


def test_random_forest_seeds(digits: tuple) -> None:
    x, y = digits
    spec = SklearnTrain(estimator="random_forest", params={"n_estimators": 5, "max_depth": 4})
    first, again, other = (_fit(spec, x[:200], y[:200], seed) for seed in (3, 3, 4))
    assert torch.equal(first, again) and not torch.equal(first, other)


# -- the evaluation protocol --------------------------------------------------------------------
def test_protocol_accuracy_equals_sklearn_score() -> None:
    problem = load({
        "data": {"kind": "digits"}, "synthetic": {"per_class": 5},
        "train": {"kind": "sklearn", "estimator": "decision_tree", "params": {"max_depth": 5}},
        "evaluate": {"seeds": [0, 1], "metrics": ["accuracy"], "corruptions": [{"kind": "noise"}],
                     "baselines": ["random"]},
    })
    data = load_dataset(problem.data)
    x, y = data.x_train[:200], data.y_train[:200]
    result = evaluate_distilled(x, y, data, problem, "cpu", progress=False)
    rows, test = x.reshape(len(x), -1).double().numpy(), data.x_test.reshape(len(data.x_test), -1).double().numpy()
    expected = [DecisionTreeClassifier(max_depth=5, random_state=s).fit(rows, y.numpy()).score(test, data.y_test.numpy())
                for s in (0, 1)]
    assert result["accuracy"]["values"] == pytest.approx(expected, abs=1e-9)
    assert list(result["per_model"]) == ["0:sklearn"]
    assert result["protocol"]["models"] == [problem.train.model_dump(mode="json")]
    assert len(result["corruptions"]["noise"]["values"]) == 2 and len(result["baselines"]["random"]["accuracy"]["values"]) == 2
    networks = load({**problem.model_dump(mode="json"), "evaluate": {"models": [{"kind": "linear"}], "seeds": [0],
                                                                     "epochs": 2, "metrics": ["accuracy"]}})
    assert list(evaluate_distilled(x, y, data, networks, "cpu", progress=False)["per_model"]) == ["0:linear"]


def test_protocol_real_targets() -> None:
    problem = load({"data": {"kind": "tabular", "name": "diabetes"}, "train": {"kind": "sklearn", "estimator": "ridge"},
                    "evaluate": {"seeds": [0]}})
    data = load_dataset(problem.data)
    result = evaluate_distilled(data.x_train[:50], data.y_train[:50], data, problem, "cpu", progress=False)
    prediction = Ridge(random_state=0).fit(data.x_train[:50].double().numpy(), data.y_train[:50].double().numpy())
    residual = prediction.predict(data.x_test.double().numpy()) - data.y_test.double().numpy()
    assert result["rmse"]["mean"] == pytest.approx(float(np.sqrt(np.mean(residual**2))), rel=1e-5)


# -- the spec -------------------------------------------------------------------------------------
BASE = {"data": {"kind": "digits"}, "train": {"kind": "sklearn", "estimator": "decision_tree"},
        "distance": {"kind": "feature_mean"}}


def _findings(spec: dict) -> dict[str, tuple[str, str, str]]:
    with pytest.raises(WellPosednessError) as info:
        compile(load(spec))
    return {f.code: (f.path, f.message, f.fix) for f in info.value.findings}


def test_unknown_params_are_named_with_the_valid_ones() -> None:
    path, message, fix = _findings({**BASE, "train": {**BASE["train"], "params": {"depth": 3}}})["ESTIMATOR_PARAMS"]
    assert path == "train.params" and "depth" in message and "max_depth" in fix


def test_model_set_is_refused() -> None:
    path, _, fix = _findings({**BASE, "model": {"kind": "mlp"}})["ESTIMATOR_IS_THE_MODEL"]
    assert path == "model" and "remove `model`" in fix


def test_logistic_on_real_targets_is_refused() -> None:
    spec = {**BASE, "data": {"kind": "tabular", "name": "diabetes"},
            "train": {"kind": "sklearn", "estimator": "logistic_regression"}}
    path, message, fix = _findings(spec)["ESTIMATOR_TARGETS"]
    assert path == "train.estimator" and "real" in message and "logistic_regression" not in fix


def test_gradient_optimizer_cannot_differentiate_an_estimator() -> None:
    path, message, fix = _findings({**BASE, "optimize": {"kind": "gradient"}})["NOT_DIFFERENTIABLE"]
    assert path == "train" and "`sklearn` has no gradient" in message and "zero_order" in fix


def test_explain_describes_the_estimator() -> None:
    from ddspec.analysis.facts import analyse

    problem = load({**BASE, "optimize": {"kind": "select"}})
    plan = Plan(problem, analyse(problem), "coreset", "", {}, {}, [], Estimate(0, 0.0))
    text = plan.explain()
    assert "scikit-learn decision_tree (fitted by the library; no gradient)" in text
    assert "evaluate    sklearn x seeds" in text and "random_state = seed" in text


def test_an_embedding_coreset_needs_a_network() -> None:
    """k-center in a network's embedding has no network when the model family is an estimator."""
    spec = {"name": "t", "data": {"kind": "digits"}, "synthetic": {"per_class": 2}, "train": {"kind": "sklearn"},
            "optimize": {"kind": "select", "method": "kcenter", "space": "embedding"}}
    with pytest.raises(WellPosednessError) as err:
        compile(load(spec))
    assert [f.code for f in err.value.findings] == ["EMBEDDING_NEEDS_NETWORK"]
    assert compile(load(spec, ["optimize.space=input"])).backend == "coreset"


@pytest.mark.parametrize(("section", "code"), [
    ({"risk": {"kind": "group_cvar", "groups": {"kind": "nearest_synthetic"}}}, "EMBEDDING_NEEDS_NETWORK"),
    ({"task": {"kind": "predictions"}}, "TEACHER_NEEDS_NETWORK"),
])
def test_parts_that_need_a_network_refuse_an_estimator(section: dict, code: str) -> None:
    """Groups in a network's embedding and a teacher network have no network when the model family is an
    estimator: refused before anything runs (they crashed inside the run before)."""
    spec = {"name": "t", "data": {"kind": "digits"}, "synthetic": {"per_class": 2}, "train": {"kind": "sklearn"},
            "task": {"kind": "test_error"}, "optimize": {"kind": "zero_order"}, **section}
    with pytest.raises(WellPosednessError) as err:
        compile(load(spec))
    assert code in [f.code for f in err.value.findings]
