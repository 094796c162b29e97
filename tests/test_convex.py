"""Convex inner problems: cvxpy solutions agree with scikit-learn / scipy, hypergradients with finite differences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("cvxpy")

from ddspec.components.closed_form.convex import (
    ConvexModel,
    ConvexSolveError,
    active_set,
    hypergradient,
    objective,
    predict,
    solve,
)

RTOL_FD = 1e-5
H = 1e-4


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    """Standardized breast_cancer, an 80-sample subsample."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    idx = np.random.default_rng(0).choice(len(y), 80, replace=False)
    return X[idx], y[idx].astype(float)


def _blobs(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d))
    X[:, :k] += 1.5 * np.eye(k)[y]
    return X, y


# ---------------------------------------------------------------- agreement with scikit-learn / scipy


def test_logistic_l2_binary_matches_sklearn(cancer):
    from sklearn.linear_model import LogisticRegression

    X, y = cancer
    n, lam = len(y), 0.05
    model = ConvexModel("logistic_l2", lam)
    sol = solve(model, X, y)
    # (1/n) Σ CE + (λ/2)‖w‖²  =  (1/(nλ)) · [C Σ CE + ½‖w‖²]  with C = 1/(nλ)
    sk = LogisticRegression(C=1 / (n * lam), l1_ratio=0, tol=1e-12, max_iter=100_000).fit(X, y)
    assert sol.status == "optimal" and sol.polished
    assert _rel(sol.W[:, 0], sk.coef_[0]) < 1e-5
    assert abs(sol.b[0] - sk.intercept_[0]) < 1e-5
    assert objective(model, X, y, sol.W, sol.b) <= objective(model, X, y, sk.coef_.T, sk.intercept_) + 1e-12
    assert abs(sol.objective - objective(model, X, y, sol.W, sol.b)) < 1e-12
    np.testing.assert_allclose(predict(sol, X)[:, 0], sk.decision_function(X), rtol=1e-5, atol=1e-5)


def test_logistic_l2_multinomial_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    X, y = _blobs(60, 4, 3, seed=1)
    lam = 0.02
    sol = solve(ConvexModel("logistic_l2", lam, classes=3), X, y)
    sk = LogisticRegression(C=1 / (60 * lam), l1_ratio=0, tol=1e-12, max_iter=100_000).fit(X, y)
    assert sol.W.shape == (4, 3) and sol.b.shape == (3,)
    assert _rel(sol.W, sk.coef_.T) < 1e-5
    # softmax is shift invariant: the bias is fixed by the gauge Σ_k b_k = 0
    assert abs(sol.b.sum()) < 1e-12
    np.testing.assert_allclose(sol.b, sk.intercept_ - sk.intercept_.mean(), atol=1e-5)


@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_l1_matches_saga(cancer, classes):
    from sklearn.linear_model import LogisticRegression

    X, y = (cancer[0][:, :10], cancer[1]) if classes == 2 else _blobs(60, 4, 3, seed=1)
    n, lam = len(y), 0.02
    sol = solve(ConvexModel("logistic_l1", lam, classes=classes), X, y)
    # (1/n) Σ CE + λ‖W‖₁ = (1/(nλ)) · [C Σ CE + ‖W‖₁], C = 1/(nλ); saga leaves the intercept unpenalized
    # (liblinear would penalize it)
    sk = LogisticRegression(C=1 / (n * lam), l1_ratio=1, solver="saga", tol=1e-12, max_iter=1_000_000).fit(X, y)
    W_sk = sk.coef_.T
    assert _rel(sol.W, W_sk) < 1e-5
    np.testing.assert_array_equal(sol.W != 0, np.abs(W_sk) > 1e-8)
    assert 0 < np.count_nonzero(sol.W) < sol.W.size
    b_sk = sk.intercept_ - sk.intercept_.mean() if classes > 2 else sk.intercept_
    np.testing.assert_allclose(sol.b, b_sk, atol=1e-5)


def test_svm_matches_svc(cancer):
    from sklearn.svm import SVC

    X, y = cancer
    n, lam = len(y), 0.05
    model = ConvexModel("svm", lam)
    sol = solve(model, X, y)
    # (1/n) Σ hinge + (λ/2)‖w‖² = λ · [½‖w‖² + C Σ hinge], C = 1/(nλ); SVC leaves b unpenalized (LinearSVC does not)
    sk = SVC(kernel="linear", C=1 / (n * lam), tol=1e-12).fit(X, y)
    assert _rel(sol.W[:, 0], sk.coef_[0]) < 1e-5
    assert abs(sol.b[0] - sk.intercept_[0]) < 1e-5
    act = active_set(model, X, y, sol)
    assert act.margin.sum() >= 1 and act.strict
    # our multipliers α ∈ [0, 1/n] are λ times libsvm's |dual_coef_| ∈ [0, C]
    alpha = np.zeros(n)
    alpha[sk.support_] = lam * np.abs(sk.dual_coef_[0])
    np.testing.assert_allclose(act.dual[:, 0], alpha, atol=1e-7)
    assert np.all(act.dual[act.margin] < 1 / n) and np.all(act.dual[act.margin] > 0)


