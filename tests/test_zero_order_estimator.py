"""Gaussian-smoothing zero-order gradient estimator: exact identities on quadratics, orthogonal directions,
unbiasedness and the E‖ĝ − g‖² formula by Monte Carlo, a non-differentiable objective, determinism, errors."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from ddspec.components import zero_order as zo

F64 = torch.float64
EXACT = {"atol": 1e-12, "rtol": 1e-12}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quadratic(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random symmetric A, b and a point x."""
    g = _gen(seed)
    b0 = torch.randn(d, d, generator=g, dtype=F64)
    return (b0 + b0.T) / 2, torch.randn(d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)


def _f_quadratic(a: torch.Tensor, b: torch.Tensor):
    """f(p) = ½ pᵀAp + bᵀp over the last dimension (vectorised over rows)."""
    return lambda p: 0.5 * ((p @ a) * p).sum(-1) + p @ b


# 1. exact identities with fixed directions -----------------------------------------------------------------------


def test_quadratic_identities_with_fixed_directions():
    d, m, sigma = 7, 5, 0.3
    a, b, x = _quadratic(d, 0)
    f, g = _f_quadratic(a, b), a @ x + b
    v = zo.gaussian_directions(m, d, _gen(1))
    anti, values = zo.estimate(f, x, v, sigma, "antithetic")
    assert values.shape == (2 * m,)
    torch.testing.assert_close(anti, ((v @ g).unsqueeze(-1) * v).mean(0), **EXACT)
    fwd, values = zo.estimate(f, x, v, sigma, "forward")
    assert values.shape == (m + 1,)
    torch.testing.assert_close(values[0], f(x), **EXACT)  # the first row is x itself
    weights = v @ g + sigma / 2 * ((v @ a) * v).sum(-1)
    torch.testing.assert_close(fwd, (weights.unsqueeze(-1) * v).mean(0), **EXACT)
    assert (fwd - anti).norm() > 1e-3  # the σ/2 vᵀAv term is really there


def test_perturbation_layout():
    x = torch.tensor([1.0, 2.0], dtype=F64)
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=F64)
    fwd = zo.perturbations(x, v, 0.5, "forward")
    torch.testing.assert_close(fwd, torch.tensor([[1.0, 2.0], [1.5, 2.0], [1.0, 2.5], [1.5, 2.5]], dtype=F64))
    anti = zo.perturbations(x, v, 0.5, "antithetic")
    torch.testing.assert_close(anti, torch.tensor([[1.5, 2.0], [1.0, 2.5], [1.5, 2.5],
                                                   [0.5, 2.0], [1.0, 1.5], [0.5, 1.5]], dtype=F64))
    assert zo.evaluations(3, "forward") == 4 and zo.evaluations(3, "antithetic") == 6


def test_batched_matches_one_at_a_time():
    d, m, n = 4, 3, 6
    a, b, x = _quadratic(d, 2)
    f = _f_quadratic(a, b)
    v = zo.gaussian_directions(n * m, d, _gen(3)).reshape(n, m, d)
    for estimator in zo.ESTIMATORS:
        for shaping in zo.SHAPINGS:
            batched, values = zo.estimate(f, x, v, 0.2, estimator, shaping)
            assert batched.shape == (n, d) and values.shape == (n, zo.evaluations(m, estimator))
            single = torch.stack([zo.estimate(f, x, v[i], 0.2, estimator, shaping)[0] for i in range(n)])
            torch.testing.assert_close(batched, single, **EXACT)


# 2. antithetic with M = d orthogonal directions is exact on a quadratic -------------------------------------------


def test_antithetic_orthogonal_full_basis_is_exact():
    d, sigma = 6, 0.7
    a, b, x = _quadratic(d, 4)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=_gen(5), dtype=F64))
    v = math.sqrt(d) * q.T  # rows v_l = √d q_l
    ghat, _ = zo.estimate(_f_quadratic(a, b), x, v, sigma, "antithetic")
    torch.testing.assert_close(ghat, a @ x + b, **EXACT)
    # the same with orthogonal_directions' own block (norms are χ(d), not √d: exact only after renormalising)
    w = zo.orthogonal_directions(d, d, _gen(6))
    w = math.sqrt(d) * w / w.norm(dim=1, keepdim=True)
    torch.testing.assert_close(zo.estimate(_f_quadratic(a, b), x, w, sigma, "antithetic")[0], a @ x + b, **EXACT)
    # M < d directions do not span: not exact
    assert (zo.estimate(_f_quadratic(a, b), x, v[: d - 1], sigma, "antithetic")[0] - (a @ x + b)).norm() > 1e-3


# 3. orthogonal directions ------------------------------------------------------------------------------------------


