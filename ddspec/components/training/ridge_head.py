"""The ridge-head hypergradient: the network's last layer fitted in closed form (FRePo's neural feature
regression, Zhou et al. 2022).

The inner procedure O trains θ for K steps on D̂ = (x, Y) (without a graph: θ_K is treated as a constant
of D̂), then replaces the linear head by the ridge solution on the synthetic set's features. With
φ̃(x) = [φ_θK(x), 1] (the embedding and a constant for the bias) and Φ = φ̃(x) ∈ R^{n×(d+1)}:

    W̃ = argmin_W ‖Φ W − Y‖² + λ̃‖W‖² = Φᵀ (Φ Φᵀ + λ̃ I)⁻¹ Y,   λ̃ = λ · tr(Φ Φᵀ) / n

(the kernel form: an n × n solve). The head's weight is W̃[:d]ᵀ and its bias W̃[d]; Y = s · P holds the
targets as probability rows P (one-hot for fixed labels) times the logit scale s, so that the head's
logits have the range of a trained classifier's (s = 1 caps the logit gaps near 1, and the cross-entropy
near log C). The outer loss L is evaluated at θ_K with that head, so
dL/dD̂ flows through W̃ and through φ_θK(x): exact for the last layer, and the first-order
approximation of FRePo for the body. The inner lrs receive no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ddspec.components.models.kernel import kernel_ridge_solve
from ddspec.components.objectives.targets import ClassTargets
from ddspec.components.training.unroll import (
    Hypergradient,
    InnerData,
    InnerRecipe,
    Outer,
    Tensors,
    grads_or_zeros,
    init_buffers,
    run_steps,
    start_params,
)

HEAD = ("head.weight", "head.bias")


def ridge_head(features: torch.Tensor, targets: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight C × d, bias C) of argmin ‖φ W + b − Y‖² + λ̃(‖W‖² + b²), λ̃ = ``ridge`` · tr(ΦΦᵀ)/n."""
    phi = torch.cat([features, torch.ones_like(features[:, :1])], dim=1)
    coef = kernel_ridge_solve(phi, targets, ridge, relative=True)
    return coef[:-1].T, coef[-1]


def ridge_head_hypergradient(model: nn.Module, data: InnerData, recipe: InnerRecipe, outer: Outer, ridge: float,
                             scale: float, params0: Sequence[torch.Tensor] | None = None) -> tuple[float, Tensors]:
    """(L(θ_K with the ridge head), dL/d :meth:`InnerData.leaves`); see the module docstring."""
    names, params = start_params(model, params0)
    params, _ = run_steps(model, names, params, init_buffers(recipe, params), data, recipe, 0, recipe.steps, False)
    body = {n[len("features."):]: p.detach() for n, p in zip(names, params) if n.startswith("features.")}
    features = functional_call(model.features, body, (data.x,)).flatten(1)
    rows = ClassTargets(model.head.out_features).rows(data.targets).to(features.dtype)  # class targets only
    weight, bias = ridge_head(features, scale * rows, ridge)
    head = dict(zip(HEAD, (weight, bias)))
    loss = outer([head.get(n, p.detach()) for n, p in zip(names, params)])
    return float(loss.detach()), grads_or_zeros(loss, data.leaves())


def ridge_head_builder(spec: Any, recipe: InnerRecipe) -> Hypergradient:
    """The builder of hypergradient ``ridge_head``: :func:`ridge_head_hypergradient` with the spec's λ and s."""
    return lambda model, data, outer, params0: ridge_head_hypergradient(model, data, recipe, outer, spec.ridge,
                                                                        spec.target_scale, params0)
