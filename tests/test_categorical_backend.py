"""Categorical distillation end to end: the kinds' generic checks, clear findings for bad specs, the route ``explain``
names, smoke runs of the examples (the integer program and the relaxation), a CSV source, and the returned table
never worse than the best random subsample it was compared with."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ddspec
from ddspec.components.categorical.objective import TableObjective
from ddspec.components.categorical.statistics import Statistics
from ddspec.errors import RunError, SpecError
from ddspec.runtime import artifacts as art
from ddspec.spec import categorical as cat
from ddspec.testing import assert_well_posed, check_determinism, check_kind, check_resume, run_smoke
from ddspec.testing.wellposed import findings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KINDS = [cat.BayesNetData, cat.CategoricalCsvData, cat.NaiveBayesModel, cat.LogisticOnehotModel,
         cat.DecisionTreeModel, cat.MarginalsTask, cat.SufficientStatisticsTask, cat.L1Distance, cat.TvDistance,
         cat.MilpOptimize]


def spec(**sections: Any) -> dict[str, Any]:
    """A small Asia problem with ``sections`` replaced."""
    base: dict[str, Any] = {
        "name": "asia-test", "data": {"kind": "bayes_net", "n_train": 3000, "n_test": 600},
        "synthetic": {"total": 16}, "model": {"kind": "naive_bayes"}, "task": {"kind": "marginals", "ways": [1, 2]},
        "optimize": {"kind": "milp", "max_nodes": 500, "subsamples": 5},
        "evaluate": {"seeds": [0], "models": [{"kind": "naive_bayes"}], "metrics": ["accuracy"]},
        "runtime": {"progress": False},
    }
    return {**base, **sections}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_kinds_pass_the_generic_checks(kind: type) -> None:
    check_kind(kind)


@pytest.mark.parametrize(("sections", "code", "path"), [
    ({"data": {"kind": "digits"}, "model": {"kind": "mlp"}, "task": None}, "MILP_NEEDS_CATEGORICAL", "optimize"),
    ({"task": {"kind": "marginals", "ways": [1, 9]}}, "TASK_WAYS_TOO_LARGE", "task.ways"),
    ({"task": {"kind": "marginals", "attributes": ["smoke", "cancer"]}}, "UNKNOWN_ATTRIBUTE", "task.attributes"),
    ({"synthetic": {"per_class": 8}}, "MILP_NEEDS_TOTAL", "synthetic.per_class"),
    ({"synthetic": {"total": 16, "learn_labels": True}}, "LABELS_NOT_LEARNABLE", "synthetic.learn_labels"),
    ({"model": {"kind": "mlp"}}, "MODEL_NOT_CATEGORICAL", "model"),
    ({"task": {"kind": "test_error"}}, "MILP_NEEDS_STATISTICS", "task"),
    ({"data": {"kind": "bayes_net", "network": "random", "n_train": 500, "n_test": 100},
      "optimize": {"kind": "milp", "route": "exact"}}, "ROUTE_TOO_LARGE", "optimize.route"),
])
def test_bad_specs_get_clear_findings(sections: dict[str, Any], code: str, path: str) -> None:
    found, plan = findings(spec(**sections))
    assert plan is None
    hits = [f for f in found if f.code == code]
    assert hits and hits[0].path == path and hits[0].fix, [f.render() for f in found]


@pytest.mark.parametrize(("sections", "field"), [({"synthetic": {"total": 0}}, "synthetic.total"),
                                                 ({"data": {"kind": "bayes_net", "label": "cancer"}}, "data.label")])
def test_invalid_sizes_and_labels_are_spec_errors(sections: dict[str, Any], field: str) -> None:
    """m < 1 and an unknown label are refused with the spec path."""
    with pytest.raises(SpecError) as err:
        ddspec.compile(ddspec.load(spec(**sections)))
    assert any(f.path == field for f in err.value.findings), err.value.render()


@pytest.mark.parametrize(("data", "optimize", "route"), [
    ({"kind": "bayes_net"}, {}, "over the full joint domain"),
    ({"kind": "bayes_net", "network": "random", "n_train": 2000, "n_test": 200}, {}, "over the distinct real records"),
    ({"kind": "bayes_net", "network": "random", "n_train": 2000, "n_test": 200}, {"max_candidates": 100},
     "differentiable relaxation"),
])
def test_explain_names_the_route_and_why(data: dict[str, Any], optimize: dict[str, Any], route: str) -> None:
    plan = assert_well_posed(spec(data=data, optimize={"kind": "milp", **optimize}))
    assert plan.backend == "milp" and route in plan.reason and "cells" in plan.reason
    assert route in plan.explain()
    assert plan.problem.distance.kind == "tv"  # the task's default distance, resolved by the backend


def table_objective(out: Path, problem: Any) -> float:
    """The objective of the run's distilled table, recomputed from its artifacts and the real data."""
    from ddspec.components.data import load_dataset

    data = load_dataset(problem.data)
    tensors = art.load_distilled(out / art.DISTILLED)
    marginals = problem.task.marginals(data.attributes, data.attributes[data.label])
    m = len(tensors["x"])
    objective = TableObjective.of(Statistics(data.sizes, tuple(marginals)), data.train_records(), m,
                                  problem.distance.row_weight(m, len(marginals)))
    return objective(data.records(tensors["x"], tensors["y"]))


