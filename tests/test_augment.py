"""DSA augmentation: Siamese draws, identity cases, known shifts, differentiability."""

from __future__ import annotations

import pytest
import torch

from ddspec.components.training.augment import Augment
from ddspec.spec.optimize import AugmentationSpec

GEOMETRIC = AugmentationSpec(enabled=True, ops=["crop", "shift", "scale", "rotate"])


def test_same_seed_same_transformation_for_batches_of_different_size() -> None:
    torch.manual_seed(0)
    for ndim, shape in ((2, (3, 12, 10)), (1, (2, 40))):
        aug = Augment(GEOMETRIC, ndim)
        real = torch.randn(7, *shape)
        syn = real[[4, 1]].clone()  # the same samples inside a smaller batch
        out_real, out_syn = aug(real, seed=123), aug(syn, seed=123)
        assert torch.allclose(out_real[[4, 1]], out_syn, atol=1e-6)
        assert not torch.allclose(out_real, real, atol=1e-3)
        # One draw per call: the same sample twice in a batch is transformed identically.
        twice = aug(torch.stack([real[0], real[0]]), seed=5)
        assert torch.equal(twice[0], twice[1])


def test_same_seed_reproducible_including_noise_and_different_seeds_differ() -> None:
    aug = Augment(AugmentationSpec(enabled=True), 2)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(aug(x, seed=7), aug(x, seed=7))
    assert not torch.allclose(aug(x, seed=7), aug(x, seed=8), atol=1e-3)
    assert aug.params(7) != aug.params(8)


def test_ops_are_filtered_by_dimension_and_keep_spec_order() -> None:
    spec = AugmentationSpec(enabled=True, ops=["noise", "rotate", "shift", "scale", "crop"])
    assert Augment(spec, 2).ops == ["noise", "rotate", "scale", "crop"]
    assert Augment(spec, 1).ops == ["noise", "shift", "scale"]
    with pytest.raises(ValueError):
        Augment(spec, 3)


def test_drawn_parameters_stay_within_bounds() -> None:
    spec = AugmentationSpec(enabled=True, crop=0.1, scale=0.2, rotate=10.0)
    aug = Augment(spec, 2)
    for seed in range(50):
        p = dict(aug.params(seed))
        assert all(abs(t) <= 0.1 for t in p["crop"])
        assert 0.8 <= p["scale"][0] <= 1.2
        assert abs(p["rotate"][0]) <= 10.0


def test_disabled_is_identity() -> None:
    x = torch.randn(3, 1, 8, 8)
    assert Augment(AugmentationSpec(enabled=False), 2)(x, seed=1) is x


@pytest.mark.parametrize(("ndim", "shape"), [(2, (2, 3, 9, 7)), (1, (2, 3, 11))])
def test_zero_shift_unit_scale_zero_rotation_is_identity(ndim, shape) -> None:
    spec = AugmentationSpec(enabled=True, ops=["crop", "shift", "scale", "rotate"], crop=0, scale=0, rotate=0)
    x = torch.randn(*shape)
    assert torch.allclose(Augment(spec, ndim)(x, seed=3), x, atol=1e-6)


def test_1d_shift_moves_a_bump_by_the_drawn_amount() -> None:
    length = 40
    aug = Augment(AugmentationSpec(enabled=True, ops=["shift"], crop=0.125), 1)
    pos = torch.arange(length, dtype=torch.float64)
    bump = torch.exp(-0.5 * (pos - 18) ** 2).view(1, 1, length)
    for seed in range(5):
        (shift,) = dict(aug.params(seed))["shift"]
        out = aug(bump, seed)
        centre = (out * pos).sum() / out.sum()
        assert abs(float(centre) - (18 + shift * length)) < 1e-6


