"""Closed-form KRR distillation: every construction must reproduce the original weights W exactly.

Ground truth is W itself: KRR trained on the distilled set (fit_krr) must give W_S with
‖W_S − W‖/‖W‖ ≤ 1e-10, on random data and on scikit-learn digits.
"""

from __future__ import annotations

import numpy as np
import pytest

from ddspec.components.closed_form.krr import (
    FeatureMap,
    KRRInfeasible,
    LeakyReLUMLP,
    LinearFeatures,
    RandomFourierFeatures,
    close_to_real,
    distill_features,
    distill_inputs,
    dual_matrix,
    fit_krr,
    label_only,
    lambda_bound,
    one_hot,
    regularized_pinv,
    relative_error,
)

TOL = 1e-10
K = 10
#: slope 0.2: the MLP round trip is then accurate to ~1e-12 (slope 0.01 gives ~1e-8, see the class docstring)
MLP_SLOPE = 0.2


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas():
    """The matrices here are tiny: BLAS threads only add contention (seconds per SVD on a busy machine)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """First 1347 digits: pixels / 16 (1347×64) and integer labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data[:1347] / 16.0, data.target[:1347]


def digits_maps() -> dict[str, FeatureMap]:
    return {
        "linear": LinearFeatures(64),
        "rff": RandomFourierFeatures(64, 48, sigma=4.0, seed=1),
        "mlp": LeakyReLUMLP(64, [64, 48, 32], slope=MLP_SLOPE, seed=2),
    }


def random_problem(n: int = 120, p: int = 12, k: int = 4, lam: float = 0.1, seed: int = 0):
    """Random features Φ (n×p), one-hot labels, and the KRR weights W (k×p)."""
    g = rng(seed)
    Phi = g.standard_normal((n, p))
    Y = one_hot(g.integers(0, k, n), k)
    return Phi, Y, fit_krr(Phi, Y, lam)


def balanced(labels: np.ndarray, per_class: int) -> np.ndarray:
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(K)])


# --- basic linear algebra ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 15), (15, 7)])
def test_regularized_pinv_matches_primal_and_dual_formulas(shape: tuple[int, int]) -> None:
    Phi = rng(1).standard_normal(shape)
    n, p = shape
    lam = 0.3
    primal = np.linalg.solve(Phi.T @ Phi + lam * np.eye(p), Phi.T)
    dual = Phi.T @ np.linalg.inv(Phi @ Phi.T + lam * np.eye(n))
    got = regularized_pinv(Phi, lam)
    assert got.shape == (p, n)
    assert np.allclose(got, primal, atol=1e-12) and np.allclose(got, dual, atol=1e-12)
    assert np.allclose(regularized_pinv(Phi, 0.0), np.linalg.pinv(Phi), atol=1e-12)


def test_fit_krr_is_ridge_regression_in_row_convention() -> None:
    Phi, Y, W = random_problem(n=40, p=6, k=3, lam=0.5)
    assert W.shape == (3, 6)
    # gradient of ‖Φ Wᵀ − Y‖² + λ‖W‖² vanishes
    assert np.allclose(Phi.T @ (Phi @ W.T - Y) + 0.5 * W.T, 0.0, atol=1e-12)


# --- feature-space constructions ---------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_m_equals_k_identity_labels_gives_pinv_of_W(lam: float) -> None:
    _, _, W = random_problem(lam=lam)
    Y_S = np.eye(W.shape[0])
    Phi_S = distill_features(W, Y_S, 0.0)
    assert np.allclose(Phi_S, np.linalg.pinv(W).T, atol=1e-12)  # features = W⁺ (paper convention)
    assert relative_error(fit_krr(Phi_S, Y_S, 0.0), W) <= TOL


@pytest.mark.parametrize("branch", ["large", "small"])
@pytest.mark.parametrize("where", ["zero", "below", "at"])
def test_m_greater_than_k_random_Z_all_lambdas(where: str, branch: str) -> None:
    _, _, W = random_problem(p=12, k=4)
    m = 9
    g = rng(3)
    Y_S = one_hot(np.arange(m) % 4, 4) + 0.1 * g.standard_normal((m, 4))
    Z = g.standard_normal((m, 12))
    bound = lambda_bound(dual_matrix(W, Y_S, Z))
    lam_S = {"zero": 0.0, "below": 0.4 * bound, "at": bound}[where]
    Phi_S = distill_features(W, Y_S, lam_S, Z, branch=branch)
    assert Phi_S.shape == (m, 12)
    assert relative_error(fit_krr(Phi_S, Y_S, lam_S), W) <= TOL
    assert np.allclose(regularized_pinv(Phi_S, lam_S).T, dual_matrix(W, Y_S, Z), atol=1e-9)


