"""Subgroup shift: the ``digits_shift`` data (spurious corner cue, label x cue groups) and ``worst_group``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import ddspec
from ddspec.components.data import load_dataset
from ddspec.components.data.base import Dataset
from ddspec.errors import SpecError
from ddspec.evaluate import metrics
from ddspec.spec.data import DigitsData, DigitsShiftData
from ddspec.spec.evaluate import AccuracyMetric, WorstGroupMetric, is_fraction


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(DigitsData())


@pytest.fixture(scope="module")
def shifted() -> Dataset:
    return load_dataset(DigitsShiftData())


def cues(groups: torch.Tensor) -> torch.Tensor:
    return groups % 2


def agrees(cue: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 where the cue is the one the training correlation favours (1 for labels 0-4, 0 for 5-9)."""
    return cue == (y < 5).long()


# -- data -------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
def test_cue_patch_where_its_group_says_rest_is_digits(split: str, digits: Dataset, shifted: Dataset) -> None:
    x, x0 = getattr(shifted, f"x_{split}"), getattr(digits, f"x_{split}")
    y, groups = getattr(shifted, f"y_{split}"), getattr(shifted, f"groups_{split}")
    assert torch.equal(y, getattr(digits, f"y_{split}"))
    cue = cues(groups)
    assert set(cue.tolist()) == {0, 1}
    top_left, bottom_right = x[:, 0, :2, :2], x[:, 0, 6:, 6:]
    assert (top_left[cue == 1] == 1.0).all() and (bottom_right[cue == 0] == 1.0).all()
    expected = x0.clone()
    expected[cue == 1, 0, :2, :2] = 1.0
    expected[cue == 0, 0, 6:, 6:] = 1.0
    assert torch.equal(x, expected)  # nothing else changed, the other corner included
    # the corner without the patch is the digit's own (mostly blank) corner, so the cue is readable
    assert (top_left[cue == 0] < 1.0).any(dim=(1, 2)).all() and (bottom_right[cue == 1] < 1.0).any(dim=(1, 2)).all()


