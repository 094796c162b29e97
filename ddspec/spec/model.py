"""``model``: the model family M. Each kind checks the input shape it accepts and counts its
parameters and forward FLOPs analytically (for ``explain``'s estimates, without torch)."""

from __future__ import annotations

import itertools
import math
from typing import Literal

from pydantic import Field

from ddspec.registry import MODELS
from ddspec.spec.base import PositiveInt, SpecModel

Norm = Literal["none", "instance", "batch"]
Pooling = Literal["none", "avg", "max"]
Activation = Literal["relu", "leaky_relu", "tanh"]


class ModelBase(SpecModel):
    """Shape checks and cost counts shared by all model kinds."""

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        """None if the model accepts per-sample inputs of ``shape``, else the reason it does not."""
        return None

    def cost(self, shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
        """(parameters, forward FLOPs per sample, activation floats per sample)."""
        raise NotImplementedError


def _conv_cost(
    channels: int, spatial: list[int], width: int, depth: int, kernel: int, norm: str, pooling: str, k: int
) -> tuple[int, int, int]:
    params = flops = acts = 0
    cin = channels
    taps = kernel ** len(spatial)
    for _ in range(depth):
        positions = math.prod(spatial)
        params += taps * cin * width + width + (2 * width if norm != "none" else 0)
        flops += 2 * taps * cin * width * positions
        acts += 3 * width * positions
        cin = width
        if pooling != "none":
            spatial = [s // 2 for s in spatial]
    feat = width * math.prod(spatial)
    return params + feat * k + k, flops + 2 * feat * k, acts + feat + k


def _conv_check(shape: tuple[int, ...], ndim: int, depth: int, pooling: str, name: str) -> str | None:
    if len(shape) != ndim + 1:
        want = "C x H x W" if ndim == 2 else "C x L"
        return f"{name} takes inputs of shape {want}; the data has per-sample shape {'x'.join(map(str, shape))}"
    if pooling != "none" and min(shape[1:]) < 2**depth:
        return (
            f"{name} with depth {depth} halves the input {depth} times, but the data's spatial size "
            f"{'x'.join(map(str, shape[1:]))} is smaller than 2^{depth}={2**depth}"
        )
    return None


MODELS.base = ModelBase


@MODELS.register(builder="ddspec.components.models.networks:build_convnet", capabilities=("differentiable",))
class ConvNetSpec(ModelBase):
    """The standard DD ConvNet: depth x [conv3x3 → norm → activation → 2x2 pool], then a linear layer."""

    kind: Literal["convnet"] = "convnet"
    width: PositiveInt = 128
    depth: int = Field(3, ge=1, le=8)
    norm: Norm = "instance"
    pooling: Pooling = "avg"
    activation: Activation = "relu"

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        return _conv_check(shape, 2, self.depth, self.pooling, "convnet")

    def cost(self, shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
        return _conv_cost(shape[0], list(shape[1:]), self.width, self.depth, 3, self.norm, self.pooling, num_classes)


@MODELS.register(builder="ddspec.components.models.networks:build_convnet1d", capabilities=("differentiable",))
class ConvNet1dSpec(ModelBase):
    """1-D ConvNet: depth x [conv(kernel) → norm → activation → pool by 2], then a linear layer."""

    kind: Literal["convnet1d"] = "convnet1d"
    width: PositiveInt = 64
    depth: int = Field(3, ge=1, le=8)
    kernel_size: int = Field(3, ge=1, le=31)
    norm: Norm = "instance"
    pooling: Pooling = "avg"
    activation: Activation = "relu"

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        return _conv_check(shape, 1, self.depth, self.pooling, "convnet1d")

    def cost(self, shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
        return _conv_cost(
            shape[0], list(shape[1:]), self.width, self.depth, self.kernel_size, self.norm, self.pooling, num_classes
        )


def _dense_cost(sizes: list[int]) -> tuple[int, int, int]:
    params = sum(a * b + b for a, b in itertools.pairwise(sizes))
    return params, 2 * sum(a * b for a, b in itertools.pairwise(sizes)), sum(sizes)


@MODELS.register(builder="ddspec.components.models.networks:build_mlp", capabilities=("differentiable",))
class MLPSpec(ModelBase):
    """Multi-layer perceptron on the flattened input."""

    kind: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [128, 128], max_length=16)
    activation: Activation = "relu"

    def cost(self, shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
        return _dense_cost([math.prod(shape), *self.hidden, num_classes])


@MODELS.register(builder="ddspec.components.models.networks:build_linear", capabilities=("differentiable", "linear"))
class LinearSpec(ModelBase):
    """Linear (softmax-regression) model on the flattened input."""

    kind: Literal["linear"] = "linear"

    def cost(self, shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
        return _dense_cost([math.prod(shape), num_classes])


def default_model(shape: tuple[int, ...]) -> ModelBase:
    """The model used when the spec names none: ConvNet for C×H×W, 1-D ConvNet for C×L, MLP otherwise."""
    if len(shape) == 3:
        return ConvNetSpec()
    if len(shape) == 2:
        return ConvNet1dSpec()
    return MLPSpec()
