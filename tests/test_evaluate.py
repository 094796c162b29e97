"""Evaluation: metrics, corruptions and the protocol against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddspec.components.data.base import Dataset
from ddspec.errors import RunError, SpecError
from ddspec.evaluate import evaluate_distilled, metrics
from ddspec.evaluate.corruptions import blur, gaussian_noise, invert
from ddspec.spec import AccuracyMetric, BlurCorruption, ClusterMinMetric, InvertCorruption, NoiseCorruption, Problem


def _dataset(x_test: torch.Tensor, y_test: torch.Tensor, num_classes: int = 2) -> Dataset:
    return Dataset("t", x_test, y_test, x_test, y_test, num_classes)


def _blobs(n: int, seed: int, shape: tuple[int, ...] = (5,)) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes: N(±2·1, 0.5²) in every coordinate (linearly separable in practice)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    sign = (2 * y.float() - 1).view(-1, *[1] * len(shape))
    return 2 * sign + 0.5 * torch.randn(n, *shape, generator=g), y


# -- metrics ----------------------------------------------------------------------------------
def test_accuracy_hand_case() -> None:
    data = _dataset(torch.zeros(4, 1), torch.tensor([0, 1, 2, 2]), 3)
    assert metrics.accuracy(AccuracyMetric(), torch.tensor([0, 1, 1, 2]), data) == 0.75
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, -1.0], [0.0, 3.0, 2.0], [-1.0, 0.0, 0.5]])  # argmax 0, 1, 1, 2
    assert metrics.Accuracy(AccuracyMetric())(logits, data) == 0.75 and metrics.Accuracy(AccuracyMetric()).details(
        logits, data) == {}


def test_cluster_min_two_blobs_right_on_one_only() -> None:
    x, _ = _blobs(100, 0, (2,))
    labels = torch.randint(0, 2, (100,), generator=torch.Generator().manual_seed(1))  # labels play no part
    data = _dataset(x, labels)
    pred = torch.where(x[:, 0] < 0, labels, 1 - labels)  # right on the negative blob, wrong on the other
    spec = ClusterMinMetric(clusters=2, seed=0)
    assert metrics.cluster_min(spec, pred, data) == 0.0
    sizes, accs = metrics.cluster_accuracies(spec, pred, data)
    assert sorted(sizes) == [50, 50] and sorted(accs) == [0.0, 1.0]
    scored = metrics.ClusterMin(spec)
    outputs = torch.nn.functional.one_hot(pred, 2).float()  # the metric objects take outputs; argmax = pred
    assert scored(outputs, data) == 0.0
    assert scored.details(outputs, data) == {"cluster_sizes": sizes, "cluster_accuracies": accs}


def test_cluster_assignment_cached_and_deterministic() -> None:
    data = _dataset(torch.randn(60, 1, 3, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(60).long())
    first = metrics.cluster_assignment(data, 4, 3)
    assert metrics.cluster_assignment(data, 4, 3) is first  # computed once
    metrics._ASSIGNMENTS.clear()
    assert np.array_equal(metrics.cluster_assignment(data, 4, 3), first)


def test_cluster_min_too_few_test_samples() -> None:
    data = _dataset(torch.randn(3, 2), torch.zeros(3).long())
    with pytest.raises(SpecError, match="clusters"):
        metrics.cluster_min(ClusterMinMetric(clusters=10), torch.zeros(3).long(), data)


# -- corruptions ------------------------------------------------------------------------------
def test_invert_hand_case() -> None:
    x = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(invert(InvertCorruption(), x, (0.0, 1.0), torch.Generator()), torch.tensor([1.0, 0.75, 0.0]))
    assert torch.equal(invert(InvertCorruption(), x, (-1.0, 3.0), torch.Generator()), torch.tensor([2.0, 1.75, 1.0]))


def _taps(sigma: float) -> torch.Tensor:
    i = torch.arange(-math.ceil(3 * sigma), math.ceil(3 * sigma) + 1, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    return k / k.sum()


@pytest.mark.parametrize("shape", [(2, 3, 17), (2, 3, 9, 11)])
def test_blur_keeps_constants(shape: tuple[int, ...]) -> None:
    x = torch.full(shape, 0.7, dtype=torch.float64)
    assert torch.allclose(blur(BlurCorruption(radius=2), x, (0, 1), torch.Generator()), x)


def test_blur_of_delta_is_the_gaussian_kernel() -> None:
    k = _taps(1.5)  # radius 3 → σ = 1.5, taps −5..5
    line = torch.zeros(1, 1, 31, dtype=torch.float64)
    line[..., 15] = 1
    out = blur(BlurCorruption(radius=3), line, (0, 1), torch.Generator())[0, 0]
    assert torch.allclose(out[10:21], k) and out[:10].abs().max() == 0 and out.sum().item() == pytest.approx(1)
    image = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    image[..., 10, 10] = 1
    out2 = blur(BlurCorruption(radius=3), image, (0, 1), torch.Generator())[0, 0]
    assert torch.allclose(out2[5:16, 5:16], torch.outer(k, k)) and out2.sum().item() == pytest.approx(1)


def test_blur_needs_spatial_inputs() -> None:
    with pytest.raises(SpecError) as err:
        blur(BlurCorruption(), torch.zeros(4, 10), (0, 1), torch.Generator())
    assert err.value.findings[0].path == "evaluate.corruptions" and "spatial" in err.value.findings[0].message


def test_noise_variance_and_determinism() -> None:
    spec, x = NoiseCorruption(variance=0.01), torch.zeros(400_000, dtype=torch.float64)
    out = gaussian_noise(spec, x, (0, 1), torch.Generator().manual_seed(0))
    assert out.var().item() == pytest.approx(0.01, rel=0.02) and abs(out.mean().item()) < 1e-3
    assert torch.equal(out, gaussian_noise(spec, x, (0, 1), torch.Generator().manual_seed(0)))
    assert not torch.equal(out, gaussian_noise(spec, x, (0, 1), torch.Generator().manual_seed(1)))


# -- protocol ---------------------------------------------------------------------------------
def _problem(**evaluate: object) -> object:
    base = {"epochs": 30, "lr": 0.1, "seeds": [0, 1], "metrics": ["accuracy", {"kind": "cluster_min", "clusters": 2}]}
    spec = {"data": {"kind": "digits"}, "model": {"kind": "linear"}, "evaluate": base | evaluate}
    return Problem.model_validate(spec)


@pytest.fixture(scope="module")
def blobs() -> tuple[torch.Tensor, torch.Tensor, Dataset]:
    x_train, y_train = _blobs(40, 0)
    x_test, y_test = _blobs(200, 1)
    return x_train[:10], y_train[:10], Dataset("blobs", x_train, y_train, x_test, y_test, 2)


def test_protocol_linear_separable(blobs: tuple) -> None:
    x, y, data = blobs
    problem = _problem(models=[{"kind": "linear"}, {"kind": "mlp", "hidden": [8]}], corruptions=[{"kind": "noise"}])
    result = evaluate_distilled(x, y, data, problem, "cpu", progress=False)
    assert len(result["accuracy"]["values"]) == 2 * 2 and len(result["cluster_min"]["values"]) == 4
    assert min(result["per_model"]["0:linear"]["accuracy"]["values"]) >= 0.95
    assert all(0 <= v <= 1 for v in result["accuracy"]["values"] + result["corruptions"]["noise"]["values"])
    assert result["corruptions"]["noise"]["variance"] == 0.005
    assert result["cluster_min"]["clusters"] == 2 and len(result["cluster_min"]["cluster_accuracies"]) == 4
    assert list(result["per_model"]) == ["0:linear", "1:mlp"] and result["seeds"] == [0, 1]
    assert [m["kind"] for m in result["protocol"]["models"]] == ["linear", "mlp"]
    values = result["accuracy"]["values"]
    assert result["accuracy"]["mean"] == pytest.approx(np.mean(values))
    assert result["accuracy"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert evaluate_distilled(x, y, data, problem, "cpu", progress=False) == result  # deterministic


def test_protocol_soft_labels_single_seed(blobs: tuple) -> None:
    x, y, data = blobs
    problem = _problem(seeds=[3], optimizer="adam", lr=0.05, metrics=["accuracy"])
    result = evaluate_distilled(x, torch.nn.functional.one_hot(y, 2).float(), data, problem, "cpu", progress=False)
    assert result["accuracy"]["mean"] >= 0.95 and result["accuracy"]["std"] == 0.0
    assert result["protocol"]["models"] == [{"kind": "linear"}] and result["corruptions"] == {}


def test_protocol_rejects_bad_labels_and_flat_augmentation(blobs: tuple) -> None:
    x, y, data = blobs
    with pytest.raises(RunError, match="probability"):
        evaluate_distilled(x, torch.randn(len(x), 2), data, _problem(), "cpu", progress=False)
    with pytest.raises(SpecError, match="1-D or 2-D"):
        evaluate_distilled(x, y, data, _problem(augment=True), "cpu", progress=False)


def test_protocol_augmented_1d() -> None:
    x_train, y_train = _blobs(40, 0, (1, 8))
    x_test, y_test = _blobs(100, 1, (1, 8))
    data = Dataset("blobs1d", x_train, y_train, x_test, y_test, 2)
    problem = _problem(augment=True, epochs=5, seeds=[0], metrics=["accuracy"], corruptions=[{"kind": "blur"}])
    result = evaluate_distilled(x_train[:10], y_train[:10], data, problem, "cpu", progress=False)
    assert result["protocol"]["augment"] and result["accuracy"]["mean"] >= 0.9
    assert result == evaluate_distilled(x_train[:10], y_train[:10], data, problem, "cpu", progress=False)


def test_protocol_needs_a_model(blobs: tuple) -> None:
    x, y, data = blobs
    problem = Problem.model_validate({"data": {"kind": "digits"}})
    with pytest.raises(SpecError, match="no model"):
        evaluate_distilled(x, y, data, problem, "cpu", progress=False)


def test_more_clusters_than_test_samples_is_refused_at_validate(tmp_path) -> None:
    """cluster_min (asked for, or a default) with more clusters than the described test set: a finding before
    anything runs, not an error after distillation."""
    import ddspec
    from tests.test_data_checks import arrays, spec

    np.savez(tmp_path / "d.npz", **arrays())  # 8 test rows
    problem = spec({"kind": "npz", "path": str(tmp_path / "d.npz")})
    for metrics_ in ([], ["accuracy", "cluster_min"], [{"kind": "cluster_min", "clusters": 9}]):
        problem["evaluate"]["metrics"] = metrics_
        with pytest.raises(SpecError) as e:
            ddspec.compile(ddspec.load(problem))
        (finding,) = [f for f in e.value.findings if f.code == "METRIC_CLUSTERS"]
        assert finding.path == "evaluate.metrics" and "test set of data `npz` has 8 samples" in finding.message
        assert "clusters` to at most 8" in finding.fix
    problem["evaluate"]["metrics"] = [{"kind": "cluster_min", "clusters": 8}]
    assert ddspec.compile(ddspec.load(problem)).backend == "matching"