def test_asia_example_runs_and_returns_the_best_table(tmp_path: Path) -> None:
    """The example at smoke size: the artifact contract, records.csv with category names, and the returned table's
    objective (recomputed from the artifacts) is the best candidate's, no worse than the best random subsample."""
    result = run_smoke(EXAMPLES / "asia_milp.yaml", tmp_path)
    solve = json.loads((tmp_path / art.SOLVE).read_text())
    problem = ddspec.load(tmp_path / art.SPEC)
    assert solve["route"] == "exact" and solve["returned"] in solve["candidates"]
    assert solve["objective"] == min(solve["candidates"].values())
    assert solve["objective"] <= solve["candidates"]["subsample"]
    assert table_objective(tmp_path, problem) == pytest.approx(solve["objective"], abs=1e-12)
    assert 0 <= solve["gap"] < 1e-3 and solve["status"] == "Optimal"
    rows = list(csv.reader((tmp_path / art.RECORDS).open()))
    assert rows[0] == ["asia", "tub", "smoke", "lung", "bronc", "either", "xray", "dysp"]
    assert len(rows) == 1 + 64 and {v for r in rows[1:] for v in r} <= {"yes", "no"}
    marginals = result.metrics["marginals"]
    for part in ("optimized", "held_out"):
        for source in ("distilled", "random", "independent"):
            assert 0 <= marginals[part][source]["mean_tv"] <= marginals[part][source]["max_tv"] <= 1
    assert marginals["optimized"]["distilled"]["mean_tv"] == pytest.approx(solve["objective"])  # tv distance
    assert set(result.metrics["per_model"]) == {"0:naive_bayes", "1:logistic_onehot", "2:decision_tree"}


def test_node_limited_solve_never_returns_worse_than_a_subsample(tmp_path: Path) -> None:
    """A one-node solve without the heuristic on the candidate route still returns the best of what it compared."""
    problem = spec(data={"kind": "bayes_net", "network": "random", "attributes": 6, "levels": [2, 3], "n_train": 800,
                         "n_test": 100},
                   optimize={"kind": "milp", "route": "candidates", "heuristic": False, "max_nodes": 1,
                             "subsamples": 30})
    ddspec.compile(ddspec.load(problem)).run(tmp_path)
    solve = json.loads((tmp_path / art.SOLVE).read_text())
    assert solve["route"] == "candidates" and "heuristic" not in solve["candidates"]
    assert solve["objective"] <= solve["candidates"]["subsample"] + 1e-15
    assert table_objective(tmp_path, ddspec.load(tmp_path / art.SPEC)) == pytest.approx(solve["objective"], abs=1e-12)


