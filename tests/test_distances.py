"""Matching distances against hand computations; gradchecks in float64."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from ddspec.components.objectives.distances import feature_mean, gradient_match, median_bandwidths, mmd2
from ddspec.registry import DISTANCES
from ddspec.spec.distance import FeatureMeanDistance, GradientMatchDistance, MMDDistance, dc_schedule


def grads(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3, 3, 3), (4,), (4,), (5, 4, 2), (10, 20), (10,)]
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]


def test_gradient_match_identical_is_zero() -> None:
    g = grads()
    assert float(gradient_match(g, [t.clone() for t in g])) == pytest.approx(0.0, abs=1e-4)  # eps terms only


def test_gradient_match_negated_is_two_per_output_row() -> None:
    g = grads()
    rows = 4 + 5 + 10  # output channels of the tensors with ndim >= 2
    assert float(gradient_match(g, [-t for t in g])) == pytest.approx(2 * rows, abs=1e-5)


def test_gradient_match_hand_computed_2x2() -> None:
    real = [torch.tensor([[1.0, 0.0], [3.0, 4.0]], dtype=torch.float64)]
    syn = [torch.tensor([[1.0, 1.0], [4.0, 3.0]], dtype=torch.float64)]
    # row 0: cos = 1 / (1 · √2); row 1: cos = (12 + 12) / (5 · 5) = 24/25.
    expected = (1 - 1 / (math.sqrt(2) + 1e-6)) + (1 - 24 / (25 + 1e-6))
    assert float(gradient_match(real, syn)) == pytest.approx(expected, abs=1e-12)


def test_gradient_match_skips_biases_unless_asked() -> None:
    w = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    bias_real = torch.tensor([1.0, 0.0], dtype=torch.float64)
    bias_syn = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert float(gradient_match([w, bias_real], [w, bias_syn])) == pytest.approx(0.0, abs=1e-6)
    # Not skipped: the bias vector is one row, cos = 0, contributes 1.
    assert float(gradient_match([w, bias_real], [w, bias_syn], skip_bias_and_norm=False)) == pytest.approx(1.0, abs=1e-6)
    assert float(gradient_match([bias_real], [bias_syn])) == 0.0


def test_gradient_match_zero_syn_gradient_is_finite() -> None:
    real = [torch.randn(3, 4)]
    syn = [torch.zeros(3, 4, requires_grad=True)]
    d = gradient_match(real, syn)
    d.backward()
    assert float(d.detach()) == pytest.approx(3.0) and torch.isfinite(syn[0].grad).all()


def test_gradient_match_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError):
        gradient_match([torch.ones(2, 2)], [])
    with pytest.raises(ValueError):
        gradient_match([torch.ones(2, 2)], [torch.ones(2, 3)])


def test_gradient_match_gradcheck() -> None:
    real = [t.detach() for t in grads(1)]
    syn = tuple(t.requires_grad_() for t in grads(2))
    assert torch.autograd.gradcheck(lambda *s: gradient_match(real, s), syn)


def test_feature_mean_hand_case() -> None:
    real = torch.tensor([[0.0, 2.0], [2.0, 4.0]])  # mean (1, 3)
    syn = torch.tensor([[4.0, -1.0]])
    assert float(feature_mean(real, syn)) == pytest.approx(3**2 + 4**2)
    # Feature maps are flattened per sample.
    assert float(feature_mean(real.view(2, 1, 2), syn.view(1, 2, 1))) == pytest.approx(25.0)


def test_feature_mean_gradcheck() -> None:
    real = torch.randn(6, 5, dtype=torch.float64)
    syn = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: feature_mean(real, s), (syn,))


def test_mmd2_identical_sets_is_zero() -> None:
    x = torch.randn(20, 7, dtype=torch.float64)
    assert float(mmd2(x, x.clone())) == pytest.approx(0.0, abs=1e-12)
    assert float(mmd2(x, x.clone(), [0.5, 3.0])) == pytest.approx(0.0, abs=1e-12)


def test_mmd2_hand_computed_1d_single_bandwidth() -> None:
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[2.0]], dtype=torch.float64)
    # k(a, b) = exp(−(a − b)²/2): kxx mean (2 + 2e^{−1/2})/4, kyy 1, kxy mean (e^{−2} + e^{−1/2})/2.
    expected = (1 + math.exp(-0.5)) / 2 + 1 - (math.exp(-2) + math.exp(-0.5))
    assert float(mmd2(x, y, [1.0])) == pytest.approx(expected, abs=1e-12)
    # Two bandwidths: the kernel is the sum, so MMD² is the sum of the single-bandwidth values.
    assert float(mmd2(x, y, [1.0, 2.0])) == pytest.approx(float(mmd2(x, y, [1.0]) + mmd2(x, y, [2.0])), abs=1e-12)


def test_mmd2_positive_for_different_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 3, generator=g)
    same = torch.randn(100, 3, generator=g)
    shifted = torch.randn(100, 3, generator=g) + 1.0
    assert float(mmd2(x, shifted)) > 0
    assert float(mmd2(x, shifted)) > 5 * float(mmd2(x, same))


def test_median_bandwidths() -> None:
    z = torch.tensor([[0.0], [1.0], [3.0]])  # pairwise distances 1, 3, 2 → median 2
    assert torch.allclose(median_bandwidths(z), torch.tensor([1.0, 2.0, 4.0]))
    assert torch.allclose(median_bandwidths(torch.zeros(4, 2)), torch.tensor([0.5, 1.0, 2.0]))
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0]])
    assert float(mmd2(x, y)) == pytest.approx(float(mmd2(x, y, [1.0, 2.0, 4.0])), abs=1e-6)


def test_mmd2_gradcheck() -> None:
    real = torch.randn(5, 3, dtype=torch.float64)
    syn = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: mmd2(real, s, [0.7, 2.0]), (syn,))


def test_mmd2_median_heuristic_bandwidth_is_detached() -> None:
    real = torch.randn(5, 3, dtype=torch.float64)
    syn = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(mmd2(real, syn), syn)
    sigma = median_bandwidths(torch.cat([real, syn.detach()])).tolist()
    (fixed,) = torch.autograd.grad(mmd2(real, syn, sigma), syn)
    assert torch.allclose(grad, fixed)


# -- the registered builders and the spec classes' defaults -----------------------------------------------------
def test_builders_return_the_surrogates_of_the_spec() -> None:
    """Embedding surrogates: a class's features in, the distance out; feature_mean by hand, mmd with the spec's
    bandwidths; gradient_match honours skip_bias_and_norm (1-D gradients opposite: 0 skipped, 2 counted). Every
    distance builder takes (spec, ctx); the surrogates ignore the run context."""
    real, syn = torch.tensor([[0.0, 2.0], [2.0, 2.0]]), torch.tensor([[4.0, 0.0]])
    assert float(DISTANCES.build(FeatureMeanDistance(), None)(real, syn)) == pytest.approx(9.0 + 4.0)
    bandwidths = MMDDistance(bandwidths=[0.5, 3.0])
    assert float(DISTANCES.build(bandwidths, None)(real, syn)) == pytest.approx(float(mmd2(real, syn, [0.5, 3.0])))
    w, b = torch.ones(2, 2), torch.tensor([1.0, -1.0])
    assert float(DISTANCES.build(GradientMatchDistance(), None)([w, b], [w, -b])) == pytest.approx(0.0, abs=1e-5)
    assert float(DISTANCES.build(GradientMatchDistance(skip_bias_and_norm=False), None)([w, b], [w, -b])) == \
        pytest.approx(2.0, abs=1e-5)


def test_every_distance_builder_takes_the_spec_and_the_run_context() -> None:
    """One registry, one builder signature: the backends call ``DISTANCES.build(spec, ctx)`` for every kind."""
    built = [e for e in DISTANCES.entries() if e.builder is not None]
    assert {"gradient_match", "feature_mean", "mmd", "trajectory"} <= {e.kind for e in built}
    for entry in built:
        params = list(inspect.signature(entry.load_builder()).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in positional if p.default is p.empty]
        assert len(required) == 2 and len(positional) >= 2, f"{entry.kind}: {params}"


def test_reference_lr_and_schedule_are_class_facts() -> None:
    assert GradientMatchDistance.reference_lr == 0.1
    assert FeatureMeanDistance.reference_lr == MMDDistance.reference_lr == 1.0
    assert GradientMatchDistance.schedule(10) == dc_schedule(10) == (10, 50)
    assert FeatureMeanDistance.schedule(10) == MMDDistance.schedule(50) == (1, 1)


def test_trajectory_doc_names_the_expert_cache_the_code_writes() -> None:
    from ddspec.components.training.experts import EXPERTS
    from ddspec.spec.distance import TrajectoryDistance

    doc = TrajectoryDistance.__doc__ or ""
    assert f"``{EXPERTS}``" in doc and "experts.pt`" not in doc
