"""Data ``survival_categorical``: hand-computed codes, bins and outcome on a small table; the outcome and the exclusions
recounted from the raw GBSG2 arrays; clear findings for bad columns; the kind's generic checks; a smoke run of the
example."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ddspec.spec import survival_codes as sc
from ddspec.spec.survival_categorical import SurvivalCategoricalData
from ddspec.spec.survival_codes import OUTCOME
from ddspec.testing import assert_well_posed, check_determinism, check_kind, run_smoke
from ddspec.testing.wellposed import findings

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gbsg2_categorical_milp.yaml"
GBSG2 = ["tgrade", "horTh", "menostat", "age", "pnodes", "tsize"]


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Eight patients in place of GBSG2 (tgrade, age; time, event), the table cache cleared around the test."""
    frame = pd.DataFrame({"tgrade": pd.Categorical(["I", "II", "III", "II", "I", "III", "II", "I"],
                                                   categories=["I", "II", "III"]),
                          "age": [30.0, 40.0, 50.0, 65.0, 65.0, 80.0, 90.0, 100.0]})
    time = np.array([5.0, 12.0, 3.0, 10.0, 10.0, 20.0, 8.0, 1.0])
    event = np.array([True, True, False, False, True, False, False, True])
    monkeypatch.setattr(sc, "load_survival", lambda dataset: (frame, time, event))
    sc.survival_codes.cache_clear()
    yield
    sc.survival_codes.cache_clear()


def sorted_rows(codes: np.ndarray) -> list[list[int]]:
    return sorted(codes.tolist())


def test_hand_computed_codes(tiny: None) -> None:
    """τ = 10: patients 2 (censored at 3) and 6 (censored at 8) are excluded; patient 3, censored at τ itself, is
    known event-free by τ; patient 4, an event at τ, had it by τ. Age in 2 bins: the median of the kept ages
    {30, 40, 65, 65, 80, 100} is 65, and 65 falls in the right-closed lower bin."""
    codes = sc.survival_codes("gbsg2", ("tgrade", "age", OUTCOME), (("age", 2),), 10.0, 0.05, 0, False)
    table = codes.table
    assert codes.tau == 10.0 and codes.censored == (2, 0) and codes.incomplete == 0
    assert table.levels == (("I", "II", "III"), ("<=65", ">65"), ("no", "yes"))
    assert len(table.test) == 0  # round(8 · 0.05) = 0 test patients
    expected = [[0, 0, 1],   # patient 0: I, 30, event at 5
                [1, 0, 0],   # 1: II, 40, event at 12 > τ
                [1, 0, 0],   # 3: II, 65, censored at τ
                [0, 0, 1],   # 4: I, 65, event at τ
                [2, 1, 0],   # 5: III, 80, censored at 20
                [0, 1, 1]]   # 7: I, 100, event at 1
    assert sorted_rows(table.train) == sorted(expected)


def test_default_tau_is_the_median_training_event_time(tiny: None) -> None:
    """Event times 1, 5, 10, 12: τ = 7.5; only patient 2 (censored at 3 < 7.5) is excluded, patient 6 (censored
    at 8) is known event-free by τ."""
    codes = sc.survival_codes("gbsg2", ("tgrade", OUTCOME), (), None, 0.05, 0, False)
    assert codes.tau == 7.5 and codes.censored == (1, 0)
    assert sorted(codes.table.train[:, 1].tolist()) == [0, 0, 0, 0, 0, 1, 1]  # events by 7.5: patients 0 and 7


def test_without_the_outcome_nobody_is_excluded(tiny: None) -> None:
    codes = sc.survival_codes("gbsg2", ("tgrade",), (), None, 0.25, 3, False)
    assert codes.tau is None and codes.censored == (0, 0)
    assert len(codes.table.train) + len(codes.table.test) == 8 and len(codes.table.test) == 2


