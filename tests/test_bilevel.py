"""The bilevel backend: compiler choice and explain, spec rules, and small runs of each objective."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import ddspec
from ddspec.components.data.base import channel_stats
from ddspec.components.objectives.risks import mean, worst
from ddspec.components.training.experts import EXPERTS, TEACHER
from ddspec.components.training.unroll import unit_norm
from ddspec.errors import WellPosednessError
from ddspec.registry import DATA, HYPERGRADIENTS
from ddspec.spec.optimize import ImplicitHypergradient, RidgeHeadHypergradient, UnrolledHypergradient
from ddspec.spec.risk import MaxRisk, MeanRisk


def compiled(spec: dict, *overrides: str):
    return ddspec.compile(ddspec.load(spec, list(overrides)))


def test_compiler_picks_bilevel_for_an_exact_task_and_explains_it(bilevel_spec) -> None:
    plan = compiled(bilevel_spec)
    assert plan.backend == "bilevel"
    assert "no distance is declared" in plan.rejected["matching"]
    text = plan.explain()
    assert "K = 3 inner steps" in text and "unrolled (torch_func)" in text and "peak memory" in text
    assert plan.problem.optimize.optimizer == "adam" and plan.problem.optimize.hypergradient.engine == "torch_func"


def test_matching_surrogates_stay_on_matching(tiny_spec) -> None:
    plan = compiled(tiny_spec)
    assert plan.backend == "matching" and "surrogate" in plan.rejected["bilevel"]
    assert plan.problem.optimize.optimizer == "sgd"


def test_explain_shows_truncation_checkpointing_and_implicit(bilevel_spec) -> None:
    text = compiled(bilevel_spec, "optimize.hypergradient={kind: unrolled, truncate: 2, checkpoint_every: 1}").explain()
    assert "last 2 steps tracked" in text and "checkpoint every 1 steps" in text
    text = compiled(bilevel_spec, "optimize.hypergradient={kind: implicit, solver: neumann}").explain()
    assert "implicit (neumann" in text
    text = compiled(bilevel_spec, "optimize.hypergradient={kind: ridge_head, ridge: 0.01}").explain()
    assert "ridge head (last layer in closed form, λ = 0.01" in text


def test_memory_estimate_scales_with_the_unroll_and_warns_when_too_large(bilevel_spec) -> None:
    small = compiled(bilevel_spec, "train.steps=10").estimate.memory_bytes
    large = compiled(bilevel_spec, "train.steps=100").estimate.memory_bytes
    ckpt = compiled(bilevel_spec, "train.steps=100", "optimize.hypergradient={kind: unrolled, checkpoint_every: 10}")
    implicit = compiled(bilevel_spec, "train.steps=100", "optimize.hypergradient={kind: implicit}")
    assert large > 5 * small > 0
    assert implicit.estimate.memory_bytes < ckpt.estimate.memory_bytes < large
    huge = compiled(bilevel_spec, "train.steps=1000000", "model.width=512", "synthetic.per_class=100")
    warning = [n for n in huge.notes if n.code == "MEMORY_EXCEEDS_DEVICE"]
    assert warning and "implicit" in warning[0].fix and "checkpoint_every" in warning[0].fix
    assert "MEMORY_EXCEEDS_DEVICE" in huge.explain()
    assert not [n for n in compiled(bilevel_spec).notes if n.code == "MEMORY_EXCEEDS_DEVICE"]


@pytest.mark.parametrize(("overrides", "code"), [
    (["optimize.hypergradient={kind: unrolled, engine: higher, checkpoint_every: 2}"], "CHECKPOINT_NEEDS_TORCH_FUNC"),
    (["optimize.hypergradient={kind: unrolled, truncate: 3}"], "TRUNCATE_NOT_BELOW_STEPS"),
    (["optimize.hypergradient={kind: implicit}", "train.learn_lr=true"], "LR_NOT_LEARNABLE"),
    (["distance={kind: kl}"], "DISTANCE_NEEDS_TASK"),
    (["task={kind: predictions}", "distance={kind: mmd}"], "TASK_DISTANCE_MISMATCH"),
    (["task=null", "distance={kind: trajectory, expert_epochs: 3, max_start_epoch: 2}"], "TRAJECTORY_SPAN"),
    (["task=null", "distance={kind: trajectory}", "optimize.hypergradient={kind: implicit}"],
     "TRAJECTORY_NEEDS_UNROLL"),
    (["optimize.hypergradient={kind: ridge_head}", "train.learn_lr=true"], "LR_NOT_LEARNABLE"),
    (["task=null", "distance={kind: trajectory}", "optimize.hypergradient={kind: ridge_head}"],
     "TRAJECTORY_NEEDS_UNROLL"),
    (["task=null", "distance={kind: feature_mean}", "train.learn_lr=true"], "LR_NOT_LEARNABLE"),
])
def test_ill_posed_bilevel_specs_are_refused_with_a_fix(bilevel_spec, overrides, code) -> None:
    with pytest.raises(WellPosednessError) as err:
        compiled(bilevel_spec, *overrides)
    finding = next(f for f in err.value.findings if f.code == code)
    assert finding.fix and finding.path


def test_hypergradient_kinds_carry_their_facts() -> None:
    """Tracked steps (memory) and FLOPs per scenario by hand, and the capabilities other code reads."""
    assert UnrolledHypergradient().tracked_steps(10)[0] == 10
    assert UnrolledHypergradient(truncate=6).tracked_steps(10)[0] == 6
    assert UnrolledHypergradient(truncate=6, checkpoint_every=4).tracked_steps(10)[0] == 2 + 4  # ⌈6/4⌉ + 4
    assert ImplicitHypergradient().tracked_steps(10)[0] == RidgeHeadHypergradient().tracked_steps(10)[0] == 1
    # K = 10 steps of 1 FLOP, outer loss 5
    assert UnrolledHypergradient().scenario_flops(10, 1.0, 5.0) == 10 * 2 + 5
    assert UnrolledHypergradient(checkpoint_every=2).scenario_flops(10, 1.0, 5.0) == 10 * 2 * 2 + 5
    assert ImplicitHypergradient(iterations=3).scenario_flops(10, 1.0, 5.0) == 10 + 5 + 3 * 2 * 2
    assert RidgeHeadHypergradient().scenario_flops(10, 1.0, 5.0) == 11 + 5
    assert HYPERGRADIENTS.kinds() == ["unrolled", "implicit", "ridge_head"]
    assert HYPERGRADIENTS["unrolled"].capabilities == {"unrolls", "differentiates_lr"}
    assert not HYPERGRADIENTS["implicit"].capabilities and not HYPERGRADIENTS["ridge_head"].capabilities


def test_risks_by_hand() -> None:
    losses = torch.tensor([1.0, 4.0, 2.0], requires_grad=True)
    assert float(mean(MeanRisk())(losses).detach()) == pytest.approx(7 / 3)
    top = worst(MaxRisk())(losses)
    assert float(top.detach()) == 4.0
    assert torch.autograd.grad(top, losses)[0].tolist() == [0.0, 1.0, 0.0]


def run(spec: dict, out, *overrides: str):
    return ddspec.compile(ddspec.load(spec, list(overrides))).run(out)


def test_test_error_run_learns_labels_and_lrs_and_is_deterministic(bilevel_spec, tmp_path) -> None:
    overrides = ("synthetic.learn_labels=true", "train.learn_lr=true")
    a = run(bilevel_spec, tmp_path / "a", *overrides)
    b = run(bilevel_spec, tmp_path / "b", *overrides)
    tensors = load_file(str(tmp_path / "a" / "distilled.safetensors"))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert tensors["y"].shape == (20, 10) and torch.allclose(tensors["y"].sum(1), torch.ones(20))
    assert tensors["lr"].shape == (3,) and not torch.allclose(tensors["lr"], torch.full((3,), 0.05))
    init = run(bilevel_spec, tmp_path / "init", "optimize.iterations=1", *overrides)
    assert not torch.equal(init.x, a.x)  # the inputs moved
    assert 0.0 <= a.metrics["accuracy"]["mean"] <= 1.0


def test_engines_and_checkpointing_give_the_same_run(bilevel_spec, tmp_path) -> None:
    runs = {
        name: run(bilevel_spec, tmp_path / name, f"optimize.hypergradient={hyper}", "runtime.seed=3").x
        for name, hyper in [("func", "{kind: unrolled}"), ("higher", "{kind: unrolled, engine: higher}"),
                            ("ckpt", "{kind: unrolled, checkpoint_every: 2}")]
    }
    assert torch.allclose(runs["func"], runs["higher"], atol=1e-5)
    assert torch.allclose(runs["func"], runs["ckpt"], atol=1e-5)


def test_implicit_and_max_risk_over_architectures(bilevel_spec, tmp_path) -> None:
    result = run(bilevel_spec, tmp_path / "i", "optimize.hypergradient={kind: implicit, iterations: 5, damping: 0.1}",
                 "risk={kind: max}", "scenarios.inits=2",
                 "scenarios.models=[{kind: convnet, width: 8, depth: 2}, {kind: mlp, hidden: [16]}]")
    assert torch.isfinite(result.x).all()
    rows = json.loads((tmp_path / "i" / "history.json").read_text())["rows"]
    assert len(rows) == 3 and all(r["loss"] > 0 for r in rows)


def test_ridge_head_run_with_a_pool_learns_labels_and_is_deterministic(bilevel_spec, tmp_path) -> None:
    overrides = ("optimize.hypergradient={kind: ridge_head}", "synthetic.learn_labels=true",
                 "scenarios.pool={size: 2, max_steps: 7}", "optimize.iterations=4")
    a = run(bilevel_spec, tmp_path / "a", *overrides)
    b = run(bilevel_spec, tmp_path / "b", *overrides)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    init = run(bilevel_spec, tmp_path / "init", *overrides[:3], "optimize.iterations=1")
    assert not torch.equal(init.x, a.x) and not torch.equal(init.y, a.y)


def test_predictions_task_trains_and_caches_a_teacher(bilevel_spec, tmp_path) -> None:
    spec = dict(bilevel_spec, task={"kind": "predictions", "teacher_epochs": 2})
    plan = ddspec.compile(ddspec.load(spec))
    assert plan.problem.distance.kind == "kl" and "distance" in plan.defaults
    plan.run(tmp_path / "p")
    assert (tmp_path / "p" / TEACHER).exists()
    history = json.loads((tmp_path / "p" / "history.json").read_text())
    assert history["prepare_seconds"] > 0 and history["distill_seconds"] >= history["prepare_seconds"]


def test_trajectory_matching_trains_and_caches_experts(bilevel_spec, tmp_path) -> None:
    spec = dict(bilevel_spec, task=None, distance={
        "kind": "trajectory", "experts": 2, "expert_epochs": 3, "max_start_epoch": 1, "expert_span": 2,
    })
    plan = ddspec.compile(ddspec.load(spec, ["synthetic.learn_labels=false", "train.learn_lr=true",
                                             "train.momentum=0"]))
    assert plan.backend == "bilevel" and "trajectory matching" in plan.reason
    result = plan.run(tmp_path / "t")
    experts = load_file(str(tmp_path / "t" / EXPERTS))
    assert len({k.split(".")[0] for k in experts}) == 2 and len({k.split(".")[1] for k in experts}) == 4
    rows = json.loads((tmp_path / "t" / "history.json").read_text())["rows"]
    assert all(0 < r["loss"] < 10 for r in rows)  # normalized distance: ~1 at the start
    assert result.x.shape == (20, 1, 8, 8)


def test_cvar_over_scenarios_runs(bilevel_spec, tmp_path) -> None:
    result = run(bilevel_spec, tmp_path / "c", "risk={kind: cvar, alpha: 0.5}", "scenarios.inits=4")
    assert torch.isfinite(result.x).all()
    assert "risk cvar" in compiled(bilevel_spec, "risk={kind: cvar, alpha: 0.5}").explain()


@pytest.mark.parametrize("groups", [
    "{kind: nearest_synthetic, space: input}", "{kind: nearest_synthetic, space: embedding}", "{kind: kmeans, k: 2}",
])
def test_group_cvar_in_the_outer_loss(bilevel_spec, tmp_path, groups) -> None:
    """Level 2 of the robust formulation: the real batch's losses are aggregated by group-CVaR."""
    risk = f"risk={{kind: group_cvar, alpha: 0.5, groups: {groups}}}"
    plan = compiled(bilevel_spec, risk)
    assert plan.backend == "bilevel" and "group-CVaR over groups of the real batch" in plan.reason
    mean_run = run(bilevel_spec, tmp_path / "m")
    robust = plan.run(tmp_path / "g")
    assert torch.isfinite(robust.x).all() and not torch.equal(robust.x, mean_run.x)
    rows = json.loads((tmp_path / "g" / "history.json").read_text())["rows"]
    mean_rows = json.loads((tmp_path / "m" / "history.json").read_text())["rows"]
    assert rows[0]["loss"] > mean_rows[0]["loss"]  # mean + max over groups + CE exceeds the plain mean


