"""Model builders: parameter counts equal the analytic cost, shapes, embeddings, instance norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddspec.components.models.networks import Classifier, build_convnet, build_convnet1d
from ddspec.errors import SpecError
from ddspec.registry import MODELS
from ddspec.spec.model import ConvNet1dSpec, ConvNetSpec, LinearSpec, MLPSpec

CASES = [
    (ConvNetSpec(), (3, 32, 32), 10),
    (ConvNetSpec(width=16, depth=2, norm="batch", pooling="max", activation="tanh"), (1, 28, 28), 10),
    (ConvNetSpec(width=8, depth=2, norm="none", pooling="none", activation="leaky_relu"), (1, 8, 8), 10),
    (ConvNetSpec(width=8, depth=3), (1, 9, 13), 4),
    (ConvNet1dSpec(), (1, 40), 10),
    (ConvNet1dSpec(width=16, depth=2, kernel_size=5, norm="batch", pooling="max"), (2, 41), 3),
    (ConvNet1dSpec(width=8, depth=1, kernel_size=4, norm="none", pooling="none"), (1, 40), 10),
    (MLPSpec(), (1, 8, 8), 10),
    (MLPSpec(hidden=[7]), (40,), 2),
    (LinearSpec(), (1, 8, 8), 10),
]
# Even 1-D kernels use padding "same" (asymmetric); torch warns that it pads a copy of the input.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def build(spec, shape: tuple[int, ...], k: int) -> Classifier:
    return MODELS.build(spec, shape, k)


@pytest.mark.parametrize(("spec", "shape", "k"), CASES)
def test_parameter_count_matches_analytic_cost(spec, shape, k) -> None:
    model = build(spec, shape, k)
    assert sum(p.numel() for p in model.parameters()) == spec.cost(shape, k)[0]


@pytest.mark.parametrize(("spec", "shape", "k"), CASES)
def test_forward_and_embed_shapes(spec, shape, k) -> None:
    assert spec.check_input(shape) is None
    model = build(spec, shape, k)
    x = torch.randn(3, *shape)
    assert isinstance(model.head, nn.Linear)
    assert model(x).shape == (3, k)
    emb = model.embed(x)
    assert emb.shape == (3, model.embed_dim)
    assert torch.allclose(model.head(emb), model(x))


def test_convnet_reference_embedding_dims() -> None:
    # DC's ConvNet on 32x32 RGB: 128 channels x 4 x 4 after three poolings; MNIST-1D: 64 x 5.
    assert build(ConvNetSpec(), (3, 32, 32), 10).embed_dim == 128 * 4 * 4
    assert build(ConvNetSpec(), (1, 28, 28), 10).embed_dim == 128 * 3 * 3
    assert build(ConvNet1dSpec(width=64), (1, 40), 10).embed_dim == 64 * 5
    assert build(MLPSpec(hidden=[32, 16]), (1, 8, 8), 10).embed_dim == 16
    assert build(LinearSpec(), (1, 8, 8), 10).embed_dim == 64


def test_convnet_layer_structure() -> None:
    model = build_convnet(ConvNetSpec(width=8, depth=2), (1, 8, 8), 10)
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, nn.GroupNorm, nn.ReLU, nn.AvgPool2d] * 2
    conv = model.features[0]
    assert conv.kernel_size == (3, 3) and conv.padding == "same" and conv.out_channels == 8
    norm = model.features[1]
    assert norm.num_groups == norm.num_channels == 8 and norm.affine


def test_instance_norm_is_per_sample_per_channel_normalization() -> None:
    torch.manual_seed(0)
    model = build_convnet(ConvNetSpec(width=4, depth=1), (2, 6, 6), 3)
    norm = model.features[1]
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    h = torch.randn(5, 4, 6, 6) * 3 + 2
    mean = h.mean(dim=(2, 3), keepdim=True)
    var = h.var(dim=(2, 3), unbiased=False, keepdim=True)
    expected = (h - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(1, 4, 1, 1) + norm.bias.view(1, 4, 1, 1)
    assert torch.allclose(norm(h), expected, atol=1e-5)
    # Per sample: the output of one sample does not depend on the others.
    assert torch.allclose(norm(h[:1]), norm(h)[:1], atol=1e-6)


def test_convnet1d_kernel_and_norm() -> None:
    model = build_convnet1d(ConvNet1dSpec(width=6, depth=2, kernel_size=5, norm="batch"), (1, 40), 10)
    conv, norm = model.features[0], model.features[1]
    assert isinstance(conv, nn.Conv1d) and conv.kernel_size == (5,)
    assert isinstance(norm, nn.BatchNorm1d)
    assert model.features(torch.randn(2, 1, 40)).shape == (2, 6, 10)


def test_activations() -> None:
    leaky = build_convnet(ConvNetSpec(width=2, depth=1, activation="leaky_relu"), (1, 4, 4), 2).features[2]
    assert isinstance(leaky, nn.LeakyReLU) and leaky.negative_slope == 0.01
    tanh = build_convnet1d(ConvNet1dSpec(width=2, depth=1, activation="tanh"), (1, 4), 2).features[2]
    assert isinstance(tanh, nn.Tanh)


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        (ConvNetSpec(depth=3), (1, 7, 7)),  # 7 < 2^3: pooling would empty the map
        (ConvNetSpec(), (40,)),  # wrong rank
        (ConvNet1dSpec(), (1, 8, 8)),
        (ConvNet1dSpec(depth=4), (1, 15)),
    ],
)
def test_check_input_rejects_and_builder_raises_spec_error(spec, shape) -> None:
    assert spec.check_input(shape) is not None
    with pytest.raises(SpecError) as info:
        build(spec, shape, 10)
    assert info.value.findings[0].code == "MODEL_INPUT_SHAPE"


def test_check_input_boundary_builds_and_runs() -> None:
    # Exactly 2^depth: the last feature map is 1 x 1.
    spec = ConvNetSpec(width=4, depth=3)
    assert spec.check_input((1, 8, 8)) is None
    assert build(spec, (1, 8, 8), 2)(torch.randn(2, 1, 8, 8)).shape == (2, 2)
    # Without pooling any spatial size works.
    spec = ConvNetSpec(width=4, depth=3, pooling="none")
    assert spec.check_input((1, 3, 3)) is None
    assert build(spec, (1, 3, 3), 2).embed_dim == 4 * 9
