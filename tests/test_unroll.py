"""Hypergradients through training against ground truth (float64): the two engines agree, finite
differences, truncation and checkpointing, and the implicit hypergradient on a strongly convex problem."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddspec.components.training.implicit import conjugate_gradient, implicit_hypergradient, neumann
from ddspec.components.training.unroll import (
    InnerData,
    InnerRecipe,
    checkpointed_hypergradient,
    inner_step,
    unroll,
    unrolled_hypergradient,
)
from ddspec.registry import HYPERGRADIENTS
from ddspec.spec.optimize import ImplicitHypergradient, UnrolledHypergradient

K = 5


pytestmark = pytest.mark.usefixtures("float64")


def problem(optimizer: str, momentum: float, seed: int = 0, soft: bool = True):
    """A tiny conv net, 6 synthetic 1-D samples (soft labels from logits), per-step lrs from log-lrs,
    mini-batches on some steps, and the outer loss CE on a fixed real batch."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3))
    x = torch.randn(6, 1, 8, requires_grad=True)
    logits = torch.randn(6, 3, requires_grad=True)
    log_lr = torch.full((K,), -2.0, requires_grad=True)
    xr, yr = torch.randn(20, 1, 8), torch.randint(0, 3, (20,))
    batches = [None, torch.tensor([0, 2, 4]), None, torch.tensor([1, 3, 5]), None]
    targets = torch.softmax(logits, 1) if soft else torch.arange(6) % 3
    data = InnerData(x, targets, log_lr.exp(), batches, F.cross_entropy)
    names = [n for n, _ in net.named_parameters()]

    def outer(params):
        return F.cross_entropy(functional_call(net, dict(zip(names, params)), (xr,)), yr)

    return net, data, InnerRecipe(optimizer, momentum, 1e-3, K), outer, (x, logits, log_lr)


def rel(a, b) -> float:
    return max(float((x - y).norm() / y.norm()) for x, y in zip(a, b))


INNER = [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0)]


@pytest.mark.parametrize(("optimizer", "momentum"), INNER)
def test_engines_give_the_same_hypergradient(optimizer, momentum) -> None:
    net, data, recipe, outer, _ = problem(optimizer, momentum)
    loss_f, g_f = unrolled_hypergradient(net, data, recipe, outer, "torch_func")
    loss_h, g_h = unrolled_hypergradient(net, data, recipe, outer, "higher")
    assert loss_f == pytest.approx(loss_h, rel=1e-12)
    assert len(g_f) == 3 and all(g.norm() > 0 for g in g_f)  # x, soft labels, lrs all get gradients
    assert rel(g_f, g_h) <= 1e-5


@pytest.mark.parametrize(("optimizer", "momentum"), INNER)
def test_truncated_engines_agree_and_differ_from_the_full_unroll(optimizer, momentum) -> None:
    net, data, recipe, outer, _ = problem(optimizer, momentum)
    _, full = unrolled_hypergradient(net, data, recipe, outer)
    _, g_f = unrolled_hypergradient(net, data, recipe, outer, "torch_func", track_from=2)
    _, g_h = unrolled_hypergradient(net, data, recipe, outer, "higher", track_from=2)
    assert rel(g_f, g_h) <= 1e-5
    assert rel(g_f, full) > 1e-3
    # lrs of the untracked steps get no gradient; the tracked ones do
    assert torch.all(g_f[2][:2] == 0) and torch.all(g_f[2][2:] != 0)


@pytest.mark.parametrize(("optimizer", "momentum"), INNER)
@pytest.mark.parametrize("every", [1, 2, 3, K])
def test_checkpointing_gives_the_plain_hypergradient(optimizer, momentum, every) -> None:
    net, data, recipe, outer, _ = problem(optimizer, momentum)
    for track_from in (0, 2):
        loss, plain = unrolled_hypergradient(net, data, recipe, outer, track_from=track_from)
        loss_c, ckpt = checkpointed_hypergradient(net, data, recipe, outer, every, track_from=track_from)
        assert loss_c == pytest.approx(loss, rel=1e-12)
        assert rel(ckpt, plain) <= 1e-10


@pytest.mark.parametrize("spec", [UnrolledHypergradient(truncate=2), UnrolledHypergradient(truncate=3, checkpoint_every=2),
                                  UnrolledHypergradient(engine="higher"), ImplicitHypergradient(iterations=7)])
def test_registered_builders_run_the_declared_hypergradient(spec) -> None:
    net, data, recipe, outer, _ = problem("sgd", 0.9)
    loss, grads = HYPERGRADIENTS.build(spec, recipe)(net, data, outer, None)
    if spec.kind == "implicit":
        expected = implicit_hypergradient(net, data, recipe, outer, "cg", 7)
    else:
        expected = unrolled_hypergradient(net, data, recipe, outer, spec.engine, K - (spec.truncate or K))
    assert loss == expected[0] and rel(grads, expected[1]) <= 1e-10