def test_branches_differ_below_bound_and_meet_at_it() -> None:
    _, _, W = random_problem()
    Y_S = np.eye(4)
    bound = lambda_bound(dual_matrix(W, Y_S))
    big, small = (distill_features(W, Y_S, 0.5 * bound, branch=b) for b in ("large", "small"))
    assert np.linalg.norm(small) < 0.9 * np.linalg.norm(big)
    s_big, s_small = (
        np.linalg.svd(distill_features(W, Y_S, bound, branch=b), compute_uv=False) for b in ("large", "small")
    )
    # σ'₁ maps to the double root √λ_S: the smallest σ of the large branch, the largest of the small one
    assert s_big[-1] == pytest.approx(np.sqrt(bound), rel=1e-6)
    assert s_small[0] == pytest.approx(np.sqrt(bound), rel=1e-6)
    assert s_big[0] > 1.5 * s_big[-1] and s_small[-1] < s_small[0] / 1.5


def test_beyond_the_bound_raises_with_the_bound() -> None:
    _, _, W = random_problem()
    Y_S = np.eye(4)
    bound = lambda_bound(dual_matrix(W, Y_S))
    with pytest.raises(KRRInfeasible, match="exceeds the bound") as info:
        distill_features(W, Y_S, 1.01 * bound)
    assert f"{bound:.6g}" in str(info.value)


def test_zero_Z_maximizes_the_lambda_bound() -> None:
    _, _, W = random_problem()
    Y_S = one_hot(np.arange(8) % 4, 4)
    free = lambda_bound(dual_matrix(W, Y_S))
    for seed in range(3):
        Z = rng(seed).standard_normal((8, 12))
        assert lambda_bound(dual_matrix(W, Y_S, Z)) <= free * (1 + 1e-12)


@pytest.mark.parametrize("lam", [0.0, 1e-2])
@pytest.mark.parametrize("name", ["linear", "rff", "mlp"])
def test_digits_feature_space_exact(digits, name: str, lam: float) -> None:
    X, y = digits
    fm = digits_maps()[name]
    W = fit_krr(fm(X), one_hot(y, K), lam)
    for m in (K, 3 * K):
        Y_S = one_hot(np.arange(m) % K, K)
        Z = None if m == K else rng(m).standard_normal((m, fm.p))
        for lam_S in (0.0, 0.5 * lambda_bound(dual_matrix(W, Y_S, Z))):
            Phi_S = distill_features(W, Y_S, lam_S, Z)
            assert relative_error(fit_krr(Phi_S, Y_S, lam_S), W) <= TOL, (m, lam_S)


# --- close to real points ----------------------------------------------------------------------


@pytest.mark.parametrize("lam_S", [0.0, 5e-5])
@pytest.mark.parametrize("name", ["linear", "rff", "mlp"])
def test_close_to_real_is_exact_and_closer_than_noise(digits, name: str, lam_S: float) -> None:
    X, y = digits
    fm = digits_maps()[name]
    W = fit_krr(fm(X), one_hot(y, K), 1e-2)
    idx = balanced(y, 3)  # m = 30 < p
    Phi_hat, Y_hat = fm(X[idx]), one_hot(y[idx], K)
    Z_real = regularized_pinv(Phi_hat, lam_S).T
    Z_noise = rng(5).standard_normal(Z_real.shape)
    Z_noise *= np.linalg.norm(Z_real) / np.linalg.norm(Z_noise)
    noise = relative_error(distill_features(W, Y_hat, lam_S, Z_noise, "nearest", Phi_hat), Phi_hat)
    dist = {}
    for labels in ("onehot", "model"):
        Phi_S, Y_S = close_to_real(W, Phi_hat, lam_S, labels=labels, Y_hat=Y_hat)
        assert relative_error(fit_krr(Phi_S, Y_S, lam_S), W) <= TOL
        dist[labels] = relative_error(Phi_S, Phi_hat)
    assert dist["onehot"] < noise
    assert dist["model"] < dist["onehot"]  # the model's predictions as labels get closer still


