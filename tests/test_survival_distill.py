"""The survival case study end to end: kinds, findings, the analyses' distances, the zero-order distillation and
the smoke run of the example."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ddspec
from ddspec.components.survival.analyses import build_analyses
from ddspec.components.survival.data import Table
from ddspec.registry import DATA
from ddspec.spec.survival import (
    BnConditionalsAnalysis,
    ConcordanceMetric,
    CoxCoefficientsAnalysis,
    CoxTrain,
    SurvivalAnalysesTask,
    SurvivalCurveAnalysis,
    SurvivalData,
)
from ddspec.testing import NotWellPosed, assert_well_posed, check_determinism, check_kind, check_resume, run_smoke

EXAMPLE = Path(__file__).parent.parent / "examples" / "gbsg2_survival.yaml"


def spec(**changes: object) -> dict:
    """The example as a mapping, with top-level sections replaced."""
    import yaml

    return {**yaml.safe_load(EXAMPLE.read_text()), **changes}


@pytest.mark.parametrize("kind", [SurvivalData, CoxTrain, SurvivalAnalysesTask, ConcordanceMetric,
                                  SurvivalCurveAnalysis, CoxCoefficientsAnalysis, BnConditionalsAnalysis])
def test_kinds_pass_the_generic_checks(kind):
    check_kind(kind)


def test_the_example_is_well_posed_and_lowers_to_the_survival_backend():
    plan = assert_well_posed(EXAMPLE)
    assert plan.backend == "survival"


@pytest.mark.parametrize("changes, codes", [
    ({"optimize": {"kind": "gradient"}}, {"NOT_DIFFERENTIABLE"}),
    ({"task": {"kind": "survival_analyses", "analyses": [{"kind": "survival_curve", "strata": ["grade"]}]}},
     {"UNKNOWN_COLUMN"}),
    ({"task": {"kind": "survival_analyses", "analyses": [{"kind": "cox_coefficients", "source": "C"}]}},
     {"UNKNOWN_SOURCE"}),
    ({"task": {"kind": "survival_analyses", "analyses": [{"kind": "bn_conditionals", "evidence": [["age", "x"]]}]}},
     {"UNKNOWN_COLUMN"}),
    ({"distance": {"kind": "kl"}}, {"ANALYSIS_DISTANCES", "DISTANCE_NEEDS_TASK"}),
    ({"evaluate": {"baselines": ["random"]}}, {"SURVIVAL_BASELINES"}),
    ({"data": {"kind": "survival", "sources": [{"name": "A", "columns": ["age", "grade"]}]},
      "task": {"kind": "survival_analyses", "analyses": [{"kind": "survival_curve"}]}}, {"UNKNOWN_COLUMN"}),
    ({"data": {"kind": "survival", "sources": [{"name": "A", "columns": ["age", "tsize"]},
                                               {"name": "B", "columns": ["age", "tsize"]}]},
      "task": {"kind": "survival_analyses", "analyses": [{"kind": "survival_curve"}]}}, {"SOURCE_SEES_ALL"}),
])
def test_bad_specs_get_findings_with_paths_and_fixes(changes, codes):
    assert_well_posed(spec(**changes), expect=codes)


def test_survival_parts_on_other_data_are_refused():
    found = {"TASK_NEEDS_SURVIVAL", "COX_NEEDS_SURVIVAL"}
    with pytest.raises(NotWellPosed) as err:
        assert_well_posed(spec(data={"kind": "digits"}))
    assert found <= set(err.value.codes)


def one_source(**analyses: object) -> tuple[object, object]:
    """GBSG2 as one source with every column, and the example's analyses on it."""
    problem = ddspec.load(spec(data={"kind": "survival", "sources": [
        {"name": "all", "columns": ["age", "menostat", "tsize", "horTh", "tgrade", "pnodes", "progrec", "estrec"]}]},
        task={"kind": "survival_analyses", "analyses": [
            {"kind": "survival_curve"}, {"kind": "survival_curve", "strata": ["horTh"]}, {"kind": "cox_coefficients"},
            {"kind": "bn_conditionals", "evidence": [["tgrade"], ["tgrade", "progrec"]]}]}))
    data = DATA.build(problem.data)
    return build_analyses(problem.task, data, problem), data


def test_the_real_data_itself_is_at_zero_distance():
    analyses, data = one_source()
    distances = analyses.distances(data.train_table())
    np.testing.assert_allclose(distances, 0.0, atol=1e-12)


