"""The ridge-head hypergradient against ground truth (float64): the closed form against the primal ridge
solution, interpolation, and the hypergradient against central finite differences at a fixed θ_K."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddspec.components.models.networks import Classifier
from ddspec.components.training.ridge_head import ridge_head, ridge_head_hypergradient
from ddspec.components.training.unroll import InnerData, InnerRecipe, init_buffers, run_steps, start_params

pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize(("n", "d"), [(6, 10), (30, 4)])
def test_kernel_form_equals_the_primal_ridge_solution(n, d) -> None:
    torch.manual_seed(0)
    phi, y, ridge = torch.randn(n, d), torch.softmax(torch.randn(n, 3), 1), 0.1
    weight, bias = ridge_head(phi, y, ridge)
    a = torch.cat([phi, torch.ones(n, 1)], 1)
    lam = ridge * (a * a).sum() / n  # tr(ΦΦᵀ)/n
    primal = torch.linalg.solve(a.T @ a + lam * torch.eye(d + 1), a.T @ y)
    assert torch.allclose(weight, primal[:-1].T, atol=1e-10)
    assert torch.allclose(bias, primal[-1], atol=1e-10)


def test_a_tiny_ridge_interpolates_the_synthetic_targets() -> None:
    torch.manual_seed(1)
    phi, y = torch.randn(5, 12), torch.eye(5)[:, :4]
    weight, bias = ridge_head(phi, y, 1e-10)
    assert torch.allclose(phi @ weight.T + bias, y, atol=1e-6)


def problem(steps: int):
    """A tiny 1-D conv Classifier, 6 synthetic samples with soft labels, the outer loss CE on a real batch."""
    torch.manual_seed(0)
    net = Classifier(nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.Tanh()), nn.Linear(32, 3))
    x = torch.randn(6, 1, 8, requires_grad=True)
    logits = torch.randn(6, 3, requires_grad=True)
    lrs = torch.full((max(steps, 1),), 0.1, requires_grad=True)
    xr, yr = torch.randn(20, 1, 8), torch.randint(0, 3, (20,))
    names = [n for n, _ in net.named_parameters()]

    def outer(params):
        return F.cross_entropy(functional_call(net, dict(zip(names, params)), (xr,)), yr)

    def data(x_, logits_):
        return InnerData(x_, torch.softmax(logits_, 1), lrs, [None] * steps, F.cross_entropy)

    return net, data, x, logits, outer, InnerRecipe("sgd", 0.9, 1e-3, steps)


def test_hypergradient_matches_finite_differences_at_the_trained_body() -> None:
    net, data, x, logits, outer, recipe = problem(steps=3)
    inner = data(x, logits)
    loss, (gx, gtargets, glr) = ridge_head_hypergradient(net, inner, recipe, outer, ridge=0.01, scale=3.0)
    (glogits,) = torch.autograd.grad(inner.targets, logits, gtargets)  # leaves() holds the soft labels
    assert torch.count_nonzero(glr) == 0  # the inner lrs are not differentiated (LR_NOT_LEARNABLE)
    # θ_K, trained without a graph, is what the ridge head is fitted on; finite differences hold it fixed
    names, params = start_params(net)
    theta_k, _ = run_steps(net, names, params, init_buffers(recipe, params), data(x, logits), recipe, 0, 3, False)
    frozen = InnerRecipe("sgd", 0.9, 1e-3, 0)

    def f(x_, logits_):
        leaves = x_.detach().requires_grad_(True), logits_.detach().requires_grad_(True)
        return ridge_head_hypergradient(net, data(*leaves), frozen, outer, 0.01, 3.0, theta_k)[0]

    assert f(x, logits) == pytest.approx(loss, rel=1e-12)
    gen = torch.Generator().manual_seed(3)
    dx, dl = torch.randn(x.shape, generator=gen), torch.randn(logits.shape, generator=gen)
    eps = 1e-6
    fd = (f(x + eps * dx, logits + eps * dl) - f(x - eps * dx, logits - eps * dl)) / (2 * eps)
    analytic = float((gx * dx).sum() + (glogits * dl).sum())
    assert analytic == pytest.approx(fd, rel=1e-6)
    assert float(gx.norm()) > 0 and float(glogits.norm()) > 0
