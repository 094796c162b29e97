"""Closed-form dataset distillation for kernel ridge regression (KRR).

After Chen, Huang & Weng (2024), "Provable and Efficient Dataset Distillation for Kernel Ridge
Regression". A KRR model with feature map φ: R^d → R^p has weights W (k×p); a synthetic set is
*exact* when KRR trained on it gives the same W. Everything here is numpy float64 (the feature
maps' :meth:`FeatureMap.torch` twins import torch when called). Y is any target matrix: one-hot class
rows, or real-valued targets (regression).

Conventions. The paper stores samples as columns (X ∈ R^{d×n}, Y ∈ R^{k×n}, φ(X) ∈ R^{p×n}); this
module, like the rest of ddspec, stores them as ROWS:

======================  ==========================  =============================================
object                  paper (columns = samples)   here (rows = samples)
======================  ==========================  =============================================
inputs, labels          X (d×n), Y (k×n)            ``X`` = Xᵀ (n×d), ``Y`` = Yᵀ (n×k)
features                φ(X) (p×n)                  ``Phi`` = φ(X)ᵀ (n×p)
weights, predictions    W (k×p), W φ(x)             ``W`` (k×p, the same matrix), ``Phi @ W.T``
regularized pinv        φ_λ(X)⁺ (n×p)               ``regularized_pinv(Phi, λ)`` = φ_λ(X)⁺ᵀ (p×n)
dual matrix, free part  D, Z (m×p)                  ``D``, ``Z`` (m×p, the same matrices)
======================  ==========================  =============================================

so W = Y φ_λ(X)⁺ reads ``W = (regularized_pinv(Phi, λ) @ Y).T``, the usual ridge solution
Wᵀ = (ΦᵀΦ + λI_p)⁻¹ΦᵀY = Φᵀ(ΦΦᵀ + λI_n)⁻¹Y (λ > 0) or Wᵀ = Φ⁺Y (λ = 0).

Construction (feature space). For m ≥ k synthetic labels Y_S (m×k) of rank k, every D (m×p) with
Y_Sᵀ D = W is D = Y_S⁺ᵀ W + (I_m − Y_S Y_S⁺) Z (Z ∈ R^{m×p} free; Z = 0 gives the smallest ‖D‖₂,
hence the largest admissible λ_S). With the reduced SVD D = V diag(σ') Uᵀ the synthetic features
are Φ_S = V diag(σ) Uᵀ, where σ solves σ / (σ² + λ_S) = σ' (the singular values of φ_λ⁺):

* λ_S = 0: σ = 1/σ', i.e. Φ_S = D⁺ᵀ;
* λ_S > 0: σ = (1 ± √(1 − 4λ_Sσ'²)) / (2σ'), real iff λ_S ≤ 1/(4σ'₁²) (:func:`lambda_bound`).
  The paper takes "+" (``branch="large"``); "−" (``branch="small"``, σ ≈ λ_Sσ') is just as exact
  and is what keeps random-Fourier targets bounded (see :func:`distill_inputs`). The root can be
  chosen per singular value; ``branch="nearest"`` picks the one closest to reference features.

Surjective feature maps are then inverted to get inputs (:class:`FeatureMap`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.linalg as sla

if TYPE_CHECKING:
    import torch

Branch = Literal["large", "small", "nearest"]


class KRRInfeasible(ValueError):
    """The theory says no: the message says why and what would work."""


# ---------------------------------------------------------------------------------------------
# linear algebra


def _as_matrix(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a matrix, got shape {a.shape}")
    return a


def _svd(a: np.ndarray, rtol: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduced SVD a = U diag(s) Vh, keeping only s > rtol·s_max (default rtol = max(a.shape)·eps)."""
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    if rtol is None:
        rtol = max(a.shape) * np.finfo(np.float64).eps
    keep = s > rtol * s[0] if s.size and s[0] > 0 else np.zeros(s.shape, dtype=bool)
    return u[:, keep], s[keep], vh[keep]