@pytest.mark.parametrize("groups", ["{kind: nearest_synthetic, space: input}", "{kind: kmeans, k: 2}"])
def test_group_cvar_real_batch_comes_from_the_classes_with_synthetic_rows(bilevel_spec, tmp_path, groups) -> None:
    """synthetic.total: 5 leaves 5 of digits' 10 classes without synthetic rows; a grouped risk's real batch is then
    drawn from the 5 others only (nearest_synthetic could not group the rest), as matching does. Before, the run
    ended in an internal error (class 5 has real samples but no synthetic points)."""
    from ddspec.backends.bilevel.run import Learned
    from ddspec.components.objectives.risks import group_cvar_risk
    from ddspec.components.objectives.scenarios import Objective
    from ddspec.runtime.context import RunContext

    overrides = ("synthetic={total: 5}", f"risk={{kind: group_cvar, alpha: 0.5, groups: {groups}}}")
    result = run(bilevel_spec, tmp_path / "g", *overrides)
    assert torch.isfinite(result.x).all() and result.y.tolist() == [0, 1, 2, 3, 4]
    rows = json.loads((tmp_path / "g" / "history.json").read_text())["rows"]
    assert len(rows) == 3 and all(r["loss"] > 0 for r in rows)

    plan = compiled(bilevel_spec, *overrides)
    ctx = RunContext(plan.problem, plan.analysis, DATA.build(plan.problem.data), torch.device("cpu"), tmp_path / "c",
                     generator=torch.Generator().manual_seed(0))
    learned = Learned.create(ctx)
    objective = Objective(ctx, group_cvar_risk(plan.problem.risk), learned.synthetic.strata)
    drawn = ctx.data.y_train[objective.real_rows()]
    assert sorted(set(drawn.tolist())) == [0, 1, 2, 3, 4] and len(drawn) == 5 * 8


