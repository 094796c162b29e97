"""The zero-order backend: compiler choice, the objective it evaluates (against the bilevel backend's unroll and
hypergradient, float64), batched vs looped evaluations, and whole runs (determinism, resume, bounds)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import ddspec
from ddspec.backends.zero_order.run import trained_outputs
from ddspec.components import zero_order
from ddspec.components.objectives.scenarios import Objective, task_loss
from ddspec.components.training.unroll import InnerData, InnerRecipe, unrolled_hypergradient
from ddspec.errors import RunError, WellPosednessError


@pytest.fixture
def zo_spec(bilevel_spec) -> dict:
    """bilevel_spec (digits, 2 per class, K = 3) with the zero-order optimizer and a small MLP."""
    return {**bilevel_spec, "model": {"kind": "mlp", "hidden": [16]},
            "optimize": {"kind": "zero_order", "iterations": 3, "samples": 4, "real_batch_per_class": 8,
                         "lr": 0.5}}


def compiled(spec: dict, *overrides: str):
    return ddspec.compile(ddspec.load(spec, list(overrides)))


def test_compiler_picks_zero_order_and_explains_the_evaluations(zo_spec) -> None:
    plan = compiled(zo_spec, "optimize.estimator=forward")
    assert plan.backend == "zero_order" and plan.rejected["bilevel"].endswith("is not a gradient optimizer")
    text = plan.explain()
    assert "5 evaluations per scenario and step" in text  # M + 1 = 5
    assert "3 iterations x 5 evaluations" in text and "= 15 objective evaluations" in text
    antithetic = compiled(zo_spec, "scenarios.inits=2").explain()
    assert "16 evaluations (8 per scenario x 2 scenario(s))" in antithetic and "8 vmapped at once" in antithetic


def test_surrogate_distances_and_pools_are_refused_with_reasons(zo_spec, tiny_spec) -> None:
    with pytest.raises(ddspec.errors.BackendUnavailableError) as err:
        compiled({**tiny_spec, "optimize": {"kind": "zero_order"}})
    assert "matching surrogate" in str(err.value)
    with pytest.raises(ddspec.errors.BackendUnavailableError, match="scenarios.pool"):
        compiled(zo_spec, "scenarios.pool={size: 2, max_steps: 10}")


def test_spec_findings_bounds_learned_lrs(zo_spec) -> None:
    with pytest.raises(WellPosednessError) as err:
        compiled(zo_spec, "optimize.bounds=[1, 0]", "train.learn_lr=true")
    assert {f.code for f in err.value.findings} == {"EMPTY_BOUNDS", "LR_NOT_LEARNABLE"}


def _problem(seed: int = 0):
    """A float64 instance of the bilevel objective: an MLP trained K = 4 SGD steps on 10 digits (1 per class),
    its cross-entropy on 100 real rows."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0), torch.tensor(y)
    first = torch.stack([torch.nonzero(y == c)[0, 0] for c in range(10)])
    xs, ys, xr, yr = x[first], y[first], x[200:300], y[200:300]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    recipe = InnerRecipe("sgd", 0.5, 0.0, 4)
    outer = task_loss(model, xr, lambda out: F.cross_entropy(out, yr, reduction="none"), lambda l: l.mean())
    params0 = [p.detach() for p in model.parameters()]
    fit = trained_outputs(model, params0, recipe, 0.3, [None] * 4, F.cross_entropy, outer)
    data = InnerData(xs.clone().requires_grad_(True), ys, torch.full((4,), 0.3, dtype=torch.float64), [None] * 4,
                     F.cross_entropy)
    loss, (hypergradient,) = unrolled_hypergradient(model, data, recipe, outer, params0=params0)
    return fit, xs, ys, loss, hypergradient


def test_the_evaluated_objective_is_the_bilevel_outer_loss(float64) -> None:
    """The zero-order backend's fit (torch.func.grad steps) gives the loss of the bilevel unroll (autograd steps)."""
    fit, xs, ys, loss, _ = _problem()
    assert float(fit(xs, ys)) == pytest.approx(loss, rel=1e-12)


def test_batched_evaluations_equal_looped_ones(float64) -> None:
    fit, xs, ys, _, _ = _problem()
    points = xs + 0.05 * torch.randn(6, *xs.shape, generator=torch.Generator().manual_seed(0), dtype=xs.dtype)
    batched = torch.func.vmap(lambda x: fit(x, ys))(points)
    looped = torch.stack([fit(p, ys) for p in points])
    torch.testing.assert_close(batched, looped, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("kind", "ratio", "bound"), [("orthogonal", 1, 0.99), ("gaussian", 8, 0.9)])
def test_estimate_aligns_with_the_autograd_hypergradient(float64, kind: str, ratio: int, bound: float) -> None:
    """Antithetic estimates on the bilevel objective (d = 640): M = d orthogonal directions, or M = 8d Gaussian ones
    (E cos ≈ (1 + (d+1)/M)^(-1/2) ≈ 0.94), have cosine > ``bound`` with the unrolled hypergradient."""
    fit, xs, ys, _, hypergradient = _problem()
    d = xs.numel()
    v = zero_order.directions(kind, ratio * d, d, torch.Generator().manual_seed(1))
    values = torch.func.vmap(lambda p: fit(p.reshape(xs.shape), ys), chunk_size=2048)
    g, _ = zero_order.estimate(values, xs.reshape(-1), v, 1e-3, "antithetic")
    cosine = F.cosine_similarity(g, hypergradient.reshape(-1), dim=0)
    assert cosine > bound


def run(spec: dict, out, *overrides: str):
    return compiled(spec, *overrides).run(out)


