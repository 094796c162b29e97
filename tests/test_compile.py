"""Analysis, well-posedness rules, backend selection and the Plan."""

from __future__ import annotations

import pytest

from ddspec.compiler.plan import compile
from ddspec.errors import BackendUnavailableError, WellPosednessError
from ddspec.spec.loading import load

BASE = {"data": {"kind": "digits"}, "distance": {"kind": "feature_mean"}}


def errors_of(spec: dict) -> dict[str, str]:
    with pytest.raises(WellPosednessError) as info:
        compile(load(spec))
    return {f.code: f.path for f in info.value.findings}


def test_synthetic_not_smaller_than_real() -> None:
    # digits has 1347 training images; 1400 in total is more.
    assert errors_of({**BASE, "synthetic": {"total": 1400}}) == {
        "SYNTHETIC_NOT_SMALLER": "synthetic", "CLASS_TOO_SMALL": "synthetic.total",
    }


def test_more_per_class_than_the_smallest_class() -> None:
    with pytest.raises(WellPosednessError) as info:
        compile(load({**BASE, "synthetic": {"per_class": 134}}))  # smallest digits class has 133
    (finding,) = info.value.findings
    assert finding.code == "CLASS_TOO_SMALL" and finding.path == "synthetic.per_class"
    assert "133" in finding.fix


def test_model_input_mismatch_names_both_shapes() -> None:
    with pytest.raises(WellPosednessError) as info:
        compile(load({**BASE, "model": {"kind": "convnet1d"}, "evaluate": {"models": [{"kind": "convnet", "depth": 4}]}}))
    found = {f.path: f.message for f in info.value.findings}
    assert set(found) == {"model", "evaluate.models.0"}
    assert "C x L" in found["model"] and "1x8x8" in found["model"]
    assert "2^4=16" in found["evaluate.models.0"]


def test_all_rules_report_at_once() -> None:
    spec = {**BASE, "synthetic": {"per_class": 200, "learn_labels": True}, "model": {"kind": "convnet1d"}}
    assert errors_of(spec) == {
        "CLASS_TOO_SMALL": "synthetic.per_class",
        "MODEL_INPUT_MISMATCH": "model",
        "LABELS_NOT_LEARNABLE": "synthetic.learn_labels",
        "SYNTHETIC_NOT_SMALLER": "synthetic",
    }


def test_no_objective() -> None:
    assert errors_of({"data": {"kind": "digits"}}) == {"NO_OBJECTIVE": "distance"}


def test_surrogate_without_task_is_a_note_naming_the_exact_objective() -> None:
    plan = compile(load(BASE))
    (note,) = plan.notes
    assert note.code == "SURROGATE_OBJECTIVE" and "test_error" in note.message
    assert "SURROGATE_OBJECTIVE" in plan.explain()


def test_default_model_follows_the_data_shape() -> None:
    assert compile(load(BASE)).problem.model.kind == "convnet"
    assert compile(load({**BASE, "data": {"kind": "mnist1d"}})).problem.model.kind == "convnet1d"
    assert compile(load({**BASE, "data": {"kind": "tabular", "name": "wine"}, "synthetic": {"per_class": 2}})).problem.model.kind == "mlp"


def test_backend_choice_and_rejections() -> None:
    plan = compile(load(BASE))
    assert plan.backend == "matching"
    assert "coreset" in plan.rejected
    plan = compile(load({**BASE, "optimize": {"kind": "select", "method": "herding"}}))
    assert plan.backend == "coreset" and "matching" in plan.rejected


def test_forced_backend_that_cannot_lower_names_alternatives() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        compile(load({**BASE, "backend": "coreset"}))
    (finding,) = info.value.findings
    assert finding.path == "backend" and "matching" in finding.fix


def test_resolved_defaults_are_filled_and_reported() -> None:
    plan = compile(load(BASE))
    assert plan.problem.optimize.lr is not None
    assert "optimize.lr" in plan.defaults and "model" in plan.defaults
    user = compile(load({**BASE, "optimize": {"kind": "gradient", "lr": 0.5}}))
    assert user.problem.optimize.lr == 0.5 and "optimize.lr" not in user.defaults


def test_explain_and_json() -> None:
    plan = compile(load(BASE))
    text = plan.explain()
    for part in ("backend     matching", "rejected    coreset", "estimate", "1347 train / 450 test", "evaluate"):
        assert part in text
    js = plan.to_json()
    assert js["backend"] == "matching" and js["estimate"]["memory_bytes"] > 0 and js["estimate"]["seconds"] > 0