def test_ridge_matches_sklearn_with_weights():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(2)
    n, lam = 50, 0.1
    X = rng.normal(size=(n, 5))
    Y = X @ rng.normal(size=(5, 2)) + 0.1 * rng.normal(size=(n, 2))
    w = rng.uniform(0.5, 2.0, n)
    sol = solve(ConvexModel("ridge", lam, classes=0), X, Y, weights=w)
    # (1/n) Σ ω_i ‖x_i W + b − y_i‖² + λ‖W‖² = (1/n) · [Σ s_i ‖·‖² + α‖W‖²] with s = ω, α = nλ
    sk = Ridge(alpha=n * lam).fit(X, Y, sample_weight=w)
    assert _rel(sol.W, sk.coef_.T) < 1e-8
    np.testing.assert_allclose(sol.b, sk.intercept_, atol=1e-8)


@pytest.mark.parametrize("constraint", ["nonneg", "box"])
def test_constrained_ridge_matches_bounded_least_squares(constraint):
    from scipy.optimize import lsq_linear, nnls

    rng = np.random.default_rng(3)
    n, d, lam, c = 40, 6, 0.05, 0.4
    X = rng.normal(size=(n, d))
    y = X @ np.array([1.0, -0.8, 0.5, -0.3, 0.2, 0.9]) + 0.1 * rng.normal(size=n)
    model = ConvexModel("ridge", lam, classes=0, constraint=constraint, bound=c)
    sol = solve(model, X, y)
    # b is free: b = ȳ − x̄ᵀw, leaving ‖[X_c/√n; √λ I] w − [y_c/√n; 0]‖² over the constraint set
    Xc, yc = X - X.mean(0), y - y.mean()
    A, r = np.vstack([Xc / np.sqrt(n), np.sqrt(lam) * np.eye(d)]), np.concatenate([yc / np.sqrt(n), np.zeros(d)])
    w_ref = nnls(A, r)[0] if constraint == "nonneg" else lsq_linear(A, r, bounds=(-c, c), method="bvls", tol=1e-14).x
    assert _rel(sol.W[:, 0], w_ref) < 1e-8
    assert abs(sol.b[0] - (y.mean() - X.mean(0) @ w_ref)) < 1e-8
    act = active_set(model, X, y, sol)
    assert 0 < (~act.free[:-1]).sum() < d and act.strict


# ---------------------------------------------------------------- hypergradients vs finite differences


def _outer(model: ConvexModel, W: np.ndarray, b: np.ndarray, Xv: np.ndarray, yv: np.ndarray):
    """A smooth outer loss on a held-out batch and its gradient: CE (BCE for one score column), MSE for ridge."""
    Wt, bt = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
    Z = torch.as_tensor(Xv) @ Wt + bt
    if model.kind == "ridge":
        loss = ((Z - torch.as_tensor(yv).reshape(len(yv), -1)) ** 2).mean()
    elif Z.shape[1] == 1:
        loss = F.binary_cross_entropy_with_logits(Z[:, 0], torch.as_tensor(yv, dtype=torch.float64))
    else:
        loss = F.cross_entropy(Z, torch.as_tensor(yv, dtype=torch.long))
    loss.backward()
    return loss.item(), Wt.grad.numpy(), bt.grad.numpy()


