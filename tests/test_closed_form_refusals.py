"""What the exactly solved backends (krr, convex) refuse, and the light facts they read: fixed SVM labels cannot be
learned, the task must be the targets' own loss, one scenario only; the convex estimate counts the loss's weight
columns; the synthetic set reads the data's kind of targets."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ddspec
from ddspec.errors import BackendUnavailableError, WellPosednessError


def refusal(spec: dict, *overrides: str) -> str:
    """The reason the spec's declared backend gives for declining it."""
    with pytest.raises(BackendUnavailableError) as info:
        ddspec.compile(ddspec.load(spec, list(overrides)))
    (finding,) = info.value.findings
    assert (finding.code, finding.path) == ("BACKEND_CANNOT_LOWER", "backend") and finding.fix
    return finding.message


# -- 1. the hinge's labels are fixed ----------------------------------------------------------------------------


def test_svm_with_learned_labels_is_refused_at_compile(convex_spec) -> None:
    convex_spec["train"] = {"kind": "convex", "loss": "svm", "lam": 0.01}
    with pytest.raises(WellPosednessError) as info:
        ddspec.compile(ddspec.load(convex_spec, ["synthetic.learn_labels=true"]))
    found = {f.code: f for f in info.value.findings}
    assert found["LABELS_NOT_LEARNABLE"].path == "synthetic.learn_labels"
    assert "svm" in found["LABELS_NOT_LEARNABLE"].message and found["LABELS_NOT_LEARNABLE"].fix
    ddspec.compile(ddspec.load(convex_spec))  # fixed labels: fine


@pytest.mark.parametrize("loss", ["logistic", "squared"])
def test_soft_label_losses_take_learned_labels(convex_spec, loss) -> None:
    convex_spec["train"]["loss"] = loss
    assert ddspec.compile(ddspec.load(convex_spec, ["synthetic.learn_labels=true"])).backend == "convex"


def test_the_loss_objects_read_the_spec_facts() -> None:
    """The hinge (and only it) has hard labels; every loss's target matrix has the columns its facts declare."""
    from ddspec.components.closed_form.convex import LOSSES

    assert {name for name, loss in LOSSES.items() if loss.hard_labels} == {"svm"}
    rng = np.random.default_rng(0)
    for loss in LOSSES.values():
        for K in (2, 3):
            assert loss.targets(rng.integers(0, K, 6).astype(float), K).shape[1] == loss.columns(K)
        if loss.real_targets:
            assert loss.targets(rng.standard_normal((6, 2)), 0).shape[1] == loss.columns(0, 2)


# -- 2. the task is the targets' own loss -----------------------------------------------------------------------


def test_krr_refuses_the_predictions_task_naming_it(krr_spec) -> None:
    krr_spec["backend"] = "krr"
    krr_spec["task"] = {"kind": "predictions"}
    assert "the task `predictions` is not the targets' own loss" in refusal(krr_spec)
    del krr_spec["task"]
    assert ddspec.compile(ddspec.load(krr_spec)).backend == "krr"  # no task: fine
    krr_spec["task"] = {"kind": "test_error"}
    assert ddspec.compile(ddspec.load(krr_spec)).backend == "krr"


def test_convex_refuses_the_predictions_task_naming_it(convex_spec) -> None:
    convex_spec["backend"] = "convex"
    convex_spec["task"] = {"kind": "predictions"}
    assert "the task `predictions` is not the targets' own loss" in refusal(convex_spec, "distance.kind=kl")


def test_test_error_declares_the_targets_loss(convex_spec) -> None:
    from ddspec.analysis.facts import analyse

    assert analyse(ddspec.load(convex_spec)).has("task:targets_loss")
    assert not analyse(ddspec.load(convex_spec, ["task.kind=predictions"])).has("task:targets_loss")


# -- 3. one scenario --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "words"), [
    (["scenarios.inits=4"], "scenarios.inits is 4"),
    (["risk.kind=cvar"], "the risk `cvar` weighs scenarios"),
    (["risk.kind=max"], "the risk `max` weighs scenarios"),
])
@pytest.mark.parametrize("backend", ["krr", "convex"])
def test_several_scenarios_are_refused(krr_spec, convex_spec, backend, overrides, words) -> None:
    spec = {**(krr_spec if backend == "krr" else convex_spec), "backend": backend}
    message = refusal(spec, *overrides)
    assert words in message and "solved exactly" in message


