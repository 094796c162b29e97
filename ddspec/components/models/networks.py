"""Model builders for the ``model`` registry: the standard DD ConvNet (2-D and 1-D), MLP, linear.

Every model is a :class:`Classifier`: ``features`` maps inputs to a feature map, ``embed``
flattens it, ``head`` (a linear layer) maps the embedding to class logits. Parameter counts
equal the analytic ``spec.cost(shape, k)[0]`` of :mod:`ddspec.spec.model` (a test checks it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ddspec.errors import SpecError
from ddspec.spec.model import ConvNet1dSpec, ConvNetSpec, LinearSpec, MLPSpec


class Classifier(nn.Module):
    """logits(x) = head(embed(x)),  embed(x) = flatten(features(x))."""

    def __init__(self, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.head = head

    @property
    def embed_dim(self) -> int:
        return self.head.in_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01)
    return nn.Tanh()


def _norm(name: str, width: int, ndim: int) -> nn.Module:
    """instance: GroupNorm(width, width) — per-sample, per-channel normalization with affine (DC/DM)."""
    if name == "instance":
        return nn.GroupNorm(width, width, affine=True)
    if name == "batch":
        return nn.BatchNorm2d(width) if ndim == 2 else nn.BatchNorm1d(width)
    return nn.Identity()


def _pool(name: str, ndim: int) -> nn.Module:
    if name == "avg":
        return nn.AvgPool2d(2, 2) if ndim == 2 else nn.AvgPool1d(2, 2)
    if name == "max":
        return nn.MaxPool2d(2, 2) if ndim == 2 else nn.MaxPool1d(2, 2)
    return nn.Identity()


def _check(spec: Any, input_shape: tuple[int, ...]) -> None:
    reason = spec.check_input(tuple(input_shape))
    if reason is not None:
        raise SpecError.one(
            "MODEL_INPUT_SHAPE", "model", reason,
            "pick a model kind that fits the data's shape, or lower depth / disable pooling",
        )


def _convnet(spec: ConvNetSpec | ConvNet1dSpec, input_shape: tuple[int, ...], num_classes: int, kernel: int) -> Classifier:
    """depth x [conv(kernel, 'same' padding) → norm → activation → pool 2], then a linear head."""
    _check(spec, input_shape)
    ndim = len(input_shape) - 1
    conv = nn.Conv2d if ndim == 2 else nn.Conv1d
    layers: list[nn.Module] = []
    channels, spatial = input_shape[0], list(input_shape[1:])
    for _ in range(spec.depth):
        layers += [
            conv(channels, spec.width, kernel, padding="same"),
            _norm(spec.norm, spec.width, ndim),
            _activation(spec.activation),
            _pool(spec.pooling, ndim),
        ]
        channels = spec.width
        if spec.pooling != "none":
            spatial = [s // 2 for s in spatial]
    return Classifier(nn.Sequential(*layers), nn.Linear(spec.width * math.prod(spatial), num_classes))


def build_convnet(spec: ConvNetSpec, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """The standard DD ConvNet on C x H x W inputs (3x3 convolutions, 2x2 pooling)."""
    return _convnet(spec, input_shape, num_classes, 3)


def build_convnet1d(spec: ConvNet1dSpec, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """The 1-D ConvNet on C x L inputs (convolutions of ``spec.kernel_size``, pooling by 2)."""
    return _convnet(spec, input_shape, num_classes, spec.kernel_size)


def _dense(input_shape: tuple[int, ...], hidden: list[int], activation: str, num_classes: int) -> Classifier:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), _activation(activation)]
        width = h
    return Classifier(nn.Sequential(*layers), nn.Linear(width, num_classes))


def build_mlp(spec: MLPSpec, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """flatten → [linear → activation] per hidden width → linear head."""
    _check(spec, input_shape)
    return _dense(input_shape, spec.hidden, spec.activation, num_classes)


def build_linear(spec: LinearSpec, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """flatten → linear head (softmax regression on the raw input)."""
    _check(spec, input_shape)
    return _dense(input_shape, [], "relu", num_classes)