def test_grouped_real_batch_draws_what_the_mean_draws_when_every_class_has_synthetic_rows(bilevel_spec,
                                                                                          tmp_path) -> None:
    """Every class with synthetic rows (every example): the grouped real batch is ctx.real_batch's, draw for draw."""
    from ddspec.backends.bilevel.run import Learned
    from ddspec.components.objectives.risks import group_cvar_risk
    from ddspec.components.objectives.scenarios import Objective
    from ddspec.runtime.context import RunContext

    plan = compiled(bilevel_spec, "risk={kind: group_cvar, groups: {kind: nearest_synthetic}}")
    rows = []
    for grouped in (True, False):
        ctx = RunContext(plan.problem, plan.analysis, DATA.build(plan.problem.data), torch.device("cpu"), tmp_path,
                         generator=torch.Generator().manual_seed(0))
        learned = Learned.create(ctx)
        if grouped:
            rows.append(Objective(ctx, group_cvar_risk(plan.problem.risk), learned.synthetic.strata).real_rows())
        else:
            rows.append(ctx.real_batch(plan.problem.optimize.real_batch_per_class))
    assert torch.equal(rows[0], rows[1])


def test_group_cvar_with_attribute_groups_on_digits_shift(bilevel_spec, tmp_path) -> None:
    result = run(bilevel_spec, tmp_path / "a", "data={kind: digits_shift}",
                 "risk={kind: group_cvar, groups: {kind: attribute}}")
    assert torch.isfinite(result.x).all()