@pytest.mark.parametrize("backend", ["krr", "convex"])
def test_scenario_models_are_refused(krr_spec, convex_spec, backend) -> None:
    spec = {**(krr_spec if backend == "krr" else convex_spec), "backend": backend}
    spec["scenarios"] = {"models": [{"kind": "linear"}]}
    assert "scenarios.models" in refusal(spec)


# -- 4. the convex estimate counts the loss's weight columns ----------------------------------------------------


@pytest.mark.parametrize(("loss", "columns"), [("logistic", 1), ("svm", 1), ("squared", 2)])
def test_convex_estimate_counts_the_weight_columns(convex_spec, loss, columns) -> None:
    """breast_cancer: 30 features, 2 classes; binary ridge fits one column per class, the others one score."""
    from ddspec.backends.convex import CONIC_SLOWDOWN, IPM_ITERATIONS, SOLVE_OVERHEAD_S
    from ddspec.compiler.estimate import THROUGHPUT

    convex_spec["train"]["loss"] = loss

    def estimate(iterations: int) -> float:
        spec = {**convex_spec, "optimize": {**convex_spec["optimize"], "iterations": iterations}}
        return ddspec.compile(ddspec.load(spec)).estimate.seconds

    q, rate = 31 * columns, THROUGHPUT["cpu"]
    per_iteration = IPM_ITERATIONS * CONIC_SLOWDOWN * 4 * q * q / rate + SOLVE_OVERHEAD_S + q**3 / rate
    assert estimate(3) - estimate(1) == pytest.approx(2 * per_iteration)


# -- 5. the synthetic set reads the data's targets --------------------------------------------------------------


def test_integer_valued_real_targets_are_one_stratum_of_rows() -> None:
    """Real targets that happen to be integers are still real targets (the data says so, not the dtype)."""
    from ddspec.components.data.base import Dataset
    from ddspec.components.synthetic.set import SyntheticSet
    from ddspec.spec.synthetic import SyntheticSpec

    x = torch.randn(8, 3)
    y = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    data = Dataset("counts", x, y, x, y, 0)
    problem = SimpleNamespace(synthetic=SyntheticSpec(total=4, learn_labels=True))
    s = SyntheticSet.starting_at(problem, data, x[:4], y[:4], labels="logits")
    assert s.label_form == "rows" and s.slices == [slice(0, 4)]
    assert s.learned.is_leaf and s.learned.requires_grad and s.learned.shape == (4, 1)
    torch.testing.assert_close(s.targets(), y[:4, None].float())


def test_label_logits_are_a_plain_start_and_the_set_owns_the_leaf() -> None:
    from ddspec.components.data.base import Dataset
    from ddspec.components.synthetic.set import SyntheticSet, label_logits
    from ddspec.spec.synthetic import SyntheticSpec

    y = torch.tensor([0, 1, 2])
    assert not label_logits(y, 3).requires_grad
    data = Dataset("toy", torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2]), torch.randn(3, 2), y, 3)
    problem = SimpleNamespace(synthetic=SyntheticSpec(per_class=1, learn_labels=True))
    s = SyntheticSet.starting_at(problem, data, data.x_train[:3], y)
    assert s.label_form == "logits" and s.learned.is_leaf and s.learned.requires_grad
    torch.testing.assert_close(s.learned.detach(), label_logits(y, 3))


# -- 6. one implementation of target rows -----------------------------------------------------------------------


def test_kernel_models_use_the_targets_rows() -> None:
    """The kernel module has no copy of ``Targets.rows``; a kernel ridge fit on class indices equals the fit on
    their one-hot rows, and on real values the fit on their column."""
    from ddspec.backends.convex import run as convex_run
    from ddspec.components.closed_form.krr import LinearFeatures
    from ddspec.components.models import kernel

    assert not hasattr(kernel, "target_rows") and not hasattr(kernel, "targets")
    assert not hasattr(convex_run, "convex_model")
    x = torch.randn(12, 4, dtype=torch.float64)
    y = torch.arange(12) % 3
    by_index = kernel.KernelRidge(LinearFeatures(4), 3).fit(x, y, 0.1).W
    by_rows = kernel.KernelRidge(LinearFeatures(4), 3).fit(x, torch.eye(3)[y], 0.1).W
    np.testing.assert_array_equal(by_index, by_rows)
    real = torch.randn(12)
    np.testing.assert_array_equal(kernel.KernelRidge(LinearFeatures(4), 1).fit(x, real, 0.1).W,
                                  kernel.KernelRidge(LinearFeatures(4), 1).fit(x, real[:, None], 0.1).W)
