"""Sources from different tables (studies) with column maps: the veterans' ↔ NCCTG lung example, the maps applied
to the right columns, declared event codings, and the errors for codings that cannot be one column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ddspec.errors import SpecError
from ddspec.registry import DATA
from ddspec.spec.survival import SurvivalData
from ddspec.testing import NotWellPosed, assert_well_posed, check_determinism, run_smoke

EXAMPLE = Path(__file__).parent.parent / "examples" / "veteran_lung_survival.yaml"


def example_data(**changes: object) -> SurvivalData:
    import yaml

    return SurvivalData(**{**yaml.safe_load(EXAMPLE.read_text())["data"], **changes})


def test_the_two_studies_example_is_well_posed_and_runs_at_smoke_size(tmp_path):
    assert assert_well_posed(EXAMPLE).backend == "survival"
    result = run_smoke(EXAMPLE, tmp_path)
    survival = result.metrics["survival"]
    assert 0.0 <= result.metrics["c_index"]["mean"] <= 1.0
    # no patient has every column: no oracle, and the figures that need one are absent
    assert "oracle" not in survival["baselines"] and "cox_error" not in survival["distilled"]
    assert set(survival["distilled"]["source_c_index"]) == {"veterans", "ncctg"}
    # the objective is the spec's risk (mean) over the weighted analysis distances
    distances = list(survival["distilled"]["analyses"].values())
    assert survival["distilled"]["objective"] == pytest.approx(np.mean(distances))
    own = survival["baselines"]["sources"]["source_c_index"]
    assert all(0.5 < c <= 1.0 for c in own.values())  # each study's own Cox model ranks its test patients


def test_the_column_maps_read_each_study_s_own_columns():
    """Every value of a shared column comes from the column its source maps it onto: the multisets of
    (age, karnofsky, time, event) per study equal the loaders' own columns (NCCTG: its complete patients)."""
    from lifelines.datasets import load_lung
    from sksurv.datasets import load_veterans_lung_cancer

    data = DATA.build(example_data())
    train, test = data.train_table(), data.test_table()
    table_of_train, table_of_test = data.groups_train.numpy(), data.groups_test.numpy()
    age, karnofsky, celltype, sex = data.column_index(["age", "karnofsky", "celltype", "sex"])

    def study(k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.concatenate([train.x[table_of_train == k], test.x[table_of_test == k]])
        outcome = np.concatenate([np.column_stack([train.time, train.event])[table_of_train == k],
                                  np.column_stack([test.time, test.event])[table_of_test == k]])
        return rows, outcome

    veterans, y = load_veterans_lung_cancer()
    rows, outcome = study(0)
    assert sorted(rows[:, age]) == sorted(veterans["Age_in_years"])
    assert sorted(rows[:, karnofsky]) == sorted(veterans["Karnofsky_score"])
    assert sorted(map(tuple, outcome)) == sorted(zip(y["Survival_in_days"], y["Status"].astype(float)))
    assert np.isnan(rows[:, sex]).all()  # the veterans' trial does not record sex
    # Celltype keeps the loader's level order: codes 0..3 count like the categories
    counts = veterans["Celltype"].value_counts().reindex(veterans["Celltype"].cat.categories).to_numpy()
    np.testing.assert_array_equal(np.bincount(rows[:, celltype].astype(int)), counts)

    lung = load_lung().dropna(subset=["ph.karno", "ph.ecog"])
    rows, outcome = study(1)
    assert sorted(rows[:, karnofsky]) == sorted(lung["ph.karno"])
    assert sorted(rows[:, age]) == sorted(lung["age"])
    assert sorted(map(tuple, outcome)) == sorted(zip(lung["time"].astype(float), lung["status"].astype(float)))
    assert np.isnan(rows[:, celltype]).all()


def write(path: Path, header: str, rows: list[str]) -> str:
    path.write_text("\n".join([header, *rows]))
    return str(path)


def two_csvs(tmp_path: Path, a: list[str], b: list[str], header_b: str = "age,sex,time,status",
             **source_b: object) -> SurvivalData:
    """Study A (age, sex, time, event) and study B (its own header; status coded by ``source_b``)."""
    return SurvivalData(dataset="csv", path=write(tmp_path / "a.csv", "age,sex,time,event", a), sources=[
        {"name": "A", "columns": ["age", "sex"]},
        {"name": "B", "dataset": "csv", "path": write(tmp_path / "b.csv", header_b, b), "columns": ["age", "sex"],
         "event_column": "status", **source_b}], test_fraction=0.25)


A_ROWS = [f"{40 + i},{'MF'[i % 2]},{10 + i},{i % 2}" for i in range(8)]


def test_an_event_column_coded_1_2_needs_its_event_values(tmp_path):
    b = [f"{42 + i},{'MF'[i % 2]},{5 + i},{1 + (i % 3 == 0)}" for i in range(8)]
    with pytest.raises(SpecError) as err:
        DATA.build(two_csvs(tmp_path, A_ROWS, b))
    assert err.value.findings[0].code == "SURVIVAL_EVENT_CODING"
    assert err.value.findings[0].path == "data.sources.1.event_values"
    data = DATA.build(two_csvs(tmp_path, A_ROWS, b, event_values=[2, 1]))
    b_rows = data.groups_train.numpy() == 1
    events = dict(zip(data.train_table().time[b_rows], data.train_table().event[b_rows]))
    assert events == {5.0 + i: i % 3 == 0 for i in range(8) if 5.0 + i in events}
    assert sum(events.values()) + sum(data.test_table().event[data.groups_test.numpy() == 1]) == 3


def test_a_missing_event_is_incomplete_not_censored(tmp_path):
    b = [f"{42 + i},{'MF'[i % 2]},{5 + i},{'' if i == 3 else i % 2}" for i in range(8)]
    with pytest.raises(SpecError) as err:
        DATA.build(two_csvs(tmp_path, A_ROWS, b, event_values=[1, 0]))
    assert err.value.findings[0].code == "SURVIVAL_INCOMPLETE"
    data = DATA.build(two_csvs(tmp_path, A_ROWS, b, event_values=[1, 0]).model_copy(update={"drop_incomplete": True}))
    assert len(data.y_train) + len(data.y_test) == 15


@pytest.mark.parametrize("b, header, message", [
    ([f"{42 + i},{'ab'[i % 2]},{5 + i},{i % 2}" for i in range(8)], "age,sex,time,status", "none in common"),
    ([f"{42 + i},{i % 2},{5 + i},{i % 2}" for i in range(8)], "age,sex,time,status", "categorical in"),
    ([f"{0.5 + i / 100},{'MF'[i % 2]},{5 + i},{i % 2}" for i in range(8)], "age,sex,time,status", "do not overlap"),
])
def test_codings_that_cannot_be_one_column_are_errors(tmp_path, b, header, message):
    with pytest.raises(SpecError) as err:
        DATA.build(two_csvs(tmp_path, A_ROWS, b, header))
    finding = err.value.findings[0]
    assert finding.code == "SURVIVAL_CODING" and message in finding.message and finding.fix


def example_spec(**data: object) -> dict:
    import yaml

    spec = yaml.safe_load(EXAMPLE.read_text())
    return {**spec, "data": {**spec["data"], **data}}


def test_findings_on_the_sources_tables():
    sources = example_data().model_dump(exclude_unset=True)["sources"]
    sources[1]["column_map"] = {"karnofsky": "karno", "wt": "wt.loss"}  # lung has no `karno`; `wt` is not listed
    with pytest.raises(NotWellPosed) as err:
        assert_well_posed(example_spec(sources=sources))
    codes = [(f.code, f.path) for f in err.value.findings]
    assert ("UNKNOWN_COLUMN", "data.sources.1.columns") in codes
    assert ("UNKNOWN_COLUMN", "data.sources.1.column_map") in codes
    assert all(f.fix for f in err.value.findings)
    # warnings: a data.dataset no source reads; studies that share no column
    assert_well_posed(example_spec(dataset="gbsg2"), expect={"DATASET_UNUSED"})
    apart = example_data().model_dump(exclude_unset=True)["sources"]
    apart[0].update(columns=["celltype"], column_map={"celltype": "Celltype"})
    apart[1].update(columns=["sex"], column_map={})
    spec = example_spec(sources=apart, categorical=["sex"])
    spec["task"] = {"kind": "survival_analyses", "analyses": [{"kind": "survival_curve"}]}
    assert_well_posed(spec, expect={"NOTHING_SHARED"})
    with pytest.raises(ValueError, match="same table"):
        SurvivalData(sources=[{"name": "a", "dataset": "lung", "columns": ["age"]},
                              {"name": "b", "dataset": "lung", "columns": ["sex"]}])
    with pytest.raises(ValueError, match="dataset of its own"):
        SurvivalData(sources=[{"name": "a", "columns": ["age"], "column_map": {"age": "x"}}])


@pytest.mark.slow
def test_the_two_studies_example_is_deterministic():
    check_determinism(EXAMPLE)
