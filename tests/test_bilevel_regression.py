"""Regression through the bilevel backend: the inner steps and the outer loss use the squared error of real-valued
targets. Ground truth: one SGD step and the outer loss by hand, and the hypergradient w.r.t. the synthetic inputs
and targets against central finite differences (float64, a linear model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ddspec
from ddspec.components.objectives.risks import mean
from ddspec.components.objectives.scenarios import task_loss
from ddspec.components.objectives.targets import RealTargets
from ddspec.components.objectives.tasks import TestError
from ddspec.components.training.implicit import implicit_hypergradient
from ddspec.components.training.unroll import (
    InnerData,
    InnerRecipe,
    checkpointed_hypergradient,
    unroll,
    unrolled_hypergradient,
)
from ddspec.errors import WellPosednessError
from ddspec.spec.risk import MeanRisk

K = 4


def linear_problem(steps: int = K) -> tuple[nn.Linear, InnerData, torch.Tensor, torch.Tensor]:
    """f(x) = w·x + b on 3 features; 6 synthetic rows with learned real targets; a real batch of 20."""
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    x = torch.randn(6, 3, requires_grad=True)
    y = torch.randn(6, requires_grad=True)
    batches = [None, torch.tensor([0, 2, 4]), None, torch.tensor([1, 3, 5])][:steps]
    data = InnerData(x, y, torch.full((steps,), 0.1), batches, RealTargets(1).loss)
    return net, data, torch.randn(20, 3), torch.randn(20)


def outer_of(net: nn.Module, xr: torch.Tensor, yr: torch.Tensor):
    """ℓ(θ) = (1/n) Σ_i (f_θ(x_i) − y_i)² on the real batch: task test_error on real targets, risk mean."""
    return task_loss(net, xr, TestError(RealTargets(1)).per_sample(xr, yr), mean(MeanRisk()).within)


@pytest.mark.usefixtures("float64")
def test_one_sgd_step_and_the_outer_loss_by_hand() -> None:
    net, data, xr, yr = linear_problem(steps=1)
    w0, b0 = net.weight.detach().clone(), net.bias.detach().clone()
    w1, b1 = (p.detach() for p in unroll(net, data, InnerRecipe("sgd", 0.0, 0.0, 1)))
    # ∇ (1/n) Σ (w·x_i + b − y_i)² = (2/n) Σ r_i (x_i, 1)
    r = ((data.x @ w0.T + b0).squeeze(1) - data.targets).detach()
    assert torch.allclose(w1, w0 - 0.1 * 2 / 6 * (r @ data.x.detach())[None], atol=1e-12)
    assert torch.allclose(b1, b0 - 0.1 * 2 / 6 * r.sum(), atol=1e-12)
    expected = (((xr @ w1.T + b1).squeeze(1) - yr) ** 2).mean()
    assert float(outer_of(net, xr, yr)([w1, b1])) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(("optimizer", "momentum", "every"), [("sgd", 0.0, None), ("sgd", 0.9, None),
                                                                ("adam", 0.0, None), ("sgd", 0.9, 3)])
def test_hypergradient_wrt_inputs_and_targets_matches_finite_differences(optimizer, momentum, every) -> None:
    net, data, xr, yr = linear_problem()
    recipe, outer = InnerRecipe(optimizer, momentum, 1e-3, K), outer_of(net, xr, yr)
    if every is None:
        loss, (gx, gy) = unrolled_hypergradient(net, data, recipe, outer)
    else:
        loss, (gx, gy) = checkpointed_hypergradient(net, data, recipe, outer, every)

    def loss_at(x: torch.Tensor, y: torch.Tensor) -> float:
        d = InnerData(x, y, data.lrs, data.batches, data.loss)
        return float(outer(unroll(net, d, recipe)).detach())

    assert loss == pytest.approx(loss_at(data.x.detach(), data.targets.detach()), rel=1e-12)
    eps = 1e-6
    for grad, leaf in ((gx, 0), (gy, 1)):
        assert grad.norm() > 0
        for _ in range(3):
            direction = torch.randn_like(grad)
            plus = [t.detach() + (eps * direction if i == leaf else 0) for i, t in enumerate((data.x, data.targets))]
            minus = [t.detach() - (eps * direction if i == leaf else 0) for i, t in enumerate((data.x, data.targets))]
            fd = (loss_at(*plus) - loss_at(*minus)) / (2 * eps)
            assert float((grad * direction).sum()) == pytest.approx(fd, rel=1e-6, abs=1e-10)


@pytest.mark.usefixtures("float64")
def test_implicit_hypergradient_of_ridge_regression_is_the_closed_form_derivative() -> None:
    """Weight decay λ makes the inner problem ridge regression, θ* = argmin (1/n)‖[X 1]θ − y‖² + (λ/2)‖θ‖²
    = (2/n A + λI)⁻¹ (2/n) [X 1]ᵀ y with A = [X 1]ᵀ[X 1]; many GD steps reach it, and the implicit hypergradient
    w.r.t. the targets is the derivative of the outer loss at θ*(y), computed here by autograd through the solve."""
    net, data, xr, yr = linear_problem()
    lam, steps = 0.1, 3000
    data = InnerData(data.x, data.targets, torch.full((steps,), 0.2), [None] * steps, data.loss)
    recipe, outer = InnerRecipe("sgd", 0.0, lam, steps), outer_of(net, xr, yr)
    _, (gx, gy) = implicit_hypergradient(net, data, recipe, outer, "cg", iterations=50)

    y = data.targets.detach().clone().requires_grad_(True)
    x = data.x.detach().clone().requires_grad_(True)
    a = torch.cat([x, torch.ones(6, 1)], 1)
    theta = torch.linalg.solve(2 / 6 * a.T @ a + lam * torch.eye(4), 2 / 6 * a.T @ y)
    loss = ((xr @ theta[:3] + theta[3] - yr) ** 2).mean()
    ex, ey = torch.autograd.grad(loss, (x, y))
    assert torch.allclose(gy, ey, rtol=1e-6, atol=1e-9)
    assert torch.allclose(gx, ex, rtol=1e-6, atol=1e-9)


@pytest.fixture
def diabetes_spec() -> dict:
    return {
        "name": "diabetes-tiny",
        "data": {"kind": "tabular", "name": "diabetes"},
        "synthetic": {"total": 10, "init": "real", "learn_labels": True},
        "model": {"kind": "mlp", "hidden": [16]},
        "task": {"kind": "test_error"},
        "train": {"steps": 5, "lr": 0.05, "momentum": 0.9},
        "optimize": {"kind": "gradient", "iterations": 4, "real_batch_per_class": 64},
        "evaluate": {"seeds": [0], "epochs": 5},
        "runtime": {"device": "cpu", "progress": False, "checkpoint_every": 2, "threads": 1},
    }


def test_regression_compiles_to_bilevel(diabetes_spec) -> None:
    plan = ddspec.compile(ddspec.load(diabetes_spec))
    assert plan.backend == "bilevel" and "task `test_error`" in plan.reason


@pytest.mark.parametrize(("overrides", "code"), [
    (["task={kind: predictions}"], "PREDICTIONS_NEED_CLASSES"),
    (["optimize.hypergradient={kind: ridge_head}"], "RIDGE_HEAD_NEEDS_CLASSES"),
])
def test_what_regression_cannot_take_is_refused_with_a_fix(diabetes_spec, overrides, code) -> None:
    with pytest.raises(WellPosednessError) as err:
        ddspec.compile(ddspec.load(diabetes_spec, overrides))
    finding = next(f for f in err.value.findings if f.code == code)
    assert finding.fix and "real-valued targets" in finding.message


def test_regression_distills_real_valued_targets(diabetes_spec, tmp_path) -> None:
    """The distilled targets are real values that moved from their start; the outer squared error falls; reruns
    are identical."""
    from ddspec.registry import BACKENDS, DATA
    from ddspec.runtime.context import RunContext

    def distill(out):
        plan = ddspec.compile(ddspec.load(diabetes_spec, ["optimize.iterations=30", "optimize.lr=0.03"]))
        torch.manual_seed(0)
        ctx = RunContext(plan.problem, plan.analysis, DATA.build(plan.problem.data), torch.device("cpu"), out,
                         generator=torch.Generator().manual_seed(0))
        return BACKENDS["bilevel"].run(ctx), ctx.loops[0].history

    (a, history), (b, _) = distill(tmp_path / "a"), distill(tmp_path / "b")
    assert a.y.dtype == torch.float32 and a.y.shape == (10, 1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    losses = [row["loss"] for row in history]
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5])


@pytest.mark.parametrize("task", ["test_error", None])
def test_kl_on_real_targets_asks_to_remove_the_distance_not_for_predictions(diabetes_spec, task) -> None:
    """`distance: kl` on regression data: task predictions is refused there too (PREDICTIONS_NEED_CLASSES), so the
    fix is to drop the distance (and measure the test error), not to set task: predictions."""
    with pytest.raises(WellPosednessError) as err:
        ddspec.compile(ddspec.load({**diabetes_spec, "task": task and {"kind": task}, "distance": {"kind": "kl"}}))
    finding = next(f for f in err.value.findings if f.code == "DISTANCE_NEEDS_TASK")
    assert finding.path == "distance" and "real-valued targets" in finding.message
    assert "remove `distance`" in finding.fix and "predictions" not in finding.fix
    assert ("test_error" in finding.fix) == (task is None)


def test_training_helpers_take_the_loss_explicitly() -> None:
    """No cross-entropy default left: fit, InnerData and train_loss must be told the targets' loss."""
    from ddspec.components.training.experts import Recipe
    from ddspec.components.training.fit import fit
    from ddspec.components.training.unroll import train_loss

    net, x, y = nn.Linear(3, 1), torch.randn(6, 3), torch.randn(6)
    with pytest.raises(TypeError, match="loss"):
        fit(net, x, y, Recipe(1, 0.1, 0.0, 0.0, 3), torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="loss"):
        InnerData(x, y, torch.full((1,), 0.1), [None])  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="loss"):
        train_loss(net, ["weight", "bias"], list(net.parameters()), x, y)  # type: ignore[call-arg]