def test_runs_are_deterministic_and_resume_bit_for_bit(zo_spec, tmp_path, interrupt_after) -> None:
    a = run(zo_spec, tmp_path / "a")
    b = run(zo_spec, tmp_path / "b")
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, run(zo_spec, tmp_path / "c", "runtime.seed=1").x)
    rows = json.loads((tmp_path / "a" / "history.json").read_text())["rows"]
    assert [r["evaluations"] for r in rows] == [8, 16, 24] and all(r["grad_norm"] > 0 for r in rows)

    disarm = interrupt_after(1)
    with pytest.raises(RunError, match="INTERRUPTED"):
        run(zo_spec, tmp_path / "d")
    disarm()
    resumed = compiled(zo_spec).run(tmp_path / "d", resume=True)
    assert torch.equal(a.x, resumed.x)
    saved = load_file(str(tmp_path / "d" / "distilled.safetensors"))
    assert torch.equal(saved["x"], a.x)


def test_looped_run_equals_batched_run_and_steps_move_the_set(zo_spec, tmp_path) -> None:
    batched = run(zo_spec, tmp_path / "a", "optimize.evaluations=batched")
    looped = run(zo_spec, tmp_path / "b", "optimize.evaluations=loop")
    torch.testing.assert_close(batched.x, looped.x, rtol=1e-4, atol=1e-5)
    start = run(zo_spec, tmp_path / "c", "optimize.iterations=1", "optimize.lr=1e-12")
    assert (batched.x - start.x).abs().max() > 1e-3


def test_bounds_project_the_inputs(zo_spec, tmp_path) -> None:
    result = run(zo_spec, tmp_path / "a", "optimize.bounds=[0.2, 0.8]", "optimize.lr=5")
    assert float(result.x.min()) >= 0.2 - 1e-6 and float(result.x.max()) <= 0.8 + 1e-6
    assert float(((result.x - 0.2).abs() < 1e-6).float().mean()) > 0.05  # the box is active (digits: [0, 1])


def test_learned_labels_are_perturbed_too(zo_spec, tmp_path) -> None:
    result = run(zo_spec, tmp_path / "a", "synthetic.learn_labels=true", "optimize.lr=2")
    assert result.y.shape == (20, 10) and torch.allclose(result.y.sum(1), torch.ones(20))
    assert float(result.y.max(1).values.min()) < 0.9 - 1e-4  # the label probabilities moved from their start


def _context(plan, tmp_path):
    from ddspec.registry import DATA
    from ddspec.runtime.context import RunContext

    return RunContext(plan.problem, plan.analysis, DATA.build(plan.problem.data), torch.device("cpu"), tmp_path,
                      generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("inner", ["torch", "sklearn"])
def test_evaluations_of_one_step_share_the_scenarios(zo_spec, tmp_path, inner) -> None:
    """Common random numbers: within a step, a perturbation of 1e-7 moves the value by almost nothing, while the
    next step's draws (new initialisation or seed, new real batch) move it by far more."""
    from ddspec.backends.zero_order.run import EstimatorInner, Flat, TorchInner, objective_values
    from ddspec.components.synthetic.set import SyntheticSet
    from ddspec.registry import RISKS

    overrides = ["scenarios.inits=2"]
    if inner == "sklearn":
        spec = {k: v for k, v in zo_spec.items() if k not in ("model", "train")}
        spec["train"] = {"kind": "sklearn", "estimator": "logistic_regression", "params": {"max_iter": 200}}
    else:
        spec = zo_spec
    plan = compiled(spec, *overrides)
    ctx = _context(plan, tmp_path)
    synthetic = SyntheticSet.create(plan.problem, ctx.data, ctx.generator)
    flat, risk = Flat(synthetic), RISKS.build(plan.problem.risk)
    objective = Objective(ctx, risk, synthetic.strata)
    evaluator = (TorchInner if inner == "torch" else EstimatorInner)(ctx, objective)
    s = flat.vector()
    points = torch.stack([s, s + 1e-7 * torch.randn(s.shape, generator=torch.Generator().manual_seed(1))])
    within = [objective_values(ctx, evaluator, evaluator.draw(it, synthetic), flat, risk)(points) for it in range(3)]
    step_to_step = max(abs(float(w[0] - within[0][0])) for w in within[1:])
    assert all(abs(float(w[1] - w[0])) < 1e-4 for w in within) and step_to_step > 1e-3


@pytest.mark.parametrize("overrides", [
    ("scenarios.inits=3", "risk={kind: cvar, alpha: 0.5}"),
    ("risk={kind: group_cvar, groups: {kind: nearest_synthetic}}",),
    ("task={kind: predictions}", "evaluate.seeds=[0]"),
])
def test_task_distance_and_risk_variants_run(zo_spec, tmp_path, overrides) -> None:
    result = run(zo_spec, tmp_path / "a", *overrides)
    rows = json.loads((tmp_path / "a" / "history.json").read_text())["rows"]
    assert len(rows) == 3 and all(r["loss"] > 0 for r in rows)
    start = run(zo_spec, tmp_path / "b", *overrides, "optimize.iterations=1", "optimize.lr=1e-12")
    assert torch.isfinite(result.x).all() and (result.x - start.x).abs().max() > 1e-5


def test_a_decision_tree_is_distilled_deterministically(zo_spec, tmp_path) -> None:
    spec = {k: v for k, v in zo_spec.items() if k not in ("model", "train")}
    spec["train"] = {"kind": "sklearn", "estimator": "decision_tree", "params": {"max_depth": 4}}
    a = run(spec, tmp_path / "a", "optimize.bounds=[0, 1]")
    b = run(spec, tmp_path / "b", "optimize.bounds=[0, 1]")
    assert torch.equal(a.x, b.x) and a.x.min() >= 0 and a.x.max() <= 1
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"]["mean"] <= 1.0 and list(metrics["per_model"]) == ["0:sklearn"]
