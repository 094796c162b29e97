"""The curvature regularizer (GUARD / CURE) of ``train.regularizers``: its math against ground truth (float64), the
hypergradient through regularized inner steps, λ = 0 bit for bit, and every training site end to end."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import ddspec
from ddspec.backends.base import Distilled
from ddspec.components.training.experts import TEACHER
from ddspec.components.training.regularizers import (
    Curvature,
    batch_loss,
    input_gradient,
    regularized_losses,
    subset_size,
    unit_rows,
)
from ddspec.components.training.unroll import (
    InnerData,
    InnerRecipe,
    checkpointed_hypergradient,
    start_params,
    step_gradient,
    unrolled_hypergradient,
)
from ddspec.errors import SpecError
from ddspec.registry import BACKENDS, DATA, REGULARIZERS, load_backends
from ddspec.runtime.context import RunContext
from ddspec.spec.regularizer import RegularizerBase

pytestmark = pytest.mark.usefixtures("one_thread")

CURVATURE = {"kind": "curvature", "lam": 1.0, "h": 0.5}


def ce(outputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, t, reduction="none")


def mlp(seed: int = 0, d: int = 5, act: type[nn.Module] = nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 7), act(), nn.Linear(7, 3)).double()


# ---- the regularizer's math -------------------------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["normalized", "sign"])
def test_quadratic_loss_gives_h_squared_norm_of_a_z(direction: str) -> None:
    """ℓ = ½xᵀAx + bᵀx: ∇ℓ(x + hz) − ∇ℓ(x) = hAz exactly, so R = h²‖Az‖² for any h."""
    gen = torch.Generator().manual_seed(0)
    d = 6
    m = torch.randn(d, d, generator=gen, dtype=torch.float64)
    a, b = m @ m.T + torch.eye(d, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    x = torch.randn(4, d, generator=gen, dtype=torch.float64)

    def quadratic(outputs: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((outputs @ a) * outputs).sum(1) + outputs @ b

    g = x @ a + b
    z = torch.sign(g) / d**0.5 if direction == "sign" else g / g.norm(dim=1, keepdim=True)
    for h in (1e-3, 0.1, 1.0, 7.0):
        r = Curvature(1.0, h, direction=direction)(lambda v: v, x, x, quadratic)
        torch.testing.assert_close(r, h**2 * ((z @ a) ** 2).sum(1), rtol=1e-10, atol=0)


def _hz(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: (∇ₓℓ_i, H_i z_i) with H_i the input Hessian of ℓ_i, z_i = ∇ℓ_i/‖∇ℓ_i‖ (autograd.functional)."""
    grads, hz = [], []
    for xi, ti in zip(x, t):
        def loss(v: torch.Tensor, ti: torch.Tensor = ti) -> torch.Tensor:
            return F.cross_entropy(net(v[None]), ti[None])
        g = torch.autograd.functional.jacobian(loss, xi)
        grads.append(g)
        hz.append(torch.autograd.functional.hvp(loss, xi, g / g.norm())[1])
    return torch.stack(grads), torch.stack(hz)