def test_orthogonal_directions_blocks_and_norms():
    d = 5
    v = zo.orthogonal_directions(12, d, _gen(7))  # blocks of 5, 5, 2 rows
    assert v.shape == (12, d) and v.dtype == F64
    for start, stop in ((0, 5), (5, 10), (10, 12)):
        gram = v[start:stop] @ v[start:stop].T
        off = gram - torch.diag(torch.diagonal(gram))
        assert off.abs().max() < 1e-12 * gram.diagonal().max()
    across = v[0:5] @ v[5:10].T  # independent blocks: not orthogonal to each other
    assert across.abs().max() > 1e-2

    n = 20000
    v = zo.orthogonal_directions(n, d, _gen(8))
    sq = (v ** 2).sum(1)
    # ‖v‖² ~ χ²_d: mean d, variance 2d
    assert abs(sq.mean().item() - d) < 4 * math.sqrt(2 * d / n)
    assert scipy.stats.kstest(sq.sqrt().numpy(), scipy.stats.chi(d).cdf).pvalue > 1e-3
    # marginally N(0, I): every coordinate standard normal, including the first coordinate of each block's first
    # row (without the sign(diag R) fix that one has a fixed sign)
    for j in range(d):
        assert scipy.stats.kstest(v[:, j].numpy(), scipy.stats.norm.cdf).pvalue > 1e-3
    first = v[::d, 0]
    assert abs((first > 0).double().mean().item() - 0.5) < 4 * math.sqrt(0.25 / first.numel())
    cov = v.T @ v / n
    assert (cov - torch.eye(d, dtype=F64)).abs().max() < 0.05


# 4. unbiasedness and the variance formula ------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", zo.ESTIMATORS)
def test_unbiased_and_expected_sq_error(estimator):
    # ‖ĝ − g‖² has a coefficient of variation of about 1.3 (antithetic) to 1.7 (forward, σ = 0.5) here (measured),
    # so with N = 40000 draws the Monte-Carlo mean has a relative standard error of ≈ 1.7/√40000 ≈ 0.85%: the 5%
    # tolerance is ≳ 6 standard errors (checked below from the sample itself), while the wrong constants the test
    # must catch — d or d + 2 instead of d + 1 (≈ 17% off), or the forward σ² term dropped (≈ 40% off) — are not.
    d, m, sigma, n = 5, 4, 0.5, 40000
    a, b, x = _quadratic(d, 9)
    f, g = _f_quadratic(a, b), a @ x + b
    v = zo.gaussian_directions(n * m, d, _gen(10)).reshape(n, m, d)
    ghat, _ = zo.estimate(f, x, v, sigma, estimator)
    mean, se = ghat.mean(0), ghat.std(0) / math.sqrt(n)
    assert ((mean - g).abs() < 4 * se).all(), (mean, g, se)

    err = ((ghat - g) ** 2).sum(1)
    formula = zo.expected_sq_error(float(g @ g), d, m, sigma, float(a.trace()), float((a @ a).trace()), estimator)
    err_se = err.std().item() / math.sqrt(n)
    assert 0.05 * formula > 4 * err_se  # the tolerance is meaningful
    assert abs(err.mean().item() - formula) < 0.05 * formula, (err.mean().item(), formula)
    for wrong_d in (d - 1, d + 1):  # the formula with a wrong constant would be rejected
        wrong = zo.expected_sq_error(float(g @ g), wrong_d, m, sigma, float(a.trace()), float((a @ a).trace()),
                                     estimator)
        assert abs(err.mean().item() - wrong) > 0.05 * formula


def test_forward_sigma_term_in_formula():
    # the forward formula's σ² term: E‖ĝ − g‖² grows with σ, the antithetic one does not (quadratic f)
    args = (3.0, 5, 4, 0.5, 1.5, 2.0)
    assert zo.expected_sq_error(*args, "forward") == pytest.approx((6 * 3.0 + 0.0625 * 9 * (2.25 + 4.0)) / 4)
    assert zo.expected_sq_error(*args, "antithetic") == pytest.approx(6 * 3.0 / 4)


def test_orthogonal_directions_unbiased():
    d, m, sigma, n = 5, 3, 0.5, 20000
    a, b, x = _quadratic(d, 11)
    f, g = _f_quadratic(a, b), a @ x + b
    v = zo.orthogonal_directions(n * d, d, _gen(12)).reshape(n, d, d)[:, :m]  # m rows of one block per draw
    for estimator in zo.ESTIMATORS:
        ghat, _ = zo.estimate(f, x, v, sigma, estimator)
        mean, se = ghat.mean(0), ghat.std(0) / math.sqrt(n)
        assert ((mean - g).abs() < 4 * se).all(), (estimator, mean, g, se)


# 5. non-differentiable objective -----------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", zo.ESTIMATORS)
def test_indicator_smoothed_gradient(estimator):
    d, m, sigma, n = 5, 4, 0.4, 40000
    gen = _gen(13)
    a = torch.randn(d, generator=gen, dtype=F64)
    x = torch.randn(d, generator=gen, dtype=F64)
    x = x - ((a @ x) / (a @ a) - 0.2 * sigma / a.norm()) * a  # aᵀx/(σ‖a‖) = 0.2
    t = (a @ x / (sigma * a.norm())).item()
    expected = math.exp(-t * t / 2) / math.sqrt(2 * math.pi) * a / (sigma * a.norm())

    def f(p):
        return (p @ a > 0).to(p.dtype)

    v = zo.gaussian_directions(n * m, d, _gen(14)).reshape(n, m, d)
    ghat, _ = zo.estimate(f, x, v, sigma, estimator)
    mean, se = ghat.mean(0), ghat.std(0) / math.sqrt(n)
    assert ((mean - expected).abs() < 4 * se).all(), (mean, expected, se)
    assert (expected.abs() > 8 * se).any()  # the signal is resolved, so a zero estimate would fail