@pytest.mark.parametrize("lam_S", [0.0, 1e-3])
def test_close_to_real_optimal_labels_recover_the_real_points_when_m_ge_p(digits, lam_S: float) -> None:
    X, y = digits
    fm = digits_maps()["rff"]
    W = fit_krr(fm(X), one_hot(y, K), 1e-2)
    Phi_hat = fm(X[balanced(y, 6)])  # m = 60 ≥ p = 48, rank p
    Phi_S, Y_S = close_to_real(W, Phi_hat, lam_S, labels="optimal")
    assert relative_error(fit_krr(Phi_S, Y_S, lam_S), W) <= TOL
    assert relative_error(Phi_S, Phi_hat) <= 1e-8
    if lam_S == 0:  # optimal labels = the model's predictions for λ_S = 0
        assert np.allclose(Y_S, Phi_hat @ W.T, atol=1e-12)
    else:
        assert not np.allclose(Y_S, Phi_hat @ W.T, atol=1e-6)


def test_close_to_real_optimal_labels_at_least_as_close_as_predictions(digits) -> None:
    X, y = digits
    fm = digits_maps()["mlp"]
    W = fit_krr(fm(X), one_hot(y, K), 1e-2)
    Phi_hat = fm(X[balanced(y, 10)])  # m = 100 ≥ p = 32
    lam_S = 1e-3
    model = relative_error(close_to_real(W, Phi_hat, lam_S, labels="model")[0], Phi_hat)
    optimal = relative_error(close_to_real(W, Phi_hat, lam_S, labels="optimal")[0], Phi_hat)
    assert optimal <= 1e-8 < model


def test_close_to_real_onehot_needs_labels() -> None:
    _, _, W = random_problem()
    with pytest.raises(ValueError, match="Y_hat"):
        close_to_real(W, rng(0).standard_normal((8, 12)), 0.0, labels="onehot")


# --- label-only --------------------------------------------------------------------------------


@pytest.mark.parametrize("lam_S", [0.0, 0.2])
def test_label_only_random(lam_S: float) -> None:
    _, _, W = random_problem(p=12)
    Phi_S = rng(7).standard_normal((15, 12))  # m ≥ p
    Y_S = label_only(W, Phi_S, lam_S)
    assert Y_S.shape == (15, 4)
    assert relative_error(fit_krr(Phi_S, Y_S, lam_S), W) <= TOL
    if lam_S == 0:
        assert np.allclose(Y_S, Phi_S @ W.T)  # the model's predictions on X_S


@pytest.mark.parametrize("lam_S", [0.0, 0.05])
@pytest.mark.parametrize("name", ["rff", "mlp"])
def test_label_only_digits(digits, name: str, lam_S: float) -> None:
    X, y = digits
    fm = digits_maps()[name]
    W = fit_krr(fm(X), one_hot(y, K), 1e-2)
    Phi_S = fm(X[balanced(y, 6)])  # m = 60 ≥ p
    assert relative_error(fit_krr(Phi_S, label_only(W, Phi_S, lam_S), lam_S), W) <= TOL


def test_label_only_too_few_points_raises() -> None:
    _, _, W = random_problem(p=12)
    Phi_S = rng(8).standard_normal((7, 12))
    with pytest.raises(KRRInfeasible, match=r"m = 7 < p = 12"):
        label_only(W, Phi_S, 0.0)
    rank_deficient = np.hstack([rng(9).standard_normal((20, 6))] * 2)  # m ≥ p but rank 6
    with pytest.raises(KRRInfeasible, match=r"rank Φ_S = 6 < p = 12"):
        label_only(W, rank_deficient, 0.1)


def test_label_only_allows_W_in_the_row_space() -> None:
    Phi_S = rng(10).standard_normal((7, 12))
    W = rng(11).standard_normal((4, 7)) @ Phi_S  # rows of W in the row space of Φ_S
    Y_S = label_only(W, Phi_S, 0.1)
    assert relative_error(fit_krr(Phi_S, Y_S, 0.1), W) <= TOL


# --- feature maps and inputs -------------------------------------------------------------------


def test_rff_round_trip() -> None:
    fm = RandomFourierFeatures(20, 15, sigma=2.0, seed=3)
    F = fm.bound * rng(0).uniform(-0.999, 0.999, (30, 15))
    X = fm.inverse(F)
    assert X.shape == (30, 20)
    assert np.max(np.abs(fm(X) - F)) <= TOL
    with pytest.raises(KRRInfeasible, match="out of range"):
        fm.inverse(1.5 * fm.bound * np.ones((1, 15)))


@pytest.mark.parametrize(("slope", "tol"), [(MLP_SLOPE, TOL), (0.01, 1e-6)])
def test_mlp_round_trip(slope: float, tol: float) -> None:
    fm = LeakyReLUMLP(64, [64, 48, 32], slope=slope, seed=4)
    F = rng(1).standard_normal((25, 32))
    X = fm.inverse(F)
    assert X.shape == (25, 64)
    assert np.linalg.norm(fm(X) - F) / np.linalg.norm(F) <= tol