def test_mlp_cross_entropy_tends_to_the_hessian_along_the_gradient_with_error_o_h() -> None:
    net, gen = mlp(), torch.Generator().manual_seed(1)
    x, t = torch.randn(5, 5, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    _, hz = _hz(net, x, t)
    exact = (hz**2).sum(1)
    errors = [(Curvature(1.0, h)(net, x, t, ce) / h**2 - exact).abs() for h in (1e-3, 5e-4)]
    ratio = errors[0] / errors[1]
    assert torch.all((ratio > 1.8) & (ratio < 2.2)), ratio  # first order in h
    assert torch.all(errors[0] < 1e-2 * exact)


def test_loss_difference_is_the_gradient_norm_to_second_order() -> None:
    """|ℓ(x + hz) − ℓ(x)| = h‖∇ℓ‖ + ½h² zᵀHz + O(h³): a gradient-norm penalty (error O(h²))."""
    net, gen = mlp(), torch.Generator().manual_seed(2)
    x, t = torch.randn(5, 5, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    g, _ = _hz(net, x, t)
    errors = [(Curvature(1.0, h, form="loss_difference")(net, x, t, ce) - h * g.norm(dim=1)).abs()
              for h in (1e-3, 5e-4)]
    ratio = errors[0] / errors[1]
    assert torch.all((ratio > 3.6) & (ratio < 4.4)), ratio


def test_scale_measures_h_and_r_in_units_of_the_data_std() -> None:
    """R with scale σ on x equals R with scale 1 on u = x/σ (the model fed σu)."""
    net, gen = mlp(), torch.Generator().manual_seed(3)
    x, t = torch.randn(4, 5, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    sigma = 3.7
    in_x = Curvature(1.0, 0.4, scale=sigma)(net, x, t, ce)
    in_u = Curvature(1.0, 0.4)(lambda u: net(sigma * u), x / sigma, t, ce)
    torch.testing.assert_close(in_x, in_u, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("form", ["gradient_difference", "loss_difference"])
def test_r_per_sample_does_not_depend_on_the_batch(form: str) -> None:
    net, gen = mlp(), torch.Generator().manual_seed(4)
    x, t = torch.randn(8, 5, generator=gen, dtype=torch.float64), torch.arange(8) % 3
    reg = Curvature(1.0, 0.3, form=form)
    together = reg(net, x, t, ce)
    alone = torch.cat([reg(net, x[i:i + 1], t[i:i + 1], ce) for i in range(8)])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-15)


def test_zero_input_gradient_gives_zero_and_finite_parameter_gradients() -> None:
    """All ReLU units dead at row 0 (its ∇ₓℓ = 0): z = 0, R = 0 there, finite gradients; other rows are moved by
    a unit direction (no ε that moves every coordinate)."""
    net = mlp(act=nn.ReLU)
    x = torch.randn(3, 5, dtype=torch.float64)
    with torch.no_grad():
        net[0].weight.copy_(net[0].weight.abs())
        net[0].bias.fill_(0.1)
    x[0] = -100.0  # every pre-activation negative at row 0
    t = torch.tensor([0, 1, 2])
    for form in ("gradient_difference", "loss_difference"):
        losses = regularized_losses(net, x, t, ce, [Curvature(2.0, 0.5, form=form)])
        r = Curvature(2.0, 0.5, form=form)(net, x, t, ce)
        assert r[0] == 0
        grads = torch.autograd.grad(losses.mean(), list(net.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)
    z = unit_rows(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    assert torch.equal(z, torch.tensor([[0.0, 0.0], [0.6, 0.8]]))


# ---- the hypergradient through regularized inner steps ----------------------------------------------------------

def _hyper_setup(regs: list[Curvature]) -> tuple[nn.Module, torch.Tensor, Any, InnerRecipe, Any]:
    net, gen = mlp(5, d=4), torch.Generator().manual_seed(5)
    xs = torch.randn(6, 4, generator=gen)
    ys = torch.arange(6) % 3
    xr, yr = torch.randn(10, 4, generator=gen), torch.arange(10) % 3
    recipe = InnerRecipe("sgd", 0.5, 0.01, 2)

    def outer(params: list[torch.Tensor]) -> torch.Tensor:
        names = [n for n, _ in net.named_parameters()]
        return F.cross_entropy(torch.func.functional_call(net, dict(zip(names, params)), (xr,)), yr)

    def data(x: torch.Tensor) -> InnerData:
        return InnerData(x.clone().requires_grad_(True), ys, torch.full((2,), 0.3), [None, torch.arange(4)],
                         F.cross_entropy, regs)
    return net, xs, data, recipe, outer


@pytest.mark.parametrize("direction", ["normalized", "sign"])
def test_hypergradient_through_regularized_steps_matches_finite_differences(float64: None, direction: str) -> None:
    """Each step is ∂_θ(ℓ + λR) at z fixed, z = z(θ_k, D̂); the hypergradient differentiates that map through z
    too (for ``sign`` dz = 0 almost everywhere), so it is the exact derivative: central differences agree to
    1e-5 relative, and the three engines to rounding."""
    regs = [Curvature(0.5, 0.3, direction=direction),
            Curvature(0.2, 0.4, direction=direction, form="loss_difference")]
    net, xs, data, recipe, outer = _hyper_setup(regs)
    _, (g,) = unrolled_hypergradient(net, data(xs), recipe, outer)
    _, (g_higher,) = unrolled_hypergradient(net, data(xs), recipe, outer, "higher")
    _, (g_ckpt,) = checkpointed_hypergradient(net, data(xs), recipe, outer, 1)
    torch.testing.assert_close(g_higher, g, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g_ckpt, g, rtol=1e-9, atol=1e-12)
    _, (plain,) = unrolled_hypergradient(net, replace(data(xs), regularizers=()), recipe, outer)
    assert not torch.allclose(plain, g, rtol=1e-3)
    eps = 1e-6
    for i, j in ((0, 0), (2, 3), (5, 1), (1, 2)):
        up, down = xs.clone(), xs.clone()
        up[i, j] += eps
        down[i, j] -= eps
        fd = (unrolled_hypergradient(net, data(up), recipe, outer)[0]
              - unrolled_hypergradient(net, data(down), recipe, outer)[0]) / (2 * eps)
        assert abs(fd - float(g[i, j])) <= 1e-5 * abs(float(g[i, j])), (i, j, fd, float(g[i, j]))


@pytest.mark.parametrize("form", ["gradient_difference", "loss_difference"])
def test_a_training_step_is_unchanged_by_z_carrying_its_graph(float64: None, form: str) -> None:
    """The differentiable step (z with its graph, held fixed by torch.func.grad) updates θ exactly as the plain
    step with z detached; z's graph only matters for derivatives w.r.t. D̂ and earlier θ."""
    net, gen = mlp(6), torch.Generator().manual_seed(6)
    x, t = torch.randn(7, 5, generator=gen).requires_grad_(True), torch.arange(7) % 3
    regs = [Curvature(0.7, 0.5, form=form)]
    names, params = start_params(net)
    new = step_gradient(net, names, params, x, t, F.cross_entropy, regs, differentiable=True)
    old = torch.autograd.grad(batch_loss(net, x, t, F.cross_entropy, regs), list(net.parameters()))
    for a, b in zip(new, old):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert any(gr is not None and gr.abs().sum() > 0
               for gr in torch.autograd.grad(sum((gi**2).sum() for gi in new), [x], allow_unused=True))


# ---- fraction: R on a random subset of each batch ---------------------------------------------------------------

def test_fraction_one_draws_nothing_and_is_the_full_computation(float64: None) -> None:
    net, gen = mlp(), torch.Generator().manual_seed(7)
    x, t = torch.randn(9, 5, generator=gen), torch.arange(9) % 3
    state = torch.get_rng_state()
    full = regularized_losses(net, x, t, ce, [Curvature(0.5, 0.3, fraction=1.0)])
    assert torch.equal(torch.get_rng_state(), state)
    at_x = input_gradient(net, x, t, ce)
    assert torch.equal(full, at_x[0] + 0.5 * Curvature(0.5, 0.3)(net, x, t, ce, at_x))


def test_fraction_is_reproducible_with_a_seed_and_unbiased(float64: None) -> None:
    """k = ⌈fN⌉ rows from the global RNG: the same seed gives the same ℓ_R; over many draws the batch mean and
    every per-sample ℓ_R,i average to the full computation's (within 4 standard errors)."""
    net, gen = mlp(), torch.Generator().manual_seed(8)
    x, t = torch.randn(10, 5, generator=gen), torch.arange(10) % 3
    reg = Curvature(2.0, 0.5, fraction=0.3)
    full = regularized_losses(net, x, t, ce, [Curvature(2.0, 0.5)]).detach()
    torch.manual_seed(3)
    a = regularized_losses(net, x, t, ce, [reg])
    torch.manual_seed(3)
    assert torch.equal(a, regularized_losses(net, x, t, ce, [reg]))
    plain = ce(net(x), t)
    assert int((a - plain).abs().gt(1e-12).sum()) == subset_size(0.3, 10) == 3
    draws = torch.stack([regularized_losses(net, x, t, ce, [reg]).detach() for _ in range(3000)])
    se = draws.std(0) / len(draws) ** 0.5
    assert torch.all((draws.mean(0) - full).abs() <= 4 * se + 1e-12), (draws.mean(0), full)
    means = draws.mean(1)
    assert abs(float(means.mean() - full.mean())) <= 4 * float(means.std()) / len(means) ** 0.5


def test_fraction_cost_formula(tiny_spec: dict[str, Any]) -> None:
    for form, c in (("gradient_difference", 6.0), ("loss_difference", 8 / 3)):
        for f in (1.0, 0.5, 0.1):
            spec = ddspec.load({**tiny_spec, "train": {"regularizers": [{**CURVATURE, "form": form,
                                                                        "fraction": f}]}})
            assert spec.train.update_cost() == pytest.approx(1 + (c - 1) * f)
    with pytest.raises(SpecError, match="fraction"):
        ddspec.load({**tiny_spec, "train": {"regularizers": [{**CURVATURE, "fraction": 0}]}})


def test_fraction_hypergradient_engines_agree_on_the_same_draws(float64: None) -> None:
    """Checkpointed recomputation replays the forward's row draws: torch_func, higher and checkpointed agree."""
    regs = [Curvature(0.5, 0.3, fraction=0.5), Curvature(0.2, 0.4, form="loss_difference", fraction=0.8)]
    net, xs, data, recipe, outer = _hyper_setup(regs)
    out = []
    for run in (lambda: unrolled_hypergradient(net, data(xs), recipe, outer),
                lambda: unrolled_hypergradient(net, data(xs), recipe, outer, "higher"),
                lambda: checkpointed_hypergradient(net, data(xs), recipe, outer, 1),
                lambda: checkpointed_hypergradient(net, data(xs), recipe, outer, 1, track_from=1),
                lambda: unrolled_hypergradient(net, data(xs), recipe, outer, track_from=1)):
        torch.manual_seed(11)
        out.append((run(), torch.get_rng_state()))
    for (value, grads), state in out[1:3]:
        assert value == pytest.approx(out[0][0][0], rel=1e-12) and torch.equal(state, out[0][1])
        torch.testing.assert_close(grads[0], out[0][0][1][0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out[3][0][1][0], out[4][0][1][0], rtol=1e-9, atol=1e-12)


def test_fraction_under_vmap_shares_the_rows_across_perturbations(float64: None) -> None:
    """The zero-order backend's vmapped evaluations (randomness "same") equal its loop from one RNG state."""
    from ddspec.backends.zero_order.run import Fit, looped, trained_outputs

    net = mlp(9)
    params0 = [p.detach() for p in net.parameters()]
    xr, yr = torch.randn(8, 5, dtype=torch.float64), torch.arange(8) % 3

    def outer(params: list[torch.Tensor]) -> torch.Tensor:
        names = [n for n, _ in net.named_parameters()]
        return F.cross_entropy(torch.func.functional_call(net, dict(zip(names, params)), (xr,)), yr)

    fit = trained_outputs(net, params0, InnerRecipe("sgd", 0.0, 0.0, 2), 0.2, [None, None], F.cross_entropy,
                          outer, [Curvature(1.0, 0.5, fraction=0.4)])
    x, t = torch.randn(3, 6, 5, dtype=torch.float64), torch.arange(6) % 3
    torch.manual_seed(4)
    batched = torch.func.vmap(lambda xe: fit(xe, t), randomness="same", chunk_size=2)(x)
    torch.manual_seed(4)
    before = torch.get_rng_state()
    one_by_one = looped([Fit(fit, before)], x, None, t)[0]
    torch.testing.assert_close(batched, one_by_one, rtol=1e-10, atol=1e-12)
    assert torch.equal(before, torch.get_rng_state())  # every evaluation starts from the scenario's state, in a fork


# ---- the spec ---------------------------------------------------------------------------------------------------

def test_spec_defaults_costs_and_a_plugin_kind_in_the_list(tiny_spec: dict[str, Any]) -> None:
    p = ddspec.load({**tiny_spec, "train": {"regularizers": [CURVATURE, {**CURVATURE, "lam": 0}]}})
    assert [r.kind for r in p.train.regularizers] == ["curvature", "curvature"]
    assert len(p.train.active_regularizers()) == 1 and p.train.update_cost() == 6.0
    with pytest.raises(SpecError, match=r"regularizers\.0\.h"):
        ddspec.load({**tiny_spec, "train": {"regularizers": [{"kind": "curvature", "h": 0}]}})

    class Plain(RegularizerBase):
        """A test regularizer."""

        kind: Literal["plain_test"] = "plain_test"

    REGULARIZERS.register(Plain)
    try:
        p = ddspec.load({**tiny_spec, "train": {"regularizers": [{"kind": "plain_test", "lam": 2}, CURVATURE]}})
        assert type(p.train.regularizers[0]).__name__ == "Plain" and p.train.regularizers[0].lam == 2
    finally:
        REGULARIZERS.unregister("plain_test")
    with pytest.raises(Exception, match="plain_test"):
        ddspec.load({**tiny_spec, "train": {"regularizers": [{"kind": "plain_test"}]}})


def test_unused_regularizers_warn_and_estimates_grow(tiny_spec: dict[str, Any]) -> None:
    dm = ddspec.compile(ddspec.load({**tiny_spec, "train": {"regularizers": [CURVATURE]}}))
    assert any(f.code == "REGULARIZER_UNUSED" and f.path == "train.regularizers" for f in dm.notes)
    gm = {**tiny_spec, "distance": {"kind": "gradient_match"}}
    plain = ddspec.compile(ddspec.load(gm)).estimate.seconds
    regularized = ddspec.compile(ddspec.load({**gm, "train": {"regularizers": [CURVATURE]}})).estimate.seconds
    assert regularized > 2 * plain


# ---- every training site, end to end ----------------------------------------------------------------------------

def _distill(raw: dict[str, Any], out: Path) -> tuple[Distilled, RunContext]:
    plan = ddspec.compile(ddspec.load(raw))
    p = plan.problem
    torch.manual_seed(p.runtime.seed)
    ctx = RunContext(p, plan.analysis, DATA.build(p.data), torch.device("cpu"), out, False,
                     torch.Generator().manual_seed(p.runtime.seed))
    return load_backends()[plan.backend].run(ctx), ctx


def _three(raw: dict[str, Any], tmp_path: Path, reg: dict[str, Any] = CURVATURE) -> list[Distilled]:
    """The run without regularizers, with λ = 0 and with ``reg``."""
    out = []
    for name, regs in (("none", []), ("zero", [{**reg, "lam": 0.0}]), ("on", [reg])):
        spec = copy.deepcopy(raw)
        spec["train"] = {**spec.get("train", {}), "regularizers": regs}
        out.append(_distill(spec, tmp_path / name)[0])
    return out


def _check(runs: list[Distilled]) -> None:
    none, zero, on = runs
    assert torch.equal(none.x, zero.x) and torch.equal(none.y, zero.y)  # λ = 0: bit for bit
    assert torch.isfinite(on.x).all() and not torch.equal(on.x, none.x)


def test_bilevel_inner_training(bilevel_spec: dict[str, Any], tmp_path: Path) -> None:
    _check(_three({**bilevel_spec, "optimize": {**bilevel_spec["optimize"], "iterations": 2}}, tmp_path))


@pytest.mark.parametrize("risk", [None, {"kind": "group_cvar", "groups": {"kind": "nearest_synthetic"}}])
def test_gradient_matching_network_updates_and_target(tiny_spec: dict[str, Any], tmp_path: Path,
                                                      risk: dict[str, Any] | None) -> None:
    raw = {**tiny_spec, "distance": {"kind": "gradient_match"}, "train": {"batch_size": 8, "steps": 2},
           "optimize": {"kind": "gradient", "iterations": 2, "real_batch_per_class": 8, "outer_loop": 2}}
    if risk is not None:
        raw["risk"] = {**risk, "batch_size": 40}
    _check(_three(raw, tmp_path, {**CURVATURE, "direction": "sign"}))


def test_predictions_teacher_is_regularized(bilevel_spec: dict[str, Any], tmp_path: Path) -> None:
    raw = {**bilevel_spec, "task": {"kind": "predictions", "teacher_epochs": 1},
           "optimize": {**bilevel_spec["optimize"], "iterations": 1}}
    _check(_three(raw, tmp_path, {**CURVATURE, "form": "loss_difference"}))
    teachers = [load_file(str(tmp_path / name / TEACHER)) for name in ("none", "zero", "on")]
    assert all(torch.equal(teachers[0][k], teachers[1][k]) for k in teachers[0])
    assert any(not torch.equal(teachers[0][k], teachers[2][k]) for k in teachers[0])


def test_zero_order_inner_training_vmapped_and_looped(bilevel_spec: dict[str, Any], tmp_path: Path) -> None:
    raw = {**bilevel_spec, "model": {"kind": "mlp", "hidden": [16]},
           "optimize": {"kind": "zero_order", "iterations": 2, "samples": 4, "real_batch_per_class": 8, "lr": 0.5},
           "evaluate": {**bilevel_spec["evaluate"], "epochs": 2}}
    runs = _three(raw, tmp_path)
    _check(runs)
    looped = copy.deepcopy(raw)
    looped["optimize"]["evaluations"] = "loop"
    looped["train"] = {**looped["train"], "regularizers": [CURVATURE]}
    torch.testing.assert_close(_distill(looped, tmp_path / "loop")[0].x, runs[2].x, rtol=1e-4, atol=1e-5)
    result = ddspec.compile(ddspec.load({**raw, "train": {**raw["train"], "regularizers": [CURVATURE]}})).run(
        tmp_path / "run")  # the `ddspec run` path: distill, evaluate, report
    assert torch.isfinite(result.x).all()
    assert "zero_order" in BACKENDS