def pinv(a: np.ndarray, rtol: float | None = None) -> np.ndarray:
    """Moore–Penrose pseudo-inverse by SVD; singular values ≤ rtol·s_max count as zero."""
    u, s, vh = _svd(_as_matrix(a, "a"), rtol)
    return (vh.T / s) @ u.T


def rank(a: np.ndarray, rtol: float | None = None) -> int:
    """Numerical rank with the same tolerance as :func:`pinv`."""
    return int(_svd(_as_matrix(a, "a"), rtol)[1].size)


def regularized_pinv(Phi: np.ndarray, lam: float) -> np.ndarray:
    """φ_λ(X)⁺ in row convention (p×n): (ΦᵀΦ + λI_p)⁻¹Φᵀ = Φᵀ(ΦΦᵀ + λI_n)⁻¹ for λ > 0, Φ⁺ for λ = 0.

    For λ > 0 this is the pseudo-inverse of the stacked matrix [Φ; √λ I_p] (or its dual
    [Φᵀ; √λ I_n], whichever has fewer columns), computed by QR: the cost of the smaller n×n or p×p
    system without squaring the condition number as the normal equations would.
    """
    Phi = _as_matrix(Phi, "Phi")
    if lam < 0:
        raise ValueError(f"lam must be ≥ 0, got {lam}")
    if lam == 0:
        return pinv(Phi)
    n, p = Phi.shape
    root = np.sqrt(lam)
    if p <= n:  # (ΦᵀΦ + λI)⁻¹Φᵀ = first n columns of [Φ; √λ I_p]⁺
        q, r = sla.qr(np.vstack([Phi, root * np.eye(p)]), mode="economic")
        return sla.solve_triangular(r, q[:n].T)
    # Φᵀ(ΦΦᵀ + λI)⁻¹ = (first p columns of [Φᵀ; √λ I_n]⁺)ᵀ
    q, r = sla.qr(np.vstack([Phi.T, root * np.eye(n)]), mode="economic")
    return sla.solve_triangular(r, q[:p].T).T