# 6. determinism ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", zo.KINDS)
def test_directions_deterministic_and_leave_global_rng(kind):
    state = torch.get_rng_state()
    first = zo.directions(kind, 7, 4, _gen(0), F64, "cpu")
    again = zo.directions(kind, 7, 4, _gen(0), F64, "cpu")
    other = zo.directions(kind, 7, 4, _gen(1), F64, "cpu")
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert zo.directions(kind, 3, 2, _gen(0), torch.float32, "cpu").dtype == torch.float32


# 7. errors ---------------------------------------------------------------------------------------------------------


def test_errors():
    x, v = torch.zeros(3, dtype=F64), torch.ones(2, 3, dtype=F64)
    for sigma in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            zo.perturbations(x, v, sigma, "forward")
        with pytest.raises(ValueError, match="sigma"):
            zo.combine(torch.zeros(3, dtype=F64), v, sigma, "forward")
    with pytest.raises(ValueError, match="estimator 'central'"):
        zo.perturbations(x, v, 0.1, "central")
    with pytest.raises(ValueError, match="estimator 'central'"):
        zo.evaluations(3, "central")
    with pytest.raises(ValueError, match="kind 'sobol'"):
        zo.directions("sobol", 3, 2, _gen(0), F64, "cpu")
    with pytest.raises(ValueError, match="shaping 'rank'"):
        zo.combine(torch.zeros(3, dtype=F64), v, 0.1, "forward", shaping="rank")
    for kind in zo.KINDS:
        with pytest.raises(ValueError, match="samples"):
            zo.directions(kind, 0, 2, _gen(0), F64, "cpu")
        with pytest.raises(ValueError, match="dim"):
            zo.directions(kind, 2, 0, _gen(0), F64, "cpu")
    with pytest.raises(ValueError, match="shape"):
        zo.perturbations(torch.zeros(4, dtype=F64), v, 0.1, "forward")
    with pytest.raises(ValueError, match="needs 4 values"):
        zo.combine(torch.zeros(3, dtype=F64), v, 0.1, "antithetic")
    with pytest.raises(ValueError, match="values of shape"):
        zo.estimate(lambda p: p.sum(), x, v, 0.1, "forward")


# 8. centered ranks and shaping -------------------------------------------------------------------------------------


def test_centered_ranks_hand_case():
    ranks = zo.centered_ranks(torch.tensor([3.0, 1.0, 2.0, 1.0], dtype=F64))
    # sorted (stable): 1 (index 1), 1 (index 3), 2, 3 -> ranks 3, 0, 2, 1 over n − 1 = 3, minus ½
    torch.testing.assert_close(ranks, torch.tensor([0.5, -0.5, 1 / 6, -1 / 6], dtype=F64), **EXACT)
    torch.testing.assert_close(zo.centered_ranks(torch.tensor([4.2], dtype=F64)), torch.zeros(1, dtype=F64))
    batched = zo.centered_ranks(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64))
    torch.testing.assert_close(batched, torch.tensor([[0.5, -0.5], [-0.5, 0.5]], dtype=F64))


def test_combine_shaping_hand_case():
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    sigma = 0.5
    fwd_values = torch.tensor([10.0, 5.0, 7.0], dtype=F64)
    # plain: weights (5 − 10)/0.5 = −10, (7 − 10)/0.5 = −6; ĝ = ½(−10·[1, 0] − 6·[0, 2]) = [−5, −6]
    torch.testing.assert_close(zo.combine(fwd_values, v, sigma, "forward"), torch.tensor([-5.0, -6.0], dtype=F64))
    # ranked: u = ranks of (5, 7) = (−½, ½), ĝ = ½(−½·[1, 0] + ½·[0, 2])/0.5 = [−½, 1]
    torch.testing.assert_close(zo.combine(fwd_values, v, sigma, "forward", "centered_rank"),
                               torch.tensor([-0.5, 1.0], dtype=F64))
    anti_values = torch.tensor([4.0, 1.0, 3.0, 9.0], dtype=F64)
    # plain: ((4 − 3)·[1, 0] + (1 − 9)·[0, 2])/(2·0.5)/2 = [½, −8]
    torch.testing.assert_close(zo.combine(anti_values, v, sigma, "antithetic"), torch.tensor([0.5, -8.0], dtype=F64))
    # ranked over all four: (4, 1, 3, 9) -> (1/6, −½, −1/6, ½); ĝ = ½((1/3)·[1, 0] + (−1)·[0, 2]) = [1/6, −1]
    torch.testing.assert_close(zo.combine(anti_values, v, sigma, "antithetic", "centered_rank"),
                               torch.tensor([1 / 6, -1.0], dtype=F64))