def test_a_table_that_only_fits_the_cox_loss_is_far_from_the_other_analyses():
    """Times x 3 keep every risk set, so the partial likelihood and its fit are unchanged (the Cox distance stays 0),
    while the Kaplan–Meier curves and P(event by τ) move far."""
    analyses, data = one_source()
    train = data.train_table()
    distances = dict(zip(analyses.names, analyses.distances(Table(train.x, 3 * train.time, train.event))))
    assert distances["cox_coefficients[all]"] < 1e-6
    assert distances["survival_curve[all]"] > 0.3
    assert distances["bn_conditionals[tgrade]"] > 0.1


def test_zero_order_reaches_zero_distance_on_an_exactly_achievable_problem(tmp_path):
    """Twelve training patients with event times 1, 2 or 3, each time an even number of times (the split's seed is
    chosen so), and n̂ = 6: half of each group matches the Kaplan–Meier curve exactly on the grid {1, 2, 3}; the
    start (6 random patients) does not."""
    rng = np.random.default_rng(0)
    csv = tmp_path / "tiny.csv"
    csv.write_text("\n".join(["age,time,event"] + [f"{rng.normal(50, 10):.1f},{1 + i % 3},1" for i in range(24)]))
    data = {"kind": "survival", "dataset": "csv", "path": str(csv), "test_fraction": 0.5,
            "sources": [{"name": "all", "columns": ["age"]}]}
    data["seed"] = next(seed for seed in range(200) if not np.any(np.bincount(
        DATA.build(SurvivalData(**{**data, "seed": seed})).y_train[:, 0].int().numpy()) % 2))
    problem = {
        "name": "tiny", "data": data, "synthetic": {"total": 6}, "train": {"kind": "cox"},
        "task": {"kind": "survival_analyses", "analyses": [{"kind": "survival_curve", "points": 3, "horizon": 1.0}]},
        "optimize": {"kind": "zero_order", "samples": 16, "sigma": 0.3, "optimizer": "adam", "lr": 0.1,
                     "lr_schedule": "constant", "iterations": 60},
        "evaluate": {"baselines": [], "seeds": [0]}, "runtime": {"progress": False, "seed": 0},
    }

    result = ddspec.compile(ddspec.load(problem)).run(tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())["rows"]
    assert history[0]["loss"] > 0.0  # the objective at the start
    assert result.metrics["survival"]["distilled"]["analyses"]["survival_curve[all]"] == 0.0


def test_the_example_runs_at_smoke_size(tmp_path):
    result = run_smoke(EXAMPLE, tmp_path)
    survival = result.metrics["survival"]
    assert 0.0 <= result.metrics["c_index"]["mean"] <= 1.0
    assert set(survival["baselines"]) == {"random_em", "random_mice", "em_full", "mice_full", "sources", "oracle"}
    assert survival["baselines"]["oracle"]["cox_error"] == 0.0


def test_lifelines_as_a_black_box_fit_gives_the_same_analyses():
    """``train.solver: lifelines`` fits every Cox model with lifelines' CoxPHFitter; unpenalized it agrees with
    ddspec's Newton fit, so the Cox distances of a table agree too."""
    problem = ddspec.load(spec(train={"kind": "cox", "penalizer": 0.0, "solver": "lifelines"},
                               task={"kind": "survival_analyses", "analyses": [{"kind": "cox_coefficients"}]}))
    data = DATA.build(problem.data)
    newton = build_analyses(problem.task, data, problem.model_copy(update={"train": CoxTrain(penalizer=0.0)}))
    library = build_analyses(problem.task, data, problem)
    table = data.oracle_table().rows(np.arange(120))
    assert library.distances(table).min() > 0.05
    # not to 1e-4: lifelines breaks GBSG2's tied times by Efron's rule, Newton by Breslow's
    np.testing.assert_allclose(library.distances(table), newton.distances(table), atol=1e-3)


@pytest.mark.slow
def test_the_example_is_deterministic_and_resumes_bit_for_bit():
    check_determinism(EXAMPLE)
    check_resume(EXAMPLE)


@pytest.mark.parametrize("n", [1, 7, 50, 120])
def test_the_random_baselines_subsample_each_source_in_proportion(n):
    """per_source_draw: distinct patients, Σ n_s = n, each n_s within 1 of n N_s / N (hand-computed for 7 of 60/30/10)."""
    from ddspec.evaluate.survival import per_source_draw

    source_of = np.repeat([0, 1, 2], [60, 30, 10])
    picked = per_source_draw(source_of, n, np.random.default_rng(0))
    taken = np.bincount(source_of[picked], minlength=3)
    assert len(set(picked.tolist())) == len(picked) == min(n, 100)
    assert np.all(np.abs(taken - min(n, 100) * np.array([0.6, 0.3, 0.1])) < 1)
    if n == 7:
        assert taken.tolist() == [4, 2, 1]  # 4.2, 2.1, 0.7: floors 4, 2, 0, the one left to the largest remainder