def test_unit_norm_by_hand() -> None:
    g = unit_norm([torch.tensor([3.0]), torch.tensor([[0.0, 4.0]])])
    assert torch.allclose(g[0], torch.tensor([0.6])) and torch.allclose(g[1], torch.tensor([[0.0, 0.8]]))
    assert torch.equal(unit_norm([torch.zeros(2)])[0], torch.zeros(2))


def test_normalized_hypergradient_moves_each_step_by_the_lr(bilevel_spec, tmp_path) -> None:
    """Plain SGD on z with x = μ + σz and one scenario: dL/dz = σ ĝ with ‖ĝ‖ = 1, so every outer step moves x
    by exactly lr·σ² (σ: the data's one channel std)."""
    overrides = ("optimize.hypergradient={kind: unrolled, normalize: true}", "optimize.optimizer=sgd",
                 "optimize.momentum=0", "optimize.lr=0.5")
    one = run(bilevel_spec, tmp_path / "one", "optimize.iterations=1", *overrides).x
    two = run(bilevel_spec, tmp_path / "two", "optimize.iterations=2", *overrides).x
    sigma = float(channel_stats(DATA.build(ddspec.load(bilevel_spec).data).x_train)[1])
    assert float((two - one).norm()) == pytest.approx(0.5 * sigma**2, rel=1e-5)
    plain = run(bilevel_spec, tmp_path / "plain", "optimize.iterations=2", *overrides[1:]).x
    assert not torch.allclose(plain, two)
