"""The krr backend end to end: compiler choice, exact constructions on digits (W_S = W in float64),
the theory's refusals as spec errors, KIP, and the weight metrics."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

import ddspec
from ddspec.cli import main
from ddspec.errors import WellPosednessError

EXACT = 1e-10



def run(spec: dict, out, *overrides: str):
    return ddspec.compile(ddspec.load(spec, list(overrides))).run(out)


def test_compiler_picks_krr_and_explains_the_closed_form(krr_spec) -> None:
    plan = ddspec.compile(ddspec.load(krr_spec))
    assert plan.backend == "krr" and "W_S = W exactly" in plan.reason
    text = plan.explain()
    assert "closed form" in text and "not differentiable" in plan.rejected["bilevel"]


@pytest.mark.parametrize("overrides", [
    [],
    ["model.features={kind: rff, features: 48, bandwidth: 4}"],
    ["model.features={kind: leaky_relu_mlp, widths: [48, 32], slope: 0.2}"],
    ["train.lam_synthetic=1e-4"],
    ["optimize.labels=model"],
    ["synthetic.init=noise"],
    ["synthetic.per_class=3", "model.features={kind: rff, features: 32}", "train.lam_synthetic=1e-3"],
])
def test_exact_constructions_reproduce_the_full_data_model(krr_spec, tmp_path, overrides) -> None:
    result = run(krr_spec, tmp_path / "r", *overrides)
    m = result.metrics
    assert m["w_rel_error"] <= EXACT
    assert m["agreement"] == 1.0
    assert m["accuracy"]["mean"] == pytest.approx(m["accuracy_full_model"]) and m["accuracy_full_model"] > 0.7
    tensors = load_file(str(tmp_path / "r" / "distilled.safetensors"))
    assert tensors["x"].dtype == torch.float64 and tensors["x"].shape[1:] == (1, 8, 8)


def test_label_only_keeps_real_inputs(krr_spec, tmp_path) -> None:
    """breast_cancer (d = 30): 2 x 20 real points have features of rank 30, so labels alone reproduce W."""
    krr_spec["data"] = {"kind": "tabular", "name": "breast_cancer"}
    result = run(krr_spec, tmp_path / "l", "synthetic.per_class=20", "optimize.label_only=true")
    assert result.metrics["w_rel_error"] <= EXACT
    x = load_file(str(tmp_path / "l" / "distilled.safetensors"))["x"]
    real = ddspec.registry.DATA.build(ddspec.load(krr_spec).data).x_train.double()
    assert float(torch.cdist(x, real).min(1).values.max()) < 1e-6  # every synthetic input is a real input


def test_label_only_on_rank_deficient_features_says_why(krr_spec, tmp_path) -> None:
    """digits pixels that are always 0 leave 30 x 10 real points short of rank 64."""
    with pytest.raises(ddspec.errors.SpecError) as err:
        run(krr_spec, tmp_path / "d", "synthetic.per_class=30", "optimize.label_only=true")
    assert err.value.findings[0].code == "KRR_INFEASIBLE" and "rank" in err.value.findings[0].message


@pytest.mark.parametrize(("overrides", "code"), [
    (["model.features={kind: rff, features: 100}"], "KRR_NOT_SURJECTIVE"),
    (["model.features={kind: leaky_relu_mlp, widths: [32, 48]}"], "KRR_NOT_SURJECTIVE"),
    (["synthetic={total: 5}"], "KRR_TOO_FEW_POINTS"),
    (["synthetic.per_class=2", "optimize.label_only=true"], "KRR_LABEL_ONLY_TOO_FEW"),
])
def test_the_theorys_refusals_are_spec_errors(krr_spec, overrides, code) -> None:
    with pytest.raises(WellPosednessError) as err:
        ddspec.compile(ddspec.load(krr_spec, overrides))
    finding = next(f for f in err.value.findings if f.code == code)
    assert finding.fix


def test_lambda_above_the_bound_exits_2_with_the_bound(krr_spec, tmp_path, capsys) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(krr_spec))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--set", "train.lam_synthetic=10"]) == 2
    err = capsys.readouterr().err
    assert "[KRR_INFEASIBLE]" in err and "exceeds the bound" in err and "Traceback" not in err


def test_kip_baseline_lowers_its_loss_and_is_not_exact(krr_spec, tmp_path) -> None:
    result = run(krr_spec, tmp_path / "k", "optimize={kind: gradient, iterations: 30, real_batch_per_class: 32}",
                 "task={kind: test_error}", "train.lam_synthetic=1e-3")
    rows = json.loads((tmp_path / "k" / "history.json").read_text())["rows"]
    first, last = sum(r["loss"] for r in rows[:5]) / 5, sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first
    assert 0.0 <= result.metrics["accuracy"]["mean"] <= 1.0 and result.metrics["w_rel_error"] > 1e-3