def test_trajectory_matching_runs_on_real_valued_targets(diabetes_spec, tmp_path) -> None:
    """Trajectory matching compares parameters, so it is well defined for regression: the experts train with the
    squared error (the targets' loss; cross-entropy cannot even take real targets), the run distills finite real
    targets and its normalized distance falls."""
    from safetensors.torch import load_file

    from ddspec.components.training.experts import EXPERTS, SEED_OFFSET, Recipe
    from ddspec.components.training.fit import fit
    from ddspec.registry import DATA, MODELS

    spec = {**diabetes_spec, "task": None, "distance": {"kind": "trajectory", "experts": 2, "expert_epochs": 3,
                                                          "max_start_epoch": 1, "expert_span": 2}}
    plan = ddspec.compile(ddspec.load(spec, ["optimize.iterations=6", "train.lr=0.01",
                                             "synthetic.learn_labels=false"]))
    assert plan.backend == "bilevel" and "trajectory matching" in plan.reason
    result = plan.run(tmp_path / "t")
    assert result.y.is_floating_point() and len(result.y) == 10 and torch.isfinite(result.x).all()
    rows = [row["loss"] for row in plan_history(tmp_path / "t")]
    assert len(rows) == 6 and all(torch.isfinite(torch.tensor(rows))) and rows[-1] < rows[0]

    # expert 0 after one epoch is the model trained one epoch with the squared error, from the expert's seed
    problem, d = plan.problem, plan.problem.distance
    data = DATA.build(problem.data)
    seed = problem.runtime.seed + SEED_OFFSET
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS.build(problem.model, data.input_shape, data.targets.num_outputs)
    fit(model, data.x_train, data.y_train, Recipe(1, d.expert_lr, d.expert_momentum, 0.0, d.expert_batch_size),
        torch.Generator().manual_seed(seed), loss=data.targets.loss)
    experts = load_file(str(tmp_path / "t" / EXPERTS))
    for name, p in model.named_parameters():
        assert torch.equal(experts[f"0.1.{name}"], p.detach())


def plan_history(out) -> list[dict]:
    import json

    return json.loads((out / "history.json").read_text())["rows"]