def test_no_table_at_all_is_a_run_error_with_a_fix(tmp_path: Path) -> None:
    """Without the heuristic and subsamples, a solver stopped before its first table leaves nothing to return (a
    time limit of 1 ns stops HiGHS before any table on every machine, unlike a node limit: its root finds one)."""
    problem = spec(data={"kind": "bayes_net", "network": "random", "attributes": 6, "levels": [2, 3], "n_train": 800,
                         "n_test": 100},
                   optimize={"kind": "milp", "route": "candidates", "heuristic": False, "max_nodes": 1,
                             "time_limit": 1e-9, "subsamples": 0})
    with pytest.raises(RunError) as err:
        ddspec.compile(ddspec.load(problem)).run(tmp_path)
    assert [(f.code, f.path) for f in err.value.findings] == [("MILP_NO_TABLE", "optimize")]
    assert "optimize.heuristic: true" in err.value.findings[0].fix


def test_relaxation_example_runs(tmp_path: Path) -> None:
    """The relaxation route end to end: one history row per Adam step, its table no worse than a subsample."""
    run_smoke(EXAMPLES / "asia_relaxation.yaml", tmp_path)
    solve = json.loads((tmp_path / art.SOLVE).read_text())
    history = json.loads((tmp_path / art.HISTORY).read_text())["rows"]
    assert solve["route"] == "relaxation" and solve["gap"] is None
    assert len(history) == ddspec.load(tmp_path / art.SPEC).optimize.relax_steps
    assert history[-1]["temperature"] == pytest.approx(0.02)
    assert solve["objective"] == min(solve["candidates"].values())


def test_csv_source_with_declared_columns(tmp_path: Path) -> None:
    """A CSV file's declared categorical columns, split, distilled (sufficient statistics of naive Bayes) and
    written back with the file's category names."""
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], 400)
    size = np.where(rng.random(400) < 0.7, np.where(colour == "red", "big", "small"), rng.choice(["big", "small"], 400))
    label = np.where(size == "big", "keep", "drop")
    with (tmp_path / "table.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "colour", "size", "verdict"])
        writer.writerows(zip(range(400), colour, size, label))
    problem = spec(data={"kind": "categorical_csv", "path": str(tmp_path / "table.csv"), "label": "verdict",
                         "columns": ["colour", "size", "verdict"]},
                   synthetic={"total": 12}, task={"kind": "sufficient_statistics"}, distance={"kind": "l1"})
    plan = ddspec.compile(ddspec.load(problem))
    assert plan.analysis.data.input_shape == (2,) and plan.analysis.data.n_train == 300
    plan.run(tmp_path / "run")
    rows = list(csv.reader((tmp_path / "run" / art.RECORDS).open()))
    assert rows[0] == ["colour", "size", "verdict"] and len(rows) == 13
    assert {r[0] for r in rows[1:]} <= {"red", "green", "blue"} and {r[2] for r in rows[1:]} <= {"keep", "drop"}
    solve = json.loads((tmp_path / "run" / art.SOLVE).read_text())
    assert solve["route"] == "exact" and solve["cells"] == 3 * 2 * 2


def test_csv_errors_name_the_field(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b\nx,y\nx,\n")
    found, _ = findings(spec(data={"kind": "categorical_csv", "path": str(tmp_path / "t.csv"), "label": "b"}))
    assert [f.code for f in found] == ["DATA_FILE_INVALID"] and "no value in column `b`" in found[0].message


def test_csv_table_is_read_again_when_the_file_changes(tmp_path: Path) -> None:
    """The cached table follows the file: a rewritten CSV (a new level, one more record) is read again."""
    from ddspec.spec.categorical_tables import csv_table

    path = tmp_path / "t.csv"
    path.write_text("a,b\nx,y\nx,z\nw,y\n")
    assert csv_table(str(path), None, 0.0, 0).levels == (("w", "x"), ("y", "z"))
    path.write_text("a,b\nx,y\nq,z\nw,y\nx,y\n")
    table = csv_table(str(path), None, 0.0, 0)
    assert table.levels == (("q", "w", "x"), ("y", "z")) and len(table.train) == 4


def test_one_seed_one_table() -> None:
    check_determinism(EXAMPLES / "asia_milp.yaml")


def test_relaxation_resumes_bit_for_bit() -> None:
    """The relaxation's Adam steps are checkpointed: interrupted and resumed = uninterrupted."""
    check_resume(EXAMPLES / "asia_relaxation.yaml")