def fit_krr(Phi: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    """KRR weights W (k×p) from features Φ (n×p) and labels Y (n×k): W = (φ_λ⁺ Y)ᵀ."""
    Y = _as_matrix(Y, "Y")
    if Y.shape[0] != np.shape(Phi)[0]:
        raise ValueError(f"Phi has {np.shape(Phi)[0]} rows but Y has {Y.shape[0]}")
    return (regularized_pinv(Phi, lam) @ Y).T


def relative_error(W_S: np.ndarray, W: np.ndarray) -> float:
    """‖W_S − W‖_F / ‖W‖_F."""
    return float(np.linalg.norm(np.asarray(W_S) - np.asarray(W)) / np.linalg.norm(W))


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    """Integer labels (n,) → one-hot float64 (n×k)."""
    return np.eye(k)[np.asarray(labels, dtype=int)]


# ---------------------------------------------------------------------------------------------
# feature space


def dual_matrix(W: np.ndarray, Y_S: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
    """D (m×p) = Y_S⁺ᵀ W + (I − Y_S Y_S⁺) Z: the solutions of Y_Sᵀ D = W (what φ_λS(X_S)⁺ᵀ must be).

    Needs m ≥ k and rank Y_S = k; Z = None means Z = 0.
    """
    W, Y_S = _as_matrix(W, "W"), _as_matrix(Y_S, "Y_S")
    m, k = Y_S.shape
    if W.shape[0] != k:
        raise ValueError(f"W has {W.shape[0]} rows (classes) but Y_S has {k} columns")
    if m < k:
        raise KRRInfeasible(
            f"fewer synthetic points than classes (m={m} < k={k}): Y_Sᵀ D = W has no solution for a "
            f"general W of rank k; use m ≥ k points (m = k with Y_S = I_k is the smallest exact set)"
        )
    r = rank(Y_S)
    if r < k:
        raise KRRInfeasible(
            f"rank Y_S = {r} < k = {k}: the synthetic labels must have full column rank k so that "
            f"Y_Sᵀ D = W is solvable for every W; use e.g. one-hot labels covering all {k} classes"
        )
    Y_pinv = pinv(Y_S)  # k×m
    D = Y_pinv.T @ W
    if Z is not None:
        Z = _as_matrix(Z, "Z")
        if Z.shape != (m, W.shape[1]):
            raise ValueError(f"Z must be m×p = {(m, W.shape[1])}, got {Z.shape}")
        D = D + Z - Y_S @ (Y_pinv @ Z)
    return D


def lambda_bound(D: np.ndarray) -> float:
    """Largest admissible λ_S for the dual matrix D: 1 / (4σ'₁²) (∞ when D = 0)."""
    s = _svd(_as_matrix(D, "D"))[1]
    return float("inf") if s.size == 0 else float(1.0 / (4.0 * s[0] ** 2))


def features_from_dual(
    D: np.ndarray, lam_S: float, branch: Branch = "large", reference: np.ndarray | None = None
) -> np.ndarray:
    """Φ_S (m×p) with regularized_pinv(Φ_S, λ_S)ᵀ = D: singular values σ with σ/(σ² + λ_S) = σ'.

    Any root may be taken for each singular value independently. ``branch="nearest"`` picks, per
    singular triplet (v_i, σ'_i, u_i) of D, the root nearest a_i = v_iᵀ R u_i for a ``reference``
    R (m×p): since ‖Σσ_i v_i u_iᵀ − R‖² = Σ(σ_i² − 2σ_i a_i) + ‖R‖², that minimizes ‖Φ_S − R‖ over
    all exact root choices. Raises :class:`KRRInfeasible` when λ_S > 1/(4σ'₁²).
    """
    D = _as_matrix(D, "D")
    if lam_S < 0:
        raise ValueError(f"lam_S must be ≥ 0, got {lam_S}")
    v, s, uh = _svd(D)
    if s.size == 0:
        return np.zeros_like(D)
    if lam_S == 0:
        sigma = 1.0 / s
    else:
        bound = 1.0 / (4.0 * s[0] ** 2)
        if lam_S > bound * (1 + 1e-12):
            raise KRRInfeasible(
                f"λ_S = {lam_S:.6g} exceeds the bound 1/(4σ'₁²) = {bound:.6g} (σ'₁ = {s[0]:.6g}, the largest "
                f"singular value of D): no features give φ_λS(X_S)⁺ = D. Use λ_S ≤ {bound:.6g}, a Z closer "
                f"to 0 (Z = 0 maximizes the bound), or labels Y_S scaled up by c ≥ {np.sqrt(lam_S / bound):.6g}"
            )
        disc = np.sqrt(np.clip(1.0 - 4.0 * lam_S * s**2, 0.0, None))
        large = (1.0 + disc) / (2.0 * s)
        small = 2.0 * lam_S * s / (1.0 + disc)  # = (1 − disc) / (2σ'), without cancellation
        if branch == "large":
            sigma = large
        elif branch == "small":
            sigma = small
        elif branch == "nearest":
            if reference is None:
                raise ValueError("branch='nearest' needs a reference (m×p)")
            a = np.einsum("mi,mp,ip->i", v, _as_matrix(reference, "reference"), uh)
            sigma = np.where(np.abs(large - a) <= np.abs(small - a), large, small)
        else:
            raise ValueError(f"branch must be 'large', 'small' or 'nearest', got {branch!r}")
    return (v * sigma) @ uh


def distill_features(
    W: np.ndarray,
    Y_S: np.ndarray,
    lam_S: float,
    Z: np.ndarray | None = None,
    branch: Branch = "large",
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Synthetic features Φ_S (m×p) such that fit_krr(Φ_S, Y_S, λ_S) = W exactly.

    Φ_S = features_from_dual(dual_matrix(W, Y_S, Z), λ_S, branch, reference). Needs m ≥ k,
    rank Y_S = k and λ_S ≤ lambda_bound(D); each failure raises :class:`KRRInfeasible` with the numbers.
    """
    return features_from_dual(dual_matrix(W, Y_S, Z), lam_S, branch, reference)


def exact_labels(W: np.ndarray, Phi: np.ndarray, lam: float) -> np.ndarray:
    """Y (m×k) = Φ Wᵀ + λ Φ⁺ᵀ Wᵀ, the minimum-norm least-squares solution of Yᵀ φ_λ(X)⁺ = W.

    Paper form: Y = W (φ_λ(X)⁺)⁺ = W (φ(X) + λ φ(X)⁺ᵀ) — the model's predictions plus a λ-correction.
    It is exact (fit_krr(Φ, Y, λ) = W) iff the rows of W lie in the row space of Φ.
    """
    W, Phi = _as_matrix(W, "W"), _as_matrix(Phi, "Phi")
    if W.shape[1] != Phi.shape[1]:
        raise ValueError(f"W is k×{W.shape[1]} but Phi is m×{Phi.shape[1]}")
    Y = Phi @ W.T
    if lam > 0:
        Y = Y + lam * (pinv(Phi).T @ W.T)
    return Y


def label_only(W: np.ndarray, Phi_S: np.ndarray, lam_S: float, tol: float = 1e-10) -> np.ndarray:
    """Labels Y_S (m×k) for fixed synthetic features Φ_S (m×p) with fit_krr(Φ_S, Y_S, λ_S) = W.

    Y_S = :func:`exact_labels` (λ_S = 0: the model's predictions Φ_S Wᵀ). Solvable iff
    W Φ_S⁺Φ_S = W, which holds for every W iff rank Φ_S = p (so m ≥ p); otherwise raises
    :class:`KRRInfeasible` unless W happens to lie in the row space of Φ_S (relative residual ≤ tol).
    """
    W, Phi_S = _as_matrix(W, "W"), _as_matrix(Phi_S, "Phi_S")
    m, p = Phi_S.shape
    r = rank(Phi_S)
    if r < p:
        _, _, vh = _svd(Phi_S)
        residual = relative_error(W @ vh.T @ vh, W)
        if residual > tol:
            why = f"m = {m} < p = {p}" if m < p else f"rank Φ_S = {r} < p = {p}"
            raise KRRInfeasible(
                f"label-only distillation needs features of rank p: {why}, and {residual:.3g} of W (relative) "
                f"lies outside the row space of Φ_S, which no labels can reach; use m ≥ p synthetic points "
                f"whose features have rank p"
            )
    return exact_labels(W, Phi_S, lam_S)


def close_to_real(
    W: np.ndarray,
    Phi_hat: np.ndarray,
    lam_S: float,
    labels: Literal["onehot", "model", "optimal"] = "onehot",
    Y_hat: np.ndarray | None = None,
    branch: Branch = "nearest",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact synthetic features (and labels) that stay close to real features Φ̂ (m×p): (Φ_S, Y_S).

    Uses Z = φ_λS(X̂)⁺ (m×p), so D − Z = Y_S⁺ᵀ(W − Y_Sᵀ Z): the better Y_S explains W from the
    real points, the closer D is to Z and Φ_S to Φ̂. ``labels``:

    * ``"onehot"``: Y_S = Y_hat (the real points' one-hot labels, m×k; required);
    * ``"model"``: Y_S = Φ̂ Wᵀ, the original model's predictions on X̂;
    * ``"optimal"``: Y_S = :func:`exact_labels` (Φ̂, λ_S) = argmin ‖W − Y_Sᵀ Z‖ — equal to "model"
      for λ_S = 0; when the rows of W lie in the row space of Φ̂ (e.g. m ≥ p) D = Z and Φ_S = Φ̂.

    The default ``branch="nearest"`` takes, per singular value, the root nearest to Φ̂ (for λ_S > 0
    the large root alone would miss real singular values below √λ_S).

    The exactness W_S = W needs only rank Y_S = k, checked as in :func:`distill_features`.
    """
    W, Phi_hat = _as_matrix(W, "W"), _as_matrix(Phi_hat, "Phi_hat")
    if labels == "onehot":
        if Y_hat is None:
            raise ValueError("labels='onehot' needs Y_hat, the one-hot labels of the real points")
        Y_S = _as_matrix(Y_hat, "Y_hat")
    elif labels == "model":
        Y_S = Phi_hat @ W.T
    elif labels == "optimal":
        Y_S = exact_labels(W, Phi_hat, lam_S)
    else:
        raise ValueError(f"labels must be 'onehot', 'model' or 'optimal', got {labels!r}")
    Z = regularized_pinv(Phi_hat, lam_S).T
    return distill_features(W, Y_S, lam_S, Z, branch, reference=Phi_hat), Y_S


# ---------------------------------------------------------------------------------------------
# feature maps and input space


class FeatureMap(ABC):
    """φ: R^d → R^p on rows, with a right inverse on its range.

    ``bound`` is None when φ is onto R^p (``surjective``); otherwise the range contains exactly the
    features with every |entry| ≤ bound, and :func:`distill_inputs` scales the labels to fit.
    """

    d: int
    p: int
    bound: float | None = None

    @property
    def surjective(self) -> bool:
        return self.bound is None

    @abstractmethod
    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Features of the rows of X (n×d) → n×p."""

    @abstractmethod
    def inverse(self, F: np.ndarray) -> np.ndarray:
        """Some X (n×d) with φ(X) = F (n×p); raises :class:`KRRInfeasible` when F is out of range."""

    @abstractmethod
    def torch(self, X: torch.Tensor) -> torch.Tensor:
        """φ on torch rows (n×d), equal to ``self(X)`` and differentiable w.r.t. X (torch imported on call)."""


class LinearFeatures(FeatureMap):
    """φ(x) = x (p = d)."""

    def __init__(self, d: int) -> None:
        self.d = self.p = int(d)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return _as_matrix(X, "X").copy()

    def inverse(self, F: np.ndarray) -> np.ndarray:
        return _as_matrix(F, "F").copy()

    def torch(self, X: torch.Tensor) -> torch.Tensor:
        return X


class RandomFourierFeatures(FeatureMap):
    """φ(x) = √(2/p) cos(A x + b), rows of A ~ N(0, σ⁻² I_d), b ~ U[0, 2π] (Gaussian-kernel RFF).

    Onto the box |φ| ≤ √(2/p) when rank A = p (needs p ≤ d); inverse x = A⁺(arccos(√(p/2) φ) − b).
    """

    def __init__(self, d: int, p: int, sigma: float = 1.0, seed: int = 0) -> None:
        if p > d:
            raise KRRInfeasible(
                f"random Fourier features with p = {p} > d = {d} are not surjective onto their box: "
                f"x ↦ A x + b spans only a d-dimensional subspace of R^p, so cos features of dimension "
                f"p > d cannot reach arbitrary targets; use p ≤ d or the linear feature map"
            )
        rng = np.random.default_rng(seed)
        self.d, self.p, self.sigma = int(d), int(p), float(sigma)
        self.A = rng.standard_normal((p, d)) / sigma
        self.b = rng.uniform(0.0, 2.0 * np.pi, size=p)
        r = rank(self.A)
        if r < p:  # probability zero for a Gaussian A, kept as a guard
            raise KRRInfeasible(f"rank A = {r} < p = {p}: the features are not surjective; try another seed")
        self._A_pinv = pinv(self.A)  # d×p
        self.bound = float(np.sqrt(2.0 / p))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.bound * np.cos(_as_matrix(X, "X") @ self.A.T + self.b)

    def inverse(self, F: np.ndarray, atol: float = 1e-12) -> np.ndarray:
        t = _as_matrix(F, "F") / self.bound
        worst = float(np.max(np.abs(t), initial=0.0))
        if worst > 1.0 + atol:
            raise KRRInfeasible(
                f"features out of range: max |√(p/2) φ| = {worst:.6g} > 1, so cos(A x + b) cannot equal them; "
                f"scale the labels (distill_inputs does) to bring the targets into [−√(2/p), √(2/p)]"
            )
        return (np.arccos(np.clip(t, -1.0, 1.0)) - self.b) @ self._A_pinv.T

    def torch(self, X: torch.Tensor) -> torch.Tensor:
        import torch

        a, b = (torch.as_tensor(v, dtype=X.dtype, device=X.device) for v in (self.A, self.b))
        return self.bound * torch.cos(X @ a.T + b)


class LeakyReLUMLP(FeatureMap):
    """φ(x) = σ(W_L … σ(W_1 x + b_1) … + b_L), σ = LeakyReLU(slope), widths d ≥ h_1 ≥ … ≥ h_L = p.

    Random Gaussian weights (variance 1/fan-in, full row rank) and biases (std 0.1) from ``seed``.
    Onto R^p; inverse layer by layer: h_{l−1} = W_l⁺(σ⁻¹(h_l) − b_l) (the minimum-norm preimage).

    Accuracy: σ⁻¹ multiplies negative entries by 1/slope, so preimages grow like slope^{−L}·|F| and
    φ(φ⁻¹(F)) = F holds to about eps·slope^{−L} relative — ~1e-8 for slope 0.01 and L = 3, ~1e-12
    for slope 0.2. That is the forward map's own conditioning at those inputs, not the inverse's.
    """

    def __init__(self, d: int, widths: list[int] | tuple[int, ...], slope: float = 0.01, seed: int = 0) -> None:
        dims = [int(d), *(int(h) for h in widths)]
        if not widths:
            raise ValueError("widths must name at least one layer")
        if any(b > a for a, b in pairwise(dims)):
            raise KRRInfeasible(
                f"widths must not increase (d ≥ h_1 ≥ … ≥ h_L), got d = {d}, widths = {list(widths)}: a layer "
                f"R^a → R^b with b > a is not surjective, so some features have no preimage; use "
                f"non-increasing widths"
            )
        if slope <= 0:
            raise KRRInfeasible(f"slope = {slope}: LeakyReLU must have slope > 0 to be invertible (ReLU is not)")
        rng = np.random.default_rng(seed)
        self.d, self.p, self.slope = dims[0], dims[-1], float(slope)
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        for a, b in pairwise(dims):
            Wl = rng.standard_normal((b, a)) / np.sqrt(a)
            if rank(Wl) < b:  # probability zero, kept as a guard
                raise KRRInfeasible(f"a random {b}×{a} weight is rank-deficient; try another seed")
            self.weights.append(Wl)
            self.biases.append(0.1 * rng.standard_normal(b))
        self._pinvs = [pinv(Wl) for Wl in self.weights]

    def _act(self, h: np.ndarray) -> np.ndarray:
        return np.where(h >= 0, h, self.slope * h)

    def _act_inv(self, h: np.ndarray) -> np.ndarray:
        return np.where(h >= 0, h, h / self.slope)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        h = _as_matrix(X, "X")
        for Wl, bl in zip(self.weights, self.biases):
            h = self._act(h @ Wl.T + bl)
        return h

    def inverse(self, F: np.ndarray) -> np.ndarray:
        h = _as_matrix(F, "F")
        for Pl, bl in zip(reversed(self._pinvs), reversed(self.biases)):
            h = (self._act_inv(h) - bl) @ Pl.T
        return h

    def torch(self, X: torch.Tensor) -> torch.Tensor:
        import torch

        h = X
        for w, b in zip(self.weights, self.biases):
            h = torch.nn.functional.leaky_relu(h @ torch.as_tensor(w, dtype=X.dtype, device=X.device).T
                                               + torch.as_tensor(b, dtype=X.dtype, device=X.device), self.slope)
        return h


@dataclass(frozen=True)
class DistilledInputs:
    """An exact synthetic set in input space: train KRR on (feature_map(X), Y) with λ_S to get W.

    ``Y`` = ``label_scale`` · (the labels asked for); ``features`` = the target φ(X) (m×p).
    """

    X: np.ndarray
    Y: np.ndarray
    features: np.ndarray
    label_scale: float


def _features_in_box(
    W: np.ndarray, Y_S: np.ndarray, lam_S: float, Z: np.ndarray | None, bound: float, margin: float
) -> tuple[np.ndarray, float]:
    """Exact features with every |entry| ≤ (1 − margin)·bound, by scaling the labels: (Φ_S, c).

    Labels c·Y_S and free part Z/c give D_c = D/c exactly (the projector I − Y_S Y_S⁺ is scale
    free), so W_S = W for every c > 0. λ_S = 0: Φ_S(c) = c·D⁺ᵀ, take c = target / max|D⁺ᵀ|.
    λ_S > 0: the small branch σ = 2λ_Sσ'/(1 + √(1 − 4λ_Sσ'²)) ≈ λ_S σ' = λ_S σ'_D / c shrinks as c
    grows, and c ≥ 2√λ_S σ'_1 keeps λ_S ≤ the bound; since max|Φ_S| ≤ σ_1 ≤ 2λ_S σ'_{D,1}/c the
    doubling search below stops.
    """
    if lam_S < 0:
        raise ValueError(f"lam_S must be ≥ 0, got {lam_S}")
    target = (1.0 - margin) * bound
    D = dual_matrix(W, Y_S, Z)
    if lam_S == 0:
        Phi = features_from_dual(D, 0.0)
        peak = float(np.max(np.abs(Phi), initial=0.0))
        c = 1.0 if peak == 0 else target / peak
        return c * Phi, c
    s1 = float(np.linalg.norm(D, 2))
    if s1 == 0:
        return np.zeros_like(D), 1.0
    c = max(2.0 * np.sqrt(lam_S) * s1, lam_S * float(np.max(np.abs(D))) / target)
    c_safe = 2.0 * lam_S * s1 / target
    for _ in range(200):
        Phi = features_from_dual(D / c, lam_S, branch="small")
        if np.max(np.abs(Phi)) <= target or c >= c_safe:
            return Phi, c
        c *= 2.0
    raise AssertionError("unreachable: c_safe bounds the search")  # pragma: no cover


def distill_inputs(
    feature_map: FeatureMap,
    W: np.ndarray,
    Y_S: np.ndarray,
    lam_S: float,
    Z: np.ndarray | None = None,
    branch: Branch = "large",
    margin: float = 1e-2,
    reference: np.ndarray | None = None,
) -> DistilledInputs:
    """Exact synthetic inputs: distill in feature space, then X_S = feature_map.inverse(Φ_S).

    Surjective maps (linear, LeakyReLU MLP) use :func:`distill_features` as is (label_scale 1).
    Bounded maps (random Fourier features) scale the labels to c·Y_S and the free part to Z/c —
    which leaves W_S = W exact — choosing c so that every target feature is within (1 − margin)
    of the bound; for λ_S > 0 they use the small branch (``branch`` and ``reference`` are then ignored).
    """
    if np.shape(W)[1] != feature_map.p:
        raise ValueError(f"W has {np.shape(W)[1]} columns but the feature map has p = {feature_map.p}")
    Y_S = _as_matrix(Y_S, "Y_S")
    if feature_map.bound is None:
        Phi, c = distill_features(W, Y_S, lam_S, Z, branch, reference), 1.0
    else:
        Phi, c = _features_in_box(W, Y_S, lam_S, Z, feature_map.bound, margin)
    return DistilledInputs(X=feature_map.inverse(Phi), Y=c * Y_S, features=Phi, label_scale=c)