def test_linear_map_is_identity() -> None:
    X = rng(2).standard_normal((3, 5))
    fm = LinearFeatures(5)
    assert fm.surjective and np.array_equal(fm(X), X) and np.array_equal(fm.inverse(X), X)


@pytest.mark.parametrize("lam_S_frac", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("name", ["linear", "rff", "mlp"])
def test_distill_inputs_digits_exact(digits, name: str, lam_S_frac: float) -> None:
    X, y = digits
    fm = digits_maps()[name]
    W = fit_krr(fm(X), one_hot(y, K), 1e-2)
    Y_S = one_hot(np.arange(2 * K) % K, K)
    Z = 0.1 * rng(6).standard_normal((2 * K, fm.p))
    lam_S = lam_S_frac * lambda_bound(dual_matrix(W, Y_S, Z))
    out = distill_inputs(fm, W, Y_S, lam_S, Z)
    assert out.X.shape == (2 * K, 64)
    assert np.allclose(out.Y, out.label_scale * Y_S)
    assert relative_error(fit_krr(fm(out.X), out.Y, lam_S), W) <= TOL
    if name == "rff":
        assert np.max(np.abs(out.features)) <= fm.bound * (1 - 1e-2) * (1 + 1e-12)
    else:
        assert out.label_scale == 1.0


@pytest.mark.parametrize("lam_S", [0.0, 0.05, 5.0])
def test_distill_inputs_rff_random_scales_labels_into_range(lam_S: float) -> None:
    g = rng(12)
    fm = RandomFourierFeatures(10, 8, sigma=1.5, seed=5)
    X = g.standard_normal((80, 10))
    W = fit_krr(fm(X), one_hot(g.integers(0, 3, 80), 3), 0.1)
    W = 0.01 * W  # small weights need large features (≈ W⁺): the unscaled targets leave the cosine's range
    Y_S = one_hot(np.arange(6) % 3, 3)
    assert np.max(np.abs(distill_features(W, Y_S, 0.0))) > fm.bound  # unscaled: out of range
    out = distill_inputs(fm, W, Y_S, lam_S)  # λ_S = 5 is far beyond the unscaled bound
    assert out.label_scale != 1.0
    assert np.max(np.abs(fm(out.X))) < fm.bound
    assert relative_error(fit_krr(fm(out.X), out.Y, lam_S), W) <= TOL


def test_distill_inputs_random_mlp_and_linear() -> None:
    g = rng(13)
    for fm in (LeakyReLUMLP(10, [9, 6], slope=MLP_SLOPE, seed=6), LinearFeatures(6)):
        X = g.standard_normal((50, fm.d))
        W = fit_krr(fm(X), one_hot(g.integers(0, 3, 50), 3), 0.05)
        Y_S = one_hot(np.arange(5) % 3, 3)
        lam_S = 0.5 * lambda_bound(dual_matrix(W, Y_S))
        out = distill_inputs(fm, W, Y_S, lam_S)
        assert np.allclose(fm(out.X), out.features, atol=1e-10)
        assert relative_error(fit_krr(fm(out.X), out.Y, lam_S), W) <= TOL


# --- clear errors ------------------------------------------------------------------------------


def test_fewer_points_than_classes_raises() -> None:
    _, _, W = random_problem(k=4)
    with pytest.raises(KRRInfeasible, match=r"m=3 < k=4"):
        distill_features(W, np.eye(4)[:3], 0.0)


def test_rank_deficient_labels_raise() -> None:
    _, _, W = random_problem(k=4)
    Y_S = one_hot(np.arange(8) % 3, 4)  # m = 8 ≥ k but class 3 never appears
    with pytest.raises(KRRInfeasible, match=r"rank Y_S = 3 < k = 4"):
        distill_features(W, Y_S, 0.0)


def test_rff_with_p_greater_than_d_raises() -> None:
    with pytest.raises(KRRInfeasible, match=r"p = 9 > d = 8"):
        RandomFourierFeatures(8, 9)


def test_mlp_with_increasing_widths_raises() -> None:
    with pytest.raises(KRRInfeasible, match="must not increase"):
        LeakyReLUMLP(8, [6, 7])
    with pytest.raises(KRRInfeasible, match="must not increase"):
        LeakyReLUMLP(8, [9])
    with pytest.raises(KRRInfeasible, match="slope"):
        LeakyReLUMLP(8, [6], slope=0.0)