def test_group_ids_are_two_label_plus_cue(shifted: Dataset) -> None:
    for groups, y in ((shifted.groups_train, shifted.y_train), (shifted.groups_test, shifted.y_test)):
        assert groups.dtype == torch.int64 and groups.shape == y.shape
        cue = (groups - 2 * y)
        assert set(cue.unique().tolist()) == {0, 1}
        assert torch.equal(groups // 2, y)
    assert set(shifted.groups_test.unique().tolist()) == set(range(20))  # every group is present in test


def test_train_correlation_and_independent_test_cue(shifted: Dataset) -> None:
    train_agree = agrees(cues(shifted.groups_train), shifted.y_train).float().mean().item()
    assert abs(train_agree - 0.9) < 0.03
    cue, y = cues(shifted.groups_test).float(), shifted.y_test
    assert abs(agrees(cue.long(), y).float().mean().item() - 0.5) < 0.08
    assert abs(cue[y < 5].mean().item() - cue[y >= 5].mean().item()) < 0.12  # P(cue=1 | half) ≈ P(cue=1)


@pytest.mark.parametrize("correlation", [0.5, 0.7, 1.0])
def test_correlation_field_is_honoured(correlation: float) -> None:
    data = load_dataset(DigitsShiftData(correlation=correlation, seed=3))
    rate = agrees(cues(data.groups_train), data.y_train).float().mean().item()
    assert rate == 1.0 if correlation == 1.0 else abs(rate - correlation) < 0.04
    test_rate = agrees(cues(data.groups_test), data.y_test).float().mean().item()
    assert abs(test_rate - 0.5) < 0.08  # the test split never follows the training correlation


def test_fields_validated() -> None:
    for bad in ({"correlation": 0.4}, {"correlation": 1.01}, {"seed": -1}):
        with pytest.raises(ValidationError):
            DigitsShiftData(**bad)
    assert (DigitsShiftData().correlation, DigitsShiftData().seed) == (0.9, 0)


def test_deterministic_per_seed_different_across_seeds(shifted: Dataset) -> None:
    again = load_dataset(DigitsShiftData(seed=0))
    assert torch.equal(again.x_train, shifted.x_train) and torch.equal(again.x_test, shifted.x_test)
    assert torch.equal(again.groups_train, shifted.groups_train) and torch.equal(again.groups_test, shifted.groups_test)
    other = load_dataset(DigitsShiftData(seed=1))
    assert not torch.equal(other.groups_train, shifted.groups_train)
    assert not torch.equal(other.groups_test, shifted.groups_test)
    assert not torch.equal(other.x_train, shifted.x_train)


def test_describe_agrees_with_built(shifted: Dataset) -> None:
    spec = DigitsShiftData()
    info = spec.describe()
    assert (shifted.name, shifted.input_shape, shifted.num_classes) == (info.name, info.input_shape, info.num_classes)
    assert tuple(torch.bincount(shifted.y_train, minlength=10).tolist()) == info.class_counts
    assert len(shifted.x_test) == len(shifted.y_test) == info.n_test == 450 and info.n_train == 1347
    assert (info.input_shape, info.class_counts, info.n_test) == (
        DigitsData().describe().input_shape, DigitsData().describe().class_counts, DigitsData().describe().n_test)
    assert shifted.value_range() == (0.0, 1.0) and shifted.x_train.dtype == torch.float32


def test_dataset_without_groups_and_to_keep_groups(digits: Dataset, shifted: Dataset) -> None:
    assert digits.groups_train is None and digits.groups_test is None
    assert digits.to("cpu").groups_test is None
    moved = shifted.to("cpu")
    assert torch.equal(moved.groups_test, shifted.groups_test) and torch.equal(moved.groups_train, shifted.groups_train)


# -- worst_group --------------------------------------------------------------------------------
def _grouped(y: list[int], groups: list[int]) -> Dataset:
    y_t, g_t = torch.tensor(y), torch.tensor(groups)
    x = torch.zeros(len(y), 1)
    return Dataset("g", x, y_t, x, y_t, 3, groups_train=g_t, groups_test=g_t)


def test_worst_group_hand_case_skips_empty_groups() -> None:
    # groups 0 (3 samples), 1 is empty, 2 (2 samples), 5 (1 sample)
    data = _grouped([0, 0, 1, 2, 2, 1], [0, 0, 0, 2, 2, 5])
    pred = torch.tensor([0, 1, 1, 2, 0, 1])  # group 0: 2/3, group 2: 1/2, group 5: 1/1
    spec = WorstGroupMetric()
    assert metrics.worst_group(spec, pred, data) == 0.5
    assert metrics.group_accuracies(spec, pred, data) == ([0, 2, 5], [3, 2, 1], [2 / 3, 0.5, 1.0])
    assert metrics.WorstGroup(spec).details(torch.nn.functional.one_hot(pred, 3).float(), data) == {
        "group_ids": [0, 2, 5], "group_sizes": [3, 2, 1], "group_accuracies": [2 / 3, 0.5, 1.0]}
    all_right = metrics.worst_group(spec, torch.tensor([0, 0, 1, 2, 2, 1]), data)
    assert all_right == 1.0  # an empty group 1 (or 3, 4) would have made this 0
    assert is_fraction("worst_group")


def test_worst_group_on_shifted_data_cue_only_predictor(shifted: Dataset) -> None:
    # a predictor that trusts only the cue's half is wrong on every group of the other half
    y, cue = shifted.y_test, cues(shifted.groups_test)
    pred = torch.where(agrees(cue, y), y, (y + 5) % 10)
    assert metrics.worst_group(WorstGroupMetric(), pred, shifted) == 0.0
    assert metrics.accuracy(AccuracyMetric(), pred, shifted) > 0.4
    ids, sizes, _ = metrics.group_accuracies(WorstGroupMetric(), pred, shifted)
    assert ids == list(range(20)) and sum(sizes) == 450


def test_worst_group_needs_groups(digits: Dataset) -> None:
    with pytest.raises(SpecError) as excinfo:
        metrics.worst_group(WorstGroupMetric(), torch.zeros(450, dtype=torch.long), digits)
    (finding,) = excinfo.value.findings
    assert (finding.code, finding.path) == ("METRIC_NEEDS_GROUPS", "evaluate.metrics")
    assert "digits_shift" in finding.message and "digits_shift" in finding.fix


# -- end to end ---------------------------------------------------------------------------------
def test_end_to_end_worst_group(tmp_path: Path) -> None:
    spec = {
        "data": {"kind": "digits_shift"},
        "synthetic": {"per_class": 2},
        "model": {"kind": "convnet", "width": 8, "depth": 2},
        "optimize": {"kind": "select", "method": "random"},
        "evaluate": {"seeds": [0], "epochs": 5, "metrics": ["accuracy", "worst_group"]},
        "runtime": {"progress": False, "threads": 1},
    }
    result = ddspec.compile(ddspec.load(spec)).run(tmp_path / "r")
    worst, acc = result.metrics["worst_group"], result.metrics["accuracy"]
    assert set(worst) >= {"mean", "std", "values"}
    assert len(worst["values"]) == 1 and all(0.0 <= v <= 1.0 for v in worst["values"])
    assert 0.0 <= worst["mean"] <= acc["mean"] <= 1.0 and worst["std"] == 0.0
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["worst_group"]["values"] == worst["values"]
    assert saved["worst_group"]["group_ids"] == [list(range(20))]
    assert sum(saved["worst_group"]["group_sizes"][0]) == 450


def test_worst_group_without_groups_is_refused_before_running(tiny_spec) -> None:
    import ddspec
    from ddspec.errors import WellPosednessError

    tiny_spec["evaluate"]["metrics"] = ["accuracy", "worst_group"]
    with pytest.raises(WellPosednessError) as err:
        ddspec.compile(ddspec.load(tiny_spec))
    assert err.value.findings[0].code == "METRIC_NEEDS_GROUPS" and "digits_shift" in err.value.findings[0].fix