def test_2d_crop_integer_shift_is_exact_translation() -> None:
    aug = Augment(AugmentationSpec(enabled=True, ops=["crop"], crop=0.25), 2)
    seed = next(s for s in range(1000) if all(abs(t) > 0.05 for t in dict(aug.params(s))["crop"]))
    tx, ty = dict(aug.params(seed))["crop"]
    img = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    img[0, 0, 7, 5] = 1.0
    out = aug(img, seed)[0, 0]
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    rows, cols = rows.double(), cols.double()
    assert float((out * cols).sum() / out.sum()) == pytest.approx(5 + tx * 16, abs=1e-6)
    assert float((out * rows).sum() / out.sum()) == pytest.approx(7 + ty * 16, abs=1e-6)


def test_rotation_by_90_degrees_on_square_image() -> None:
    spec = AugmentationSpec(enabled=True, ops=["rotate"], rotate=90)
    aug = Augment(spec, 2)
    img = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    a = aug.matrix("rotate", (90.0,), torch.Size([6, 6]))
    assert torch.allclose(a[:2, :2], torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64), atol=1e-12)
    # A 90° rotation maps pixel centres onto pixel centres: a permutation of the pixels.
    out = aug.warp(img, a)
    assert torch.allclose(torch.sort(out.flatten()).values, torch.sort(img.flatten()).values, atol=1e-9)


def test_scale_samples_a_ramp_at_the_scaled_positions() -> None:
    # Content scaled by f about the centre m: out[p] = x(m + (p − m) / f); exact for a linear signal.
    length = 32
    m = (length - 1) / 2
    aug = Augment(AugmentationSpec(enabled=True, ops=["scale"], scale=0.3), 1)
    pos = torch.arange(length, dtype=torch.float64)
    ramp = (2 * pos + 1).view(1, 1, length)
    for seed in range(4):
        (f,) = dict(aug.params(seed))["scale"]
        source = m + (pos - m) / f
        inside = (source >= 0) & (source <= length - 1)
        out = aug(ramp, seed).flatten()
        assert torch.allclose(out[inside], 2 * source[inside] + 1, atol=1e-9)


def test_noise_has_requested_std() -> None:
    aug = Augment(AugmentationSpec(enabled=True, ops=["noise"], noise=0.5), 2)
    x = torch.zeros(64, 1, 16, 16)
    noise = aug(x, seed=0)
    assert float(noise.std()) == pytest.approx(0.5, rel=0.05)
    assert not torch.allclose(noise[0], noise[1])


@pytest.mark.parametrize(("op", "ndim"), [("crop", 2), ("scale", 2), ("rotate", 2), ("shift", 1), ("scale", 1)])
def test_gradcheck_each_geometric_op(op, ndim) -> None:
    aug = Augment(AugmentationSpec(enabled=True, ops=[op]), ndim)
    shape = (2, 2, 5, 4) if ndim == 2 else (2, 2, 9)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: aug(t, seed=4), (x,))


def test_gradient_flows_through_full_pipeline() -> None:
    aug = Augment(AugmentationSpec(enabled=True), 2)
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    aug(x, seed=2).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_composition_follows_spec_order() -> None:
    # Content position c → shift → scale about the centre m: m + f (c + t L − m); scale first would give
    # m + f (c − m) + t L.
    length, c = 64, 30.0
    m = (length - 1) / 2
    pos = torch.arange(length, dtype=torch.float64)
    x = torch.exp(-0.5 * ((pos - c) / 2) ** 2).view(1, 1, length)
    aug = Augment(AugmentationSpec(enabled=True, ops=["shift", "scale"], crop=0.1, scale=0.3), 1)
    seed = next(s for s in range(1000) if abs(aug.params(s)[0][1][0] * (aug.params(s)[1][1][0] - 1)) * length > 1)
    (t,), (f,) = (values for _, values in aug.params(seed))
    out = aug(x, seed)
    centre = float((out * pos).sum() / out.sum())
    assert centre == pytest.approx(m + f * (c + t * length - m), abs=1e-2)
    assert abs(centre - (m + f * (c - m) + t * length)) > 0.5
