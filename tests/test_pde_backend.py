"""The PDE case study through the spec: data ``pde``, the collocation backend (learned points and samplers), the
relL2 evaluation and its report, checked end to end on tiny problems and against hand-computed figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ddspec
from ddspec.cli import main
from ddspec.components.pde.data import held_out, in_data_box
from ddspec.errors import BackendUnavailableError, WellPosednessError
from ddspec.evaluate.pde import RelativeL2
from ddspec.registry import DATA
from ddspec.runtime import artifacts as art
from ddspec.spec.pde import RelativeL2Metric
from ddspec.testing import check_determinism, check_hypergradient, check_resume

TINY = {
    "name": "pde-tiny",
    "data": {"kind": "pde", "problem": {"kind": "laplace_square"}, "train_bcs": 4, "test_bcs": 6, "grid": 9},
    "synthetic": {"total": 24, "init": "sobol"},
    "model": {"kind": "pinn_mlp", "width": 8, "depth": 2},
    "train": {"kind": "residual", "features": 32},
    "task": {"kind": "pde_solution", "physics_bcs": 2, "physics_grid": 5},
    "optimize": {"kind": "gradient", "iterations": 4},
    "evaluate": {"seeds": [0], "epochs": 20, "optimizer": "adam", "lr": 0.001},
    "runtime": {"progress": False, "checkpoint_every": 2, "threads": 1},
}


def tiny(**changes: object) -> dict:
    spec = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        spec[key] = value
    return spec


@pytest.mark.parametrize("problem", ["laplace_square", "heat_1d"])
def test_data_holds_the_exact_fields_of_bcs_drawn_from_their_regions(problem: str) -> None:
    spec = ddspec.load(tiny(data={**TINY["data"], "problem": {"kind": problem}})).data
    data = DATA.build(spec)
    cells = 9 ** 2
    assert data.x_train.shape == (4 * cells, 5) and data.x_test.shape == (12 * cells, 5)
    z, a = data.x_train[:, :2], data.x_train[:, 2:]
    assert torch.allclose(data.y_train, data.physics.exact(z, a), rtol=0, atol=0)
    assert in_data_box(data.bcs_train.numpy(), spec.problem).all()
    bcs, out = data.bcs_test.numpy(), data.test_out.numpy()
    assert in_data_box(bcs[~out], spec.problem).all() and held_out(bcs[out], spec.problem).all()
    assert not in_data_box(bcs[out], spec.problem).any()
    assert torch.equal(data.groups_test, torch.arange(12).repeat_interleave(cells))
    again = DATA.build(spec)
    assert torch.equal(again.x_test, data.x_test)  # the BC draws are seeded


def test_held_out_region_by_hand() -> None:
    spec = ddspec.load(TINY).data.problem  # A_in = [-1,1]^2 x [-0.2,0.2], box [-1.5,1.5]
    a = np.array([[0.0, 0.0, 0.7], [0.0, 0.0, 0.3], [1.2, 0.0, 0.0], [0.5, 0.5, 0.1], [0.0, 0.0, 1.2]])
    assert held_out(a, spec).tolist() == [True, False, True, False, True]
    assert in_data_box(a, spec).tolist() == [False, False, False, True, False]


def test_explain_picks_collocation_and_other_backends_say_why_not(capsys) -> None:
    plan = ddspec.compile(ddspec.load(TINY))
    assert plan.backend == "collocation"
    assert "closed-form random-feature PINN" in plan.reason
    for name in ("bilevel", "krr", "convex", "matching", "coreset", "zero_order"):
        assert plan.rejected[name]
    assert "risk mean over the data's 4 BCs and 2 physics-only BC(s)" in plan.explain()
    select = ddspec.compile(ddspec.load(tiny(optimize={"kind": "select", "method": "sobol"})))
    assert select.backend == "collocation" and "draw points in the data's domain (sobol)" in select.explain()


def test_findings_for_misdeclared_pde_problems() -> None:
    with pytest.raises(WellPosednessError) as err:
        ddspec.compile(ddspec.load({"data": {"kind": "digits"}, "optimize": {"kind": "select", "method": "sobol"}}))
    assert "SAMPLER_NEEDS_DOMAIN" in {f.code for f in err.value.findings}
    with pytest.raises(WellPosednessError) as err:
        ddspec.compile(ddspec.load({"data": {"kind": "digits"}, "task": {"kind": "pde_solution"},
                                    "model": {"kind": "mlp"}}))
    assert "TASK_NEEDS_PDE" in {f.code for f in err.value.findings}
    with pytest.raises(WellPosednessError) as err:
        ddspec.compile(ddspec.load(tiny(synthetic={"total": 24, "learn_labels": True})))
    assert "LABELS_NOT_LEARNABLE" in {f.code for f in err.value.findings}
    with pytest.raises(BackendUnavailableError, match="herding"):
        ddspec.compile(ddspec.load(tiny(optimize={"kind": "select", "method": "herding"}, backend="collocation")))


def test_relative_l2_metric_by_hand() -> None:
    data = DATA.build(ddspec.load(TINY).data)
    fields = data.y_test.reshape(12, -1)
    scale = torch.linspace(0.0, 1.1, 12, dtype=torch.float64)  # BC b predicted as (1 + s_b) u_b: relL2 = s_b
    outputs = (fields * (1 + scale[:, None])).reshape(-1, 1)
    metric = RelativeL2(RelativeL2Metric())
    scored = metric.scored(outputs, data)
    assert scored.value == pytest.approx(float(scale.mean()), rel=1e-12)
    assert scored.figures["in"]["mean"] == pytest.approx(float(scale[:6].mean()), rel=1e-12)
    assert scored.figures["out"]["q90"] == pytest.approx(float(torch.quantile(scale[6:], 0.9)), rel=1e-12)
    assert scored.details["worst_bc"] == 11
    assert scored.details["per_bc"] == pytest.approx(scale.tolist(), rel=1e-12, abs=1e-15)


def test_learned_points_run_end_to_end(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps(TINY))
    out = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    tensors = art.load_distilled(out / art.DISTILLED)
    x, y = tensors["x"], tensors["y"]
    assert x.shape == (24, 5) and y.shape == (24, 0) and x.dtype == torch.float64
    low, high = torch.tensor([0, 0, -1.5, -1.5, -1.5]), torch.tensor([1, 1, 1.5, 1.5, 1.5])
    assert bool(((x >= low - 1e-12) & (x <= high + 1e-12)).all())
    metrics = json.loads((out / art.METRICS).read_text())
    entry = metrics["relative_l2"]
    assert set(entry["in"]) == set(entry["out"]) == {"mean", "q90"}
    assert len(entry["per_bc"][0]) == 12 and np.isfinite(entry["mean"])
    rows = json.loads((out / art.HISTORY).read_text())["rows"]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert {"loss", "data_rel_l2", "physics_residual"} <= set(rows[0])
    assert {"samples.png", "field_errors.png", "worst_field.png", "loss.png"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("method", ["uniform", "lhs", "sobol", "halton", "rad", "random"])
def test_samplers_run_through_the_spec(method: str, tmp_path: Path) -> None:
    select = {"kind": "select", "method": method, "resample_every": 5, "pool": 64}
    result = ddspec.compile(ddspec.load(tiny(optimize=select))).run(tmp_path / method)
    assert result.x.shape == (24, 5) and result.y.shape == (24, 0)
    again = ddspec.compile(ddspec.load(tiny(optimize=select))).run(tmp_path / f"{method}-again")
    assert torch.equal(result.x, again.x)


def test_hypergradient_of_the_points_matches_finite_differences() -> None:
    report = check_hypergradient(TINY, rtol=1e-5)
    assert report.backend == "collocation" and report.relative_error < 1e-5 and report.coordinates > 0


def test_runs_are_deterministic_and_resume_bit_for_bit() -> None:
    check_determinism(TINY)
    check_resume(TINY)
