"""Data checked when loaded: bad values are refused at load (exit 2, the array, the first offending row,
the spec path and a fix), for files and for a registered plugin source alike."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
import yaml

from ddspec.cli import main
from ddspec.components.data.base import Dataset
from ddspec.components.data.checks import validate_dataset
from ddspec.errors import SpecError
from ddspec.registry import DATA
from ddspec.spec.data import DataBase, DataInfo


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """24 train / 8 test rows of 4 features, labels 0, 1 alternating."""
    x = np.random.default_rng(seed).normal(size=(32, 4)).astype(np.float32)
    y = np.arange(32) % 2
    return {"x_train": x[:24], "y_train": y[:24], "x_test": x[24:], "y_test": y[24:]}


def spec(data: dict) -> dict:
    """A tiny problem on ``data``: distribution matching scored by accuracy, or for real-valued targets the test
    error of a model trained 2 steps on D̂ (default metrics: they follow the targets)."""
    real = data.get("targets") == "real"
    objective = {"task": {"kind": "test_error"}, "train": {"steps": 2, "lr": 0.05}} if real \
        else {"distance": {"kind": "feature_mean"}}
    return {
        "name": "checks", "data": data, "synthetic": {"per_class": 1}, "model": {"kind": "mlp", "hidden": [8]},
        **objective, "optimize": {"kind": "gradient", "iterations": 2, "real_batch_per_class": 4},
        "evaluate": {"seeds": [0], "epochs": 1, **({} if real else {"metrics": ["accuracy"]})},
        "runtime": {"device": "cpu", "progress": False, "checkpoint_every": 1, "threads": 1},
    }


def run(tmp_path: Path, data: dict, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec(data)))
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    return code, capsys.readouterr().err


def run_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str], targets: str = "classes", **change: np.ndarray
            ) -> tuple[int, str]:
    np.savez(tmp_path / "d.npz", **{**arrays(), **change})
    return run(tmp_path, {"kind": "npz", "path": "d.npz", "targets": targets}, capsys)


def test_nan_in_inputs_is_refused_at_load_not_reported_as_divergence(tmp_path, capsys) -> None:
    x = arrays()["x_train"].copy()
    x[17, 2] = np.nan
    x[20, 0] = np.inf
    code, err = run_npz(tmp_path, capsys, x_train=x)
    assert code == 2 and "Traceback" not in err and "DIVERGED" not in err
    assert "[DATA_NOT_FINITE] data.path: x_train[17] holds NaN (2 rows of x_train hold NaN or inf)" in err
    assert "fix: drop or impute those rows of x_train" in err
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_inf_in_real_targets(tmp_path, capsys) -> None:
    y = np.linspace(0, 1, 8)
    y[5] = -np.inf
    code, err = run_npz(tmp_path, capsys, "real", y_train=np.linspace(0, 1, 24), y_test=y)
    assert code == 2 and "[DATA_NOT_FINITE] data.path: y_test[5] holds inf" in err and "Traceback" not in err


def test_a_class_without_training_rows(tmp_path, capsys) -> None:
    y = 2 * (np.arange(24) % 2)  # labels 0 and 2: class 1 is empty; an npz's describe() sees it before the run
    code, err = run_npz(tmp_path, capsys, y_train=y, y_test=np.zeros(8, dtype=int))
    assert code == 2 and "[EMPTY_CLASS] data" in err and "Traceback" not in err


def test_float_labels_of_a_class_problem_say_to_set_targets_real(tmp_path, capsys) -> None:
    code, err = run_npz(tmp_path, capsys, y_train=np.linspace(0, 1, 24))
    assert code == 2 and "[DATA_FILE_INVALID] data.path" in err and "y_train holds floats" in err
    assert "data.targets: real" in err and "Traceback" not in err


# -- a registered plugin source: the same checks, at ``data`` -------------------------------------

class BrokenData(DataBase):
    """A plugin source that builds a Dataset with one defect (``defect``), for the load checks."""

    kind: Literal["broken_test"] = "broken_test"
    defect: Literal["none", "label", "empty_class", "float_labels", "int_inputs", "length", "groups", "nan_test",
                    "crash", "memory"]

    def describe(self) -> DataInfo:
        return DataInfo("broken", (4,), 2, (12, 12), 8)


def build_broken(spec: BrokenData) -> Dataset:
    a = arrays()
    data = Dataset("broken", *(torch.from_numpy(a[k]) for k in ("x_train", "y_train", "x_test", "y_test")),
                   num_classes=2)
    if spec.defect == "none":
        return data
    if spec.defect == "crash":
        raise KeyError("no such column")
    if spec.defect == "memory":
        raise MemoryError("cannot allocate 10 GiB")
    if spec.defect == "label":
        y_test = data.y_test.clone()
        y_test[3] = 2
        return replace(data, y_test=y_test)
    if spec.defect == "empty_class":  # describe() promises two classes; the data has one
        return replace(data, y_train=torch.zeros_like(data.y_train))
    if spec.defect == "float_labels":
        return replace(data, y_train=data.y_train.float())
    if spec.defect == "int_inputs":
        return replace(data, x_train=data.x_train.long())
    if spec.defect == "length":
        return replace(data, y_train=data.y_train[:-1])
    if spec.defect == "groups":
        return replace(data, groups_train=torch.zeros(5, dtype=torch.int64))
    x_test = data.x_test.clone()
    x_test[6, 1] = float("nan")
    return replace(data, x_test=x_test)


@pytest.fixture
def broken_source():
    DATA.register(BrokenData, builder=build_broken)
    yield
    DATA.unregister("broken_test")


@pytest.mark.parametrize(("defect", "finding"), [
    ("label", "[DATA_LABEL_OUT_OF_RANGE] data: y_test[3] = 2 is not a class 0..1"),
    ("empty_class", "[DATA_EMPTY_CLASS] data: class 1 of 0..1 has no training rows"),
    ("float_labels", "[DATA_DTYPE] data: y_train has dtype torch.float32, but the data has classes"),
    ("int_inputs", "[DATA_DTYPE] data: x_train has dtype torch.int64; inputs must be floating point"),
    ("length", "[DATA_LENGTH_MISMATCH] data: x_train has 24 rows but y_train has 23"),
    ("groups", "[DATA_LENGTH_MISMATCH] data: x_train has 24 rows but groups_train has 5"),
    ("nan_test", "[DATA_NOT_FINITE] data: x_test[6] holds NaN (1 row of x_test holds NaN or inf)"),
])
def test_plugin_source_is_checked_at_load(tmp_path, capsys, broken_source, defect, finding) -> None:
    code, err = run(tmp_path, {"kind": "broken_test", "defect": defect}, capsys)
    assert code == 2 and finding in err and "fix:" in err and "Traceback" not in err


def test_a_good_dataset_passes_unchanged() -> None:
    a = arrays()
    data = Dataset("ok", *(torch.from_numpy(a[k]) for k in ("x_train", "y_train", "x_test", "y_test")), num_classes=2)
    assert validate_dataset(data) is data
    real = replace(data, y_train=torch.linspace(0, 1, 24), y_test=torch.zeros(8), num_classes=0)
    assert validate_dataset(real) is real
    with pytest.raises(SpecError) as e:
        validate_dataset(replace(real, y_train=torch.arange(24)))
    (finding,) = e.value.findings
    assert finding.code == "DATA_DTYPE" and "real-valued targets must be floats" in finding.message
    with pytest.raises(SpecError) as e:
        validate_dataset(replace(data, x_train=data.x_train[:0], y_train=data.y_train[:0]))
    assert e.value.findings[0].code == "DATA_EMPTY_CLASS"