def _check_fd(model, X, Y, Xv, yv, weights=None, wrt=("X", "Y", "weights"), seed=0):
    """⟨dL/dD, V⟩ against (L(D + hV) − L(D − hV)) / 2h with L re-solved by cvxpy, for D in ``wrt``; the local
    structure must be the same at D ± hV (else the finite difference straddles a kink)."""
    w = np.ones(len(X)) if weights is None else weights
    sol = solve(model, X, Y, w)
    assert sol.polished and sol.residual < 1e-12
    act = active_set(model, X, Y, sol, w)
    assert act.strict
    _, gW, gb = _outer(model, sol.W, sol.b, Xv, yv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hg = hypergradient(model, X, Y, sol, gW, gb, w)
    assert hg.X.shape == X.shape and hg.weights.shape == w.shape
    rng = np.random.default_rng(seed)
    data = {"X": np.asarray(X, float), "Y": np.asarray(Y, float), "weights": w}
    grads = {"X": hg.X, "Y": hg.Y, "weights": hg.weights}
    for name in wrt:
        V = rng.normal(size=data[name].shape) * (0.1 if name != "X" else 1.0)
        values = []
        for sign in (1, -1):
            moved = dict(data, **{name: data[name] + sign * H * V})
            s = solve(model, moved["X"], moved["Y"], moved["weights"])
            a = active_set(model, moved["X"], moved["Y"], s, moved["weights"])
            np.testing.assert_array_equal(a.free, act.free)
            if act.margin is not None:
                np.testing.assert_array_equal(a.margin, act.margin)
            values.append(_outer(model, s.W, s.b, Xv, yv)[0])
        fd = (values[0] - values[1]) / (2 * H)
        analytic = float((grads[name] * V).sum())
        assert abs(analytic - fd) <= RTOL_FD * max(abs(fd), 1e-4), (name, analytic, fd)
    return hg, act


def test_hypergradient_logistic_l2_binary(cancer):
    X, y = cancer[0][:40, :8], cancer[1][:40]
    Xv, yv = cancer[0][40:, :8], cancer[1][40:]
    soft = 0.8 * y + 0.1
    w = np.random.default_rng(4).uniform(0.5, 1.5, 40)
    hg, _ = _check_fd(ConvexModel("logistic_l2", 0.05), X, soft, Xv, yv, weights=w)
    assert hg.Y.shape == (40,)


def test_hypergradient_logistic_l2_multinomial():
    X, y = _blobs(45, 4, 3, seed=5)
    Xv, yv = _blobs(30, 4, 3, seed=6)
    soft = 0.7 * np.eye(3)[y] + 0.1
    hg, _ = _check_fd(ConvexModel("logistic_l2", 0.03, classes=3), X, soft, Xv, yv)
    assert hg.Y.shape == (45, 3)
    # integer labels: dY is the gradient w.r.t. the one-hot targets
    model = ConvexModel("logistic_l2", 0.03, classes=3)
    sol = solve(model, X, y)
    _, gW, gb = _outer(model, sol.W, sol.b, Xv, yv)
    assert hypergradient(model, X, y, sol, gW, gb).Y.shape == (45, 3)


@pytest.mark.parametrize("classes", [2, 3])
def test_hypergradient_logistic_l1(cancer, classes):
    if classes == 2:
        X, Y, Xv, yv = cancer[0][:40, :8], 0.8 * cancer[1][:40] + 0.1, cancer[0][40:, :8], cancer[1][40:]
    else:
        (X, y), (Xv, yv) = _blobs(45, 5, 3, seed=7), _blobs(30, 5, 3, seed=8)
        Y = 0.7 * np.eye(3)[y] + 0.1
    _, act = _check_fd(ConvexModel("logistic_l1", 0.03, classes=classes), X, Y, Xv, yv)
    pinned = ~act.free[:-1]
    assert pinned.any() and act.free[:-1].any()


@pytest.mark.parametrize("classes", [2, 3])
def test_hypergradient_svm(classes):
    X, y = _blobs(40, 4, classes, seed=9)
    Xv, yv = _blobs(30, 4, classes, seed=10)
    w = np.random.default_rng(11).uniform(0.5, 1.5, 40)
    hg, act = _check_fd(ConvexModel("svm", 0.05, classes=classes), X, y, Xv, yv, weights=w, wrt=("X", "weights"))
    assert hg.Y is None
    assert np.all(act.margin.sum(0) >= 1)  # every (one-vs-rest) column has samples on its margin


@pytest.mark.parametrize("constraint", ["nonneg", "box"])
def test_hypergradient_constrained_ridge(constraint):
    rng = np.random.default_rng(12)
    X, Xv = rng.normal(size=(30, 5)), rng.normal(size=(20, 5))
    beta = np.array([[1.0, -0.5], [-0.8, 0.6], [0.5, 0.9], [-0.3, -1.0], [0.7, 0.2]])
    Y, Yv = X @ beta + 0.1 * rng.normal(size=(30, 2)), Xv @ beta
    model = ConvexModel("ridge", 0.05, classes=0, constraint=constraint, bound=0.5)
    hg, act = _check_fd(model, X, Y, Xv, Yv, weights=rng.uniform(0.5, 1.5, 30))
    assert (~act.free[:-1]).any()  # an active constraint
    assert hg.Y.shape == (30, 2)


def test_hypergradient_ridge_classification():
    X, y = _blobs(30, 4, 3, seed=13)
    Xv, yv = _blobs(20, 4, 3, seed=14)
    model = ConvexModel("ridge", 0.1, classes=3)
    sol = solve(model, X, y)
    assert sol.W.shape == (4, 3)
    hg, _ = _check_fd(model, X, np.eye(3)[y], Xv, np.eye(3)[yv])
    assert hg.Y.shape == (30, 3)
    # a one-hot matrix and integer labels give the same problem
    np.testing.assert_allclose(solve(model, X, np.eye(3)[y]).W, sol.W, atol=1e-10)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan")])
def test_lam_must_be_positive(lam):
    with pytest.raises(ValueError, match="lam"):
        ConvexModel("logistic_l2", lam)


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "lasso"}, "unknown convex model"),
    ({"kind": "svm", "classes": 1}, "classes"),
    ({"kind": "ridge", "classes": 1}, "classes"),
    ({"kind": "logistic_l2", "constraint": "nonneg"}, "only supported for ridge"),
    ({"kind": "ridge", "constraint": "simplex"}, "unknown constraint"),
    ({"kind": "ridge", "constraint": "box", "bound": 0.0}, "bound"),
])
def test_bad_model(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvexModel(**{"lam": 0.1, **kwargs})


def test_bad_inputs():
    X, y = _blobs(20, 3, 2, seed=15)
    with pytest.raises(ValueError, match="rows"):
        solve(ConvexModel("logistic_l2", 0.1), X, y[:-1])
    with pytest.raises(ValueError, match="integer labels"):
        solve(ConvexModel("svm", 0.1), X, 0.5 * np.ones(20))
    with pytest.raises(ValueError, match="shape \\(n, 3\\)"):
        solve(ConvexModel("logistic_l2", 0.1, classes=3), X, np.ones((20, 2)))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        solve(ConvexModel("logistic_l2", 0.1), X, y + 1)
    with pytest.raises(ValueError, match="weights"):
        solve(ConvexModel("logistic_l2", 0.1), X, y, weights=-np.ones(20))
    with pytest.raises(ValueError, match="X must be"):
        solve(ConvexModel("logistic_l2", 0.1), X[:, 0], y)
    model = ConvexModel("logistic_l2", 0.1)
    sol = solve(model, X, y)
    with pytest.raises(ValueError, match="grad_W"):
        hypergradient(model, X, y, sol, np.zeros(4), np.zeros(1))
    with pytest.raises(ValueError, match="solution has"):
        hypergradient(ConvexModel("logistic_l2", 0.1, classes=3), X, y.astype(int), sol, np.zeros((3, 3)),
                      np.zeros(3))


def test_solver_failure_is_reported():
    X, y = _blobs(20, 3, 2, seed=16)
    model = ConvexModel("logistic_l2", 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy's own "solution may be inaccurate"
        with pytest.raises(ConvexSolveError, match="status"):
            solve(model, X, y, polish=False, max_iter=2)
    with pytest.raises(ConvexSolveError, match="NO_SUCH_SOLVER"):
        solve(model, X, y, solver="NO_SUCH_SOLVER")


def test_non_unique_solution_has_no_hypergradient():
    # both samples strictly inside the margin and balanced labels: the objective is flat in b, no margin sample
    X, y = np.array([[-1.0], [1.0]]), np.array([0, 1])
    model = ConvexModel("svm", 10.0)
    sol = solve(model, X, y)
    assert abs(sol.W[0, 0] - 0.1) < 1e-8
    assert not active_set(model, X, y, sol).margin.any()
    with pytest.raises(ValueError, match="not locally unique"):
        hypergradient(model, X, y, sol, np.ones((1, 1)), np.ones(1))


# ---------------------------------------------------------------- the loss objects


@pytest.mark.parametrize(("train", "kind", "constraint"), [
    ({"loss": "logistic", "penalty": "l2"}, "logistic_l2", None),
    ({"loss": "logistic", "penalty": "l1"}, "logistic_l1", None),
    ({"loss": "svm"}, "svm", None),
    ({"loss": "squared"}, "ridge", None),
    ({"loss": "squared", "constraint": "nonnegative"}, "ridge", "nonneg"),
    ({"loss": "squared", "constraint": "box", "box": 0.5}, "ridge", "box"),
])
def test_train_convex_picks_its_loss_object(train, kind, constraint):
    from ddspec.spec.kernel import ConvexTrain

    model = ConvexModel.of_train(ConvexTrain(**train), 3)
    assert (model.kind, model.constraint, model.loss.name) == (kind, constraint, kind)
    assert model.bound == train.get("box", 1.0)


def test_only_the_squared_loss_takes_real_targets():
    X = np.random.default_rng(0).standard_normal((12, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    sol = solve(ConvexModel("ridge", 1e-3, classes=0), X, y)
    # ridge with a tiny λ: (1/n)‖Xw + b − y‖² + λ‖w‖² ≈ least squares with intercept, solved exactly
    A = np.hstack([X, np.ones((12, 1))])
    exact = np.linalg.solve(A.T @ A / 12 + np.diag([1e-3] * 3 + [0.0]), A.T @ y / 12)
    np.testing.assert_allclose(np.append(sol.W[:, 0], sol.b), exact, rtol=1e-8, atol=1e-10)
    for kind in ("logistic_l2", "logistic_l1", "svm"):
        with pytest.raises(ValueError, match="classes >= 2"):
            ConvexModel(kind, 0.1, classes=0)