def test_truncation_to_all_steps_is_the_plain_unroll() -> None:
    net, data, recipe, outer, _ = problem("sgd", 0.9)
    _, plain = unrolled_hypergradient(net, data, recipe, outer)
    _, zero = unrolled_hypergradient(net, data, recipe, outer, track_from=0)
    assert rel(zero, plain) == 0.0


@pytest.mark.parametrize(("optimizer", "momentum"), INNER)
def test_unrolled_hypergradient_matches_finite_differences(optimizer, momentum) -> None:
    net, data, recipe, outer, (x, logits, log_lr) = problem(optimizer, momentum)
    leaves = (x, logits, log_lr)
    _, (gx, gt, glr) = unrolled_hypergradient(net, data, recipe, outer)
    # chain rule to the leaves (the backend does this with autograd.backward)
    grads = torch.autograd.grad([data.x, data.targets, data.lrs], leaves, [gx, gt, glr])

    def loss_at(x_, logits_, log_lr_):
        d = InnerData(x_, torch.softmax(logits_, 1), log_lr_.exp(), data.batches, data.loss)
        return float(outer(unroll(net, d, recipe)).detach())

    eps = 1e-6
    for i, leaf in enumerate(leaves):
        direction = torch.randn_like(leaf)
        plus = [v.detach() + (eps * direction if j == i else 0) for j, v in enumerate(leaves)]
        minus = [v.detach() - (eps * direction if j == i else 0) for j, v in enumerate(leaves)]
        fd = (loss_at(*plus) - loss_at(*minus)) / (2 * eps)
        assert float((grads[i] * direction).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_sgd_and_adam_steps_by_hand() -> None:
    recipe = InnerRecipe("sgd", 0.5, 0.1, 2)
    p, g, b = [torch.tensor([1.0])], [torch.tensor([2.0])], [torch.tensor([4.0])]
    new, buf = inner_step(recipe, p, b, g, torch.tensor(0.1), 0)
    assert buf[0].item() == pytest.approx(0.5 * 4 + 2 + 0.1 * 1)  # μ b + g + λ θ = 4.1
    assert new[0].item() == pytest.approx(1 - 0.1 * 4.1)
    adam = InnerRecipe("adam", 0.0, 0.0, 1)
    new, (m, v) = inner_step(adam, p, [torch.zeros(1), torch.zeros(1)], g, torch.tensor(0.1), 0)
    assert m.item() == pytest.approx(0.2) and v.item() == pytest.approx(0.004)
    # first Adam step: θ − lr·√(1−β2)/(1−β1) · m/(√v + ε) = θ − lr · sign(g) (up to ε)
    assert new[0].item() == pytest.approx(1 - 0.1, rel=1e-6)


def test_implicit_hypergradient_approaches_the_unrolled_one_on_a_strongly_convex_problem() -> None:
    """L2-regularized softmax regression: θ_K → θ*, so the unrolled hypergradient tends to the implicit one."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(5, 3))
    names = [n for n, _ in net.named_parameters()]
    x = torch.randn(6, 5, requires_grad=True)
    xr, yr = torch.randn(30, 5), torch.randint(0, 3, (30,))

    def outer(params):
        return F.cross_entropy(functional_call(net, dict(zip(names, params)), (xr,)), yr)

    errors = []
    for steps in (20, 100, 400):
        data = InnerData(x, torch.arange(6) % 3, torch.full((steps,), 0.5), [None] * steps, F.cross_entropy)
        recipe = InnerRecipe("sgd", 0.0, 0.1, steps)
        _, unrolled = unrolled_hypergradient(net, data, recipe, outer)
        _, cg = implicit_hypergradient(net, data, recipe, outer, "cg", iterations=50)
        _, series = implicit_hypergradient(net, data, recipe, outer, "neumann", iterations=2000, step=0.5)
        errors.append(rel(unrolled, cg))
        assert rel(series, cg) <= 1e-6
    assert errors[0] > errors[1] > errors[2] and errors[2] <= 1e-6


def test_linear_solvers_on_a_known_system() -> None:
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
    b = [torch.tensor([1.0, 2.0])]
    exact = torch.linalg.solve(a, b[0])

    def apply(v):
        return [a @ v[0]]

    assert torch.allclose(conjugate_gradient(apply, b, 2)[0], exact, atol=1e-12)  # CG: n steps for n x n
    assert torch.allclose(neumann(apply, b, 500, 0.2)[0], exact, atol=1e-10)