def test_quantile_bins_merge_ties_and_name_intervals() -> None:
    assert sc.quantile_edges(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist() == [2.5]
    assert sc.quantile_edges(np.array([1.0, 1.0, 1.0, 5.0]), 3).tolist() == [1.0]  # both inner quantiles are 1
    assert sc.interval_names(np.array([2.0, 5.5])) == ("<=2", "(2, 5.5]", ">5.5")


def test_gbsg2_outcome_and_exclusions_match_the_raw_table() -> None:
    """Recounted from scikit-survival's arrays: the events by τ, the patients kept and those censored before τ;
    every binned age lies in its named interval."""
    import sksurv.datasets

    frame, y = sksurv.datasets.load_gbsg2()
    time, event, tau = y["time"], y["cens"], 730.0
    data = SurvivalCategoricalData(columns=GBSG2, tau=tau)
    codes = data.codes()
    both = np.concatenate([codes.table.train, codes.table.test])
    assert sum(codes.censored) == int(((~event) & (time < tau)).sum())
    assert len(both) == 686 - sum(codes.censored)
    assert int(both[:, -1].sum()) == int((event & (time <= tau)).sum())
    j = codes.table.index("age")
    names = codes.table.levels[j]
    edges = [float(n[2:]) for n in names[:1]] + [float(n.split(", ")[1][:-1]) for n in names[1:-1]]
    kept = frame["age"].to_numpy()[event | (time >= tau)]
    assert sorted(np.searchsorted(edges, kept, side="left").tolist()) == sorted(both[:, j].tolist())
    info = data.describe()
    excluded = f"({sum(codes.censored)} censored before τ = 730 excluded)"
    assert info.name == f"survival_categorical:gbsg2:{OUTCOME} {excluded}"
    assert info.n_test == len(codes.table.test) and info.n_train == len(codes.table.train)


def test_kind_passes_the_generic_checks() -> None:
    check_kind(SurvivalCategoricalData)


def spec(**data: Any) -> dict[str, Any]:
    """The example's problem at a small node limit, with ``data`` fields replaced."""
    return {"name": "gbsg2-test", "data": {"kind": "survival_categorical", "columns": GBSG2, "tau": 730, **data},
            "synthetic": {"total": 16}, "model": {"kind": "naive_bayes"}, "task": {"kind": "marginals"},
            "optimize": {"kind": "milp", "max_nodes": 50, "subsamples": 2},
            "evaluate": {"seeds": [0], "models": [{"kind": "naive_bayes"}], "metrics": ["accuracy"]}}


@pytest.mark.parametrize(("data", "code", "path"), [
    ({"columns": ["tgrade", "grade"]}, "UNKNOWN_COLUMN", "data.columns"),
    ({"bins": {"estrec": 4}}, "UNKNOWN_COLUMN", "data.bins"),
    ({"bins": {"tgrade": 2}}, "BINS_NOT_NUMERIC", "data.bins"),
    ({"bins": {OUTCOME: 2}}, "BINS_NOT_NUMERIC", "data.bins"),
    ({"label": "grade", "tau": None}, "UNKNOWN_ATTRIBUTE", "data.label"),
    ({"dataset": "flchain", "columns": ["sex", "chapter"], "tau": None}, "SURVIVAL_INCOMPLETE", "data.columns"),
])
def test_bad_columns_get_clear_findings(data: dict[str, Any], code: str, path: str) -> None:
    found, plan = findings(spec(**data))
    assert plan is None
    hits = [f for f in found if f.code == code]
    assert hits and hits[0].path == path and hits[0].fix, [f.render() for f in found]


def test_exclusions_are_warnings_with_counts() -> None:
    """The censored (and, with drop_incomplete, the incomplete) patients are counted in a warning, not dropped
    silently; a covariate label without the outcome excludes no one."""
    plan = assert_well_posed(spec(), expect={"CENSORED_EXCLUDED"})
    censored = sum(SurvivalCategoricalData(columns=GBSG2, tau=730).codes().censored)
    assert f"{censored} patients" in next(n.message for n in plan.notes if n.code == "CENSORED_EXCLUDED")
    flchain = {"dataset": "flchain", "columns": ["sex", "creatinine"], "tau": None, "label": "sex",
               "drop_incomplete": True}
    plan = assert_well_posed(spec(**flchain), expect={"INCOMPLETE_EXCLUDED"})
    assert "1350 patients" in next(n.message for n in plan.notes if n.code == "INCOMPLETE_EXCLUDED")


@pytest.mark.parametrize("data", [{"columns": ["age", "age"]}, {"label": "tgrade"}])
def test_invalid_fields_are_validation_errors(data: dict[str, Any]) -> None:
    """A column named twice; τ set with no outcome attribute."""
    with pytest.raises(ValueError, match="columns: name each column once|tau is set"):
        SurvivalCategoricalData(**{"columns": GBSG2, "tau": 730, **data})


def test_example_runs(tmp_path: Path) -> None:
    """The example at smoke size: the artifact contract (run_smoke), records.csv with the category and bin names."""
    run_smoke(EXAMPLE, tmp_path)
    rows = list(csv.reader((tmp_path / "records.csv").open()))
    assert rows[0] == [*GBSG2, OUTCOME] and len(rows) == 1 + 32
    assert {r[0] for r in rows[1:]} <= {"I", "II", "III"} and {r[-1] for r in rows[1:]} <= {"no", "yes"}
    assert {r[3] for r in rows[1:]} <= {"<=49", "(49, 59]", ">59"}


def test_runs_are_deterministic() -> None:
    """Two smoke runs with the same seed (the second with numpy's and Python's global RNGs moved) give the same
    table and figures: the split, τ and the bins depend only on the spec."""
    check_determinism(spec())
