"""The numerical core of the PINN case study: problems, operators, the random-feature inner solver, the MLP PINN,
RAD and the collocation samplers. float64 throughout."""

from __future__ import annotations

import math
import time
import warnings
from itertools import pairwise

import pytest
import torch
from torch import nn
from torch.func import vmap

from ddspec.components.pde.pinn import PinnMLP, rad, rel_l2, residuals, train_pinn
from ddspec.components.pde.problems import PROBLEMS, Heat1d, LaplaceSquare, PdeProblem
from ddspec.components.pde.random_features import RandomFeatures, design, fit, residual, solution
from ddspec.components.pde.sampling import SAMPLERS, sample_box

A0 = torch.tensor([1.0, 0.5, -0.3], dtype=torch.float64)  # the one BC of the convergence / vacuity checks
PROBLEM_LIST = [LaplaceSquare(), Heat1d()]


def record_box(problem: PdeProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """The box of the records (z, a): the domain times a ∈ [−1, 1]^K."""
    dom = problem.domain()
    ones = torch.ones(problem.terms, dtype=torch.float64)
    return torch.cat((dom[:, 0], -ones)), torch.cat((dom[:, 1], ones))


def boundary(problem: PdeProblem, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n points on each BC side (z, a) and the BC value there: 0 on the homogeneous sides, Σ a_k sin(kπx) else."""
    k = math.pi * torch.arange(1, problem.terms + 1, dtype=torch.float64)
    s = torch.rand(n, generator=gen, dtype=torch.float64)
    zeros, ones = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    hi = float(problem.domain()[1, 1])
    # laplace: x = 0, x = 1, y = 0 homogeneous, y = 1 carries g_a; heat: x = 0, x = 1 homogeneous, t = 0 carries g_a
    sides = [(zeros, s * hi), (ones, s * hi)]
    if isinstance(problem, LaplaceSquare):
        sides += [(s, zeros)]
        carrier = (s, ones)
    else:
        carrier = (s, zeros)
    z = torch.cat([torch.stack(side, 1) for side in [*sides, carrier]])
    a = 2 * torch.rand(len(z), problem.terms, generator=gen, dtype=torch.float64) - 1
    value = torch.zeros(len(z), dtype=torch.float64)
    value[-n:] = (a[-n:] * torch.sin(k * z[-n:, :1])).sum(-1)
    return z, a, value


def fd_operator(problem: PdeProblem, z: torch.Tensor, a: torch.Tensor, h: float) -> torch.Tensor:
    """L[exact] by central differences: the 5-point Laplacian, or (u(t+h) − u(t−h))/2h − ν·(x stencil)/h²."""
    def u(dx: float, dy: float) -> torch.Tensor:
        return problem.exact(z + torch.tensor([dx, dy], dtype=torch.float64), a)

    u_xx = (u(h, 0) - 2 * u(0, 0) + u(-h, 0)) / h**2
    if isinstance(problem, LaplaceSquare):
        return u_xx + (u(0, h) - 2 * u(0, 0) + u(0, -h)) / h**2
    return (u(0, h) - u(0, -h)) / (2 * h) - problem.nu * u_xx


def single_point_exact(problem: PdeProblem):
    return lambda z, a: problem.exact(z.unsqueeze(0), a.unsqueeze(0))[0]


# ----------------------------------------------------------------------------------------------------------------
# problems: the oracle, the ansatz, the operator


def test_registry_and_shapes():
    assert set(PROBLEMS) == {"laplace_square", "heat_1d"}
    for name, cls in PROBLEMS.items():
        problem = cls()
        assert problem.name == name and problem.coords == 2 and problem.terms == 3 and problem.dim == 5
        assert problem.domain().shape == (2, 2) and problem.grid(5).shape == (25, 2)
    assert Heat1d(nu=0.1, T=2.0).domain()[1].tolist() == [0.0, 2.0]
    with pytest.raises(ValueError):
        Heat1d(nu=0.0)


@pytest.mark.parametrize("problem", PROBLEM_LIST, ids=lambda p: p.name)
def test_exact_solves_pde_under_finite_differences(problem):
    """Central differences of `exact` converge to 0 at O(h²) (ratio ≈ 4 per halving), < 1e-4 at h = 2.5e-4."""
    gen = torch.Generator().manual_seed(1)
    z = 0.05 + 0.9 * torch.rand(64, 2, generator=gen, dtype=torch.float64) * problem.domain()[:, 1]
    a = A0.expand(64, 3)
    hs = [2e-3, 1e-3, 5e-4, 2.5e-4]
    errors = [float(fd_operator(problem, z, a, h).abs().max()) for h in hs]
    ratios = [e0 / e1 for e0, e1 in pairwise(errors)]
    assert all(3.5 < r < 4.5 for r in ratios), (errors, ratios)
    assert errors[-1] < 1e-4, errors


@pytest.mark.parametrize("problem", PROBLEM_LIST, ids=lambda p: p.name)
def test_exact_meets_bcs_and_operator_of_exact_vanishes(problem):
    gen = torch.Generator().manual_seed(2)
    z, a, value = boundary(problem, 50, gen)
    assert (problem.exact(z, a) - value).abs().max() < 1e-12
    z = torch.rand(100, 2, generator=gen, dtype=torch.float64) * problem.domain()[:, 1]
    a = 2 * torch.rand(100, 3, generator=gen, dtype=torch.float64) - 1
    assert problem.operator(single_point_exact(problem), z, a).abs().max() < 1e-9


@pytest.mark.parametrize("problem", PROBLEM_LIST, ids=lambda p: p.name)
def test_ansatz_meets_bcs_for_any_network(problem):
    gen = torch.Generator().manual_seed(3)
    mlp = nn.Sequential(nn.Linear(5, 16, dtype=torch.float64), nn.Tanh(), nn.Linear(16, 1, dtype=torch.float64))
    with torch.no_grad():
        for param in mlp.parameters():
            param.copy_(3 * torch.randn(param.shape, generator=gen, dtype=torch.float64))
    low, high = record_box(problem)
    pinn = PinnMLP(problem, 8, 2, low, high, generator=gen)
    z, a, value = boundary(problem, 50, gen)
    u = vmap(problem.ansatz(lambda z, a: mlp(torch.cat((z, a))).squeeze(-1)))(z, a)
    assert (u - value).abs().max() < 1e-12
    assert (pinn(torch.cat((z, a), 1))[:, 0] - value).abs().max() < 1e-12
    inside = torch.full((1, 2), 0.5, dtype=torch.float64)
    assert (vmap(problem.ansatz(lambda z, a: mlp(torch.cat((z, a))).squeeze(-1)))(inside, a[:1])
            - problem.lift(inside[0], a[0])).abs() > 1e-6  # the network does act inside


def test_operator_of_known_functions():
    """Laplace: Δ[sin(πx)y³] = (6y − π²y³) sin(πx), Δ[a₁x²y] = 2a₁y; heat: L[sin(πx)t³ + a₁x²] = 3t² sin(πx) −
    ν(−π² t³ sin(πx) + 2a₁). Vector-valued f gives (N, *S), and L is linear."""
    gen = torch.Generator().manual_seed(4)
    z = torch.rand(30, 2, generator=gen, dtype=torch.float64)
    a = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    x, y = z[:, 0], z[:, 1]
    pi = math.pi

    def f(z, a):
        return torch.stack((torch.sin(pi * z[0]) * z[1] ** 3, a[0] * z[0] ** 2 * z[1]))

    out = LaplaceSquare().operator(f, z, a)
    assert out.shape == (30, 2)
    torch.testing.assert_close(out[:, 0], (6 * y - pi**2 * y**3) * torch.sin(pi * x), rtol=0, atol=1e-11)
    torch.testing.assert_close(out[:, 1], 2 * a[:, 0] * y, rtol=0, atol=1e-11)

    heat = Heat1d(nu=0.07)
    t = y
    scalar = heat.operator(lambda z, a: torch.sin(pi * z[0]) * z[1] ** 3 + a[0] * z[0] ** 2, z, a)
    expected = 3 * t**2 * torch.sin(pi * x) - 0.07 * (-(pi**2) * t**3 * torch.sin(pi * x) + 2 * a[:, 0])
    assert scalar.shape == (30,)
    torch.testing.assert_close(scalar, expected, rtol=0, atol=1e-11)

    for problem in PROBLEM_LIST:
        combo = problem.operator(lambda z, a, lift=problem.lift: 2 * f(z, a) - 3 * lift(z, a), z, a)
        parts = 2 * problem.operator(f, z, a) - 3 * problem.operator(problem.lift, z, a).unsqueeze(-1)
        torch.testing.assert_close(combo, parts, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------------------------------------------
# the random-feature inner solver


def small_rf(problem: PdeProblem, features: int = 32, seed: int = 0):
    low, high = record_box(problem)
    return RandomFeatures.draw(features, 1.0, low, high, torch.Generator().manual_seed(seed))


def random_points(problem: PdeProblem, m: int, seed: int) -> torch.Tensor:
    low, high = record_box(problem)
    return low + (high - low) * torch.rand(m, problem.dim, generator=torch.Generator().manual_seed(seed),
                                           dtype=torch.float64)


def test_random_features_draw_only_from_generator():
    state = torch.get_rng_state()
    low, high = record_box(LaplaceSquare())
    one = RandomFeatures.draw(16, 2.0, low, high, torch.Generator().manual_seed(5))
    two = RandomFeatures.draw(16, 2.0, low, high, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(one.weight, two.weight) and torch.equal(one.bias, two.bias)
    assert one.weight.shape == (16, 5) and one.weight.dtype == torch.float64 and one.bias.abs().max() <= 2.0
    assert one(high).shape == (16,)
    with pytest.raises(ValueError):
        RandomFeatures.draw(4, 1.0, low, low, torch.Generator())


@pytest.mark.parametrize("problem", PROBLEM_LIST, ids=lambda p: p.name)
def test_design_is_the_residual_of_the_ansatz(problem):
    """residual(w) = A w + r0 and the columns of A are the residuals of B·φ_j."""
    features, points = small_rf(problem), random_points(problem, 40, 6)
    matrix, offset = design(problem, features, points)
    assert matrix.shape == (40, 32) and offset.shape == (40,)
    w = torch.randn(32, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    z, a = points[:, :2], points[:, 2:]
    torch.testing.assert_close(residual(problem, features, w, z, a), matrix @ w + offset, rtol=0, atol=1e-10)
    torch.testing.assert_close(residual(problem, features, torch.zeros(32, dtype=torch.float64), z, a), offset)
    assert solution(problem, features, w, z, a).shape == (40,)


@pytest.mark.parametrize("problem", PROBLEM_LIST, ids=lambda p: p.name)
def test_fit_is_the_minimiser_of_the_ridge_loss(problem):
    """The closed form equals L-BFGS on (1/M)‖A w + r0‖² + ridge‖w‖² (F = 32, M = 40) to 1e-6 relative."""
    features, points, ridge = small_rf(problem), random_points(problem, 40, 8), 1e-3
    w_closed = fit(problem, features, points, ridge)
    matrix, offset = design(problem, features, points)
    w = torch.zeros(32, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=5000, history_size=50, tolerance_grad=1e-15,
                            tolerance_change=1e-20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (matrix @ w + offset).square().mean() + ridge * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    gap = float((w.detach() - w_closed).norm() / w_closed.norm())
    assert gap < 1e-6, gap
    with pytest.raises(ValueError):
        fit(problem, features, points, 0.0)


def test_hypergradient_wrt_points_matches_finite_differences():
    """d relL2(u_w(points), exact)/d points, w = fit(points), against central differences (float64, h = 1e-6)."""
    problem = LaplaceSquare()
    features, ridge = small_rf(problem), 1e-3
    points = random_points(problem, 40, 9)
    grid = problem.grid(6)
    bcs = torch.tensor([[1.0, 0.5, -0.3], [-0.4, 0.8, 0.7]], dtype=torch.float64)
    z = grid.repeat(2, 1)
    a = bcs.repeat_interleave(len(grid), 0)
    exact = problem.exact(z, a)

    def outer(p: torch.Tensor) -> torch.Tensor:
        w = fit(problem, features, p, ridge)
        pred = solution(problem, features, w, z, a)
        return (pred - exact).norm() / exact.norm()

    p = points.clone().requires_grad_()
    (grad,) = torch.autograd.grad(outer(p), p)
    h = 1e-6
    fd = torch.zeros_like(points)
    with torch.no_grad():
        for i in range(points.shape[0]):
            for j in range(points.shape[1]):
                e = torch.zeros_like(points)
                e[i, j] = h
                fd[i, j] = (outer(points + e) - outer(points - e)) / (2 * h)
    top = grad.abs().flatten().argsort(descending=True)[:8]
    rel = (grad.flatten()[top] - fd.flatten()[top]).abs() / fd.flatten()[top].abs()
    assert rel.max() < 1e-4, rel
    cosine = float(grad.flatten() @ fd.flatten() / (grad.norm() * fd.norm()))
    assert cosine > 1 - 1e-8, cosine
    assert float((grad - fd).norm() / fd.norm()) < 1e-4


# ----------------------------------------------------------------------------------------------------------------
# the MLP PINN: residuals, training, convergence and vacuity


def fixed_bc_points(m: int) -> torch.Tensor:
    """m Sobol points in (0,1)², every record at the one BC a = A0."""
    return torch.cat((sample_box("sobol", m, [0.0, 0.0], [1.0, 1.0], 0), A0.expand(m, 3)), 1)


def grid_error(model: PinnMLP, a: torch.Tensor, n: int = 33) -> float:
    """relL2 of u_θ against the exact solution on the n×n grid, at the BC a."""
    grid = model.problem.grid(n)
    a = a.expand(len(grid), -1)
    with torch.no_grad():
        return rel_l2(model(torch.cat((grid, a), 1))[:, 0], model.problem.exact(grid, a))


def train_fixed_bc(m: int, steps: int, lr: float) -> tuple[PinnMLP, float]:
    """The 3×32 tanh PINN trained by Adam on m Sobol points at a = A0; returns it and the seconds taken."""
    problem = LaplaceSquare()
    model = PinnMLP(problem, 32, 3, *record_box(problem), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    train_pinn(model, fixed_bc_points(m), steps, lr)
    return model, time.perf_counter() - start


@pytest.fixture(scope="module")
def fixed_bc_pinn() -> PinnMLP:
    """The default-suite PINN at one BC: 256 Sobol points, 1000 Adam steps at lr 3e-3 (~20 s on one core)."""
    model, seconds = train_fixed_bc(256, 1000, 3e-3)
    print(f"fixed-BC PINN (256 points, 1000 Adam steps): {seconds:.1f} s")
    return model


def test_residuals_functional_call_and_forward_agree():
    problem = LaplaceSquare()
    gen = torch.Generator().manual_seed(10)
    model = PinnMLP(problem, 16, 2, *record_box(problem), generator=gen)
    points = random_points(problem, 20, 11)
    params = {name: p + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
              for name, p in model.named_parameters()}
    moved = PinnMLP(problem, 16, 2, *record_box(problem))
    moved.load_state_dict(params, strict=False)
    torch.testing.assert_close(residuals(model, points, params), residuals(moved, points))
    direct = problem.operator(lambda z, a: moved(torch.cat((z, a)).unsqueeze(0))[0, 0], points[:, :2], points[:, 2:])
    torch.testing.assert_close(residuals(moved, points), direct)
    assert model(points).shape == (20, 1)


def test_train_pinn_minibatches_resampling_and_no_global_rng():
    problem = LaplaceSquare()
    model = PinnMLP(problem, 16, 2, *record_box(problem), generator=torch.Generator().manual_seed(12))
    points = random_points(problem, 64, 13)
    before = float(residuals(model, points).detach().square().mean())
    calls = []

    def resample(net: nn.Module) -> torch.Tensor:
        calls.append(1)
        return rad(net, random_points(problem, 128, 14 + len(calls)), 64, torch.Generator().manual_seed(len(calls)))

    state = torch.get_rng_state()
    final = train_pinn(model, points, 40, 3e-3, batch_size=16, generator=torch.Generator().manual_seed(0),
                       resample=resample, resample_every=15)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(calls) == 2 and final.shape == (64, 5) and not torch.equal(final, points)
    assert float(residuals(model, points).detach().square().mean()) < before
    sgd = PinnMLP(problem, 16, 2, *record_box(problem), generator=torch.Generator().manual_seed(12))
    train_pinn(sgd, points, 5, 1e-4, optimizer="sgd")
    with pytest.raises(ValueError):
        train_pinn(model, points, 1, 1e-3, batch_size=8)
    with pytest.raises(ValueError):
        train_pinn(model, points, 1, 1e-3, optimizer="lbfgs")


def test_fixed_bc_pinn_converges(fixed_bc_pinn):
    """Default-suite version: relL2 < 0.1 on the 33×33 grid (the lift alone: 0.73; the slow test: < 1e-2)."""
    lift_only = PinnMLP(LaplaceSquare(), 32, 3, *record_box(LaplaceSquare()))
    with torch.no_grad():
        for param in lift_only.parameters():
            param.zero_()
    error = grid_error(fixed_bc_pinn, A0)
    print(f"fixed-BC PINN relL2 = {error:.3e} (lift alone {grid_error(lift_only, A0):.3f})")
    assert error < 0.1


@pytest.mark.slow
def test_fixed_bc_pinn_converges_to_one_percent():
    """The full check: 1024 Sobol points, 3×32 tanh PINN, 4000 Adam steps at lr 1e-3: relL2 < 1e-2 on the 33×33 grid."""
    model, seconds = train_fixed_bc(1024, 4000, 1e-3)
    error = grid_error(model, A0)
    print(f"fixed-BC PINN (1024 points, 4000 Adam steps): relL2 = {error:.3e} in {seconds:.1f} s")
    assert error < 1e-2


def test_one_bc_distilled_set_is_vacuous_off_family(fixed_bc_pinn):
    """Every point at a = A0: mean relL2 >= 0.3 over 12 held-out BCs (a₃ ∈ [0.6, 1], a₁, a₂ ∈ [−1, 1])."""
    gen = torch.Generator().manual_seed(15)
    held_out = torch.cat((2 * torch.rand(12, 2, generator=gen, dtype=torch.float64) - 1,
                          0.6 + 0.4 * torch.rand(12, 1, generator=gen, dtype=torch.float64)), 1)
    errors = torch.tensor([grid_error(fixed_bc_pinn, a) for a in held_out])
    print(f"held-out relL2: mean {errors.mean():.3f}, min {errors.min():.3f}, max {errors.max():.3f}; "
          f"at A0 {grid_error(fixed_bc_pinn, A0):.3e}")
    assert errors.mean() >= 0.3


# ----------------------------------------------------------------------------------------------------------------
# RAD and the samplers


def planted_model() -> PinnMLP:
    """A PINN with every parameter zero: u = lift = y Σ a_k sin(kπx), so r = −y Σ a_k (kπ)² sin(kπx)."""
    problem = LaplaceSquare()
    model = PinnMLP(problem, 8, 1, *record_box(problem))
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    return model


def planted_pool(alphas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Points at (x, y) = (0.5, 0.5), a = (α, 0, 0): |r| = 0.5 π² |α|."""
    n = len(alphas)
    alpha = torch.tensor(alphas, dtype=torch.float64)
    pool = torch.cat((torch.full((n, 2), 0.5, dtype=torch.float64), alpha[:, None],
                      torch.zeros(n, 2, dtype=torch.float64)), 1)
    return pool, 0.5 * math.pi**2 * alpha.abs()


def test_rad_follows_the_planted_residual():
    model = planted_model()
    pool, r = planted_pool([0.0, 0.0, 0.2, 0.4, 0.8, 1.0, 0.0, 0.6])
    torch.testing.assert_close(residuals(model, pool).abs(), r)
    for k, c in [(1.0, 1.0), (2.0, 0.5)]:
        weights = r**k / (r**k).mean() + c
        expected = pool[torch.multinomial(weights, 4, replacement=False, generator=torch.Generator().manual_seed(3))]
        drawn = rad(model, pool, 4, torch.Generator().manual_seed(3), k=k, c=c)
        assert torch.equal(drawn, expected)
        assert torch.equal(drawn, rad(model, pool, 4, torch.Generator().manual_seed(3), k=k, c=c))
    nonzero = rad(model, pool, 5, torch.Generator().manual_seed(4), c=0.0)
    assert (nonzero[:, 2] != 0).all()  # with c = 0 a zero-residual point is never drawn

    small, _ = planted_pool([0.0, 0.3, 0.9])  # weights 0 + 0.5, 0.75 + 0.5, 2.25 + 0.5 -> p = 1/9, 5/18, 11/18
    gen = torch.Generator().manual_seed(5)
    counts = torch.zeros(3)
    for _ in range(300):
        counts[(rad(model, small, 1, gen, c=0.5)[0, 2] - small[:, 2]).abs().argmin()] += 1
    expected = 300 * torch.tensor([1 / 9, 5 / 18, 11 / 18])
    assert counts[0] < counts[1] < counts[2]
    assert ((counts - expected).abs() < 4 * (expected * (1 - expected / 300)).sqrt()).all(), counts


@pytest.mark.parametrize("method", SAMPLERS)
def test_sample_box(method):
    low, high = [0.0, -1.0, 2.0], [1.0, 1.0, 5.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        points = sample_box(method, 100, low, high, seed=3)  # 100: not a power of 2 (Sobol must stay quiet)
    assert points.shape == (100, 3) and points.dtype == torch.float64
    lo, hi = torch.tensor(low, dtype=torch.float64), torch.tensor(high, dtype=torch.float64)
    assert ((points >= lo) & (points <= hi)).all()
    assert torch.equal(points, sample_box(method, 100, low, high, seed=3))
    assert not torch.equal(points, sample_box(method, 100, low, high, seed=4))
    if method == "lhs":
        strata = ((points - lo) / (hi - lo) * 100).floor().long()
        for d in range(3):
            assert torch.equal(strata[:, d].sort().values, torch.arange(100))
    with pytest.raises(ValueError):
        sample_box("grid", 10, low, high, 0)
