"""Convex inner problems solved exactly with cvxpy, and hypergradients w.r.t. their training data.

Every model is linear: scores Z = X W + 1 bᵀ = X̃ W̃ with X̃ = [X, 1] (n × (d+1)), W̃ = [W; bᵀ] ((d+1) × m).
With per-sample weights ω ≥ 0 (default 1) and a_i = ω_i / n, the inner objectives O(W, b; X, T, ω) are

* ``logistic_l2``  Σ_i a_i ℓ(z_i, t_i) + (λ/2)‖W‖²_F
* ``logistic_l1``  Σ_i a_i ℓ(z_i, t_i) + λ‖W‖₁
    binary (``classes=2``, m = 1, t_i ∈ [0, 1]):  ℓ = log(1 + e^z) − t z;
    multinomial (K = ``classes`` > 2, m = K, t_i ≥ 0 one-hot or soft):  ℓ = (Σ_k t_k) logsumexp(z) − tᵀz
    (= −Σ_k t_k log softmax(z)_k). ℓ is invariant to z → z + c1, so the bias is fixed by the gauge Σ_k b_k = 0.
* ``svm``  Σ_i a_i Σ_k max(0, 1 − t_ik z_ik) + (λ/2)‖W‖²_F with t = 2y − 1 ∈ {−1, +1}: binary (m = 1), or
    one-vs-rest for K > 2 (m = K independent binary SVMs, t_ik = +1 iff y_i = k).
* ``ridge``  Σ_i a_i ‖z_i − t_i‖² + λ‖W‖²_F, T one-hot (``classes`` ≥ 2) or real targets (``classes=0``),
    optionally constrained: ``nonneg`` (W ≥ 0) or ``box`` (‖W‖_∞ ≤ ``bound``). The bias is never penalized.

:func:`solve` solves O exactly (an interior-point conic solver, CLARABEL, at tight tolerances).

:func:`hypergradient` differentiates an outer loss L(W*, b*) through the solution map (X, T, ω) ↦ θ* = W̃*
by the implicit function theorem applied to the KKT conditions of the *local* problem at θ*:

* the free set F of coordinates of θ (all, except W_jk = 0 for L1 — the zero set of a strict solution is
  locally constant, and signs s = sign(W_F) are fixed, so λ‖W‖₁ = λ sᵀθ_F there — and W_jk at an active bound
  for constrained ridge; those coordinates are pinned and their multipliers never enter dθ*, because
  eliminating a constraint θ_j = const that does not depend on the data is exact);
* for the SVM, samples strictly outside the margin (t z > 1) drop out, samples inside (t z < 1) contribute the
  linear a_i(1 − t z), and margin samples M (t z = 1) become equality constraints g_ik = t_ik z_ik − 1 = 0 with
  multipliers −α_ik (α ∈ (0, a_i) at a strict solution: the SVM dual coefficients);
* the multinomial gauge g = Σ_k b_k = 0 (its multiplier is 0).

With f the locally smooth objective (over θ_F), g the equality constraints and μ their multipliers
(from ∇f + J_gᵀμ = 0), the KKT map G(θ_F, μ; D) = [∇_θ f + J_gᵀ μ; g] vanishes at the solution. With
ℒ = f + μᵀg and the symmetric KKT matrix K = [[∇²_θθ ℒ, J_gᵀ], [J_g, 0]]:

    K [v; u] = [∂L/∂θ_F; 0],    dL/dD = −∂/∂D [vᵀ ∇_θ ℒ(θ*, μ*; D) + uᵀ g(θ*; D)]    (D = X, T, ω)

Writing V for v reshaped into W̃'s shape (zero on pinned coordinates), r_i = ∇_z ℓ(z_i, t_i) and c_i the
weight of sample i in ∇_θ ℒ, this reads, per sample:

* smooth losses (logistic, ridge; ℓ = ‖z − t‖² for ridge):  dL/dx_i = −a_i (V_W r_i + W ∇²_z ℓ_i Vᵀx̃_i),
  dL/dω_i = −(1/n) x̃_iᵀ V r_i, dL/dt_i = −a_i ∂(x̃_iᵀ V r_i)/∂t_i
  (binary logistic a_i x̃_iᵀV, multinomial −a_i ((x̃_iᵀV p_i) 1 − Vᵀx̃_i) with p_i = softmax(z_i), ridge
  2 a_i Vᵀx̃_i);
* SVM column k (t = t_·k, w = W_·k, V = v for that column): c_i = a_i inside the margin, α_i on it, 0 outside;
  the KKT system is [[λI_d, 0, B_Mᵀ], [0, 0, t_Mᵀ], [B_M, t_M, 0]] [v_w; v_b; u] = [∂L/∂w; ∂L/∂b; 0]
  (rows of B_M: t_i x_iᵀ, i ∈ M), and dL/dx_i = c_i t_i v_w − u_i t_i w (u_i = 0 off the margin),
  dL/dω_i = (1/n) t_i x̃_iᵀ v for samples inside the margin, 0 otherwise (the bound α_i ≤ a_i is inactive).

K is formed densely (torch autograd Hessian, float64) and solved directly: O(q³) for q free coordinates.
K is nonsingular exactly when the solution is locally unique (λ > 0; for the SVM, 1 ≤ |M_k| and the margin
rows of X̃ independent; for L1 multinomial, no row of W with all K entries nonzero and balanced signs).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ddspec.errors import RunFailure
from ddspec.spec.kernel import ConvexLossFacts, ConvexTrain

SOLVER_OPTIONS = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9, "tol_ktratio": 1e-7,
                  "max_iter": 500}
CERTIFIED = 1e-10  # KKT residual (relative to the mean weight) that certifies an ``optimal_inaccurate`` answer


class ConvexSolveError(RunFailure, RuntimeError):
    """The conic solver did not return an optimal solution (a RunError ``CONVEX_SOLVE_FAILED`` at ``train``)."""

    CODE, PATH = "CONVEX_SOLVE_FAILED", "train"
    FIX = "raise train.lam (a better-conditioned problem), or standardize the inputs / lower optimize.lr"


class SingularKKTError(RunFailure, ValueError):
    """The KKT matrix at a solution is singular: the solution is not locally unique, so it has no hypergradient
    (a RunError ``SINGULAR_KKT`` at ``train.lam``)."""

    CODE, PATH = "SINGULAR_KKT", "train.lam"
    FIX = "raise train.lam so that the inner solution is unique, or use loss logistic or squared instead of svm"


# ---------------------------------------------------------------- pinned coordinates: penalties and constraints


class Pins:
    """Which coordinates of W sit on the edge of their feasible set at a solution and are pinned in the local
    problem (module docstring): none here (every coordinate is free)."""

    def cvx(self, model: ConvexModel, W: Any) -> list:
        """The cvxpy constraints on W."""
        return []

    def free(self, model: ConvexModel, W: np.ndarray, tol: float, scale: float) -> np.ndarray | None:
        """The free coordinates of W (d × m, bool), or None when all are free."""
        return None

    def value(self, model: ConvexModel, W: np.ndarray) -> np.ndarray:
        """The exact values of the pinned entries ``W`` (1-D)."""
        return W

    def strict(self, model: ConvexModel, grad: np.ndarray, W: np.ndarray, tol: float) -> bool:
        """Strict complementarity: the multipliers of the pinned entries (from ∂fit/∂W, ``grad``) inside their range."""
        return True


class ZeroSet(Pins):
    """λ‖W‖₁: the zero set of W (|W_jk| ≤ tol·scale), pinned at 0; strict when |∂fit/∂W_jk| < λ there."""

    def free(self, model: ConvexModel, W: np.ndarray, tol: float, scale: float) -> np.ndarray | None:
        return np.abs(W) > tol * scale

    def value(self, model: ConvexModel, W: np.ndarray) -> np.ndarray:
        return np.zeros_like(W)

    def strict(self, model: ConvexModel, grad: np.ndarray, W: np.ndarray, tol: float) -> bool:
        return bool(np.all(np.abs(grad) < model.lam * (1 - tol)))


class Nonnegative(Pins):
    """W ≥ 0: entries at 0 pinned; strict when their multiplier ∂fit/∂W_jk is > 0."""

    def cvx(self, model: ConvexModel, W: Any) -> list:
        return [W >= 0]

    def free(self, model: ConvexModel, W: np.ndarray, tol: float, scale: float) -> np.ndarray | None:
        return W > tol * scale

    def value(self, model: ConvexModel, W: np.ndarray) -> np.ndarray:
        return np.zeros_like(W)

    def strict(self, model: ConvexModel, grad: np.ndarray, W: np.ndarray, tol: float) -> bool:
        return bool(np.all(grad > tol * model.lam))


class Box(Pins):
    """‖W‖_∞ ≤ c (``model.bound``): entries at ±c pinned; strict when ∂fit/∂W_jk pushes outwards."""

    def cvx(self, model: ConvexModel, W: Any) -> list:
        return [W <= model.bound, W >= -model.bound]

    def free(self, model: ConvexModel, W: np.ndarray, tol: float, scale: float) -> np.ndarray | None:
        return np.abs(W) < model.bound - tol * max(1.0, model.bound)

    def value(self, model: ConvexModel, W: np.ndarray) -> np.ndarray:
        return np.sign(W) * model.bound

    def strict(self, model: ConvexModel, grad: np.ndarray, W: np.ndarray, tol: float) -> bool:
        return bool(np.all(-np.sign(W) * grad > tol * model.lam))


#: Constraints on W (``ConvexModel.constraint``), by name (None: unconstrained).
CONSTRAINTS: dict[str | None, Pins] = {None: Pins(), "nonneg": Nonnegative(), "box": Box()}
#: The ``train: convex`` spec's constraint names.
SPEC_CONSTRAINTS = {"none": None, "nonnegative": "nonneg", "box": "box"}


# ---------------------------------------------------------------- losses


def _onehot(name: str, Y: np.ndarray, K: int) -> np.ndarray:
    if Y.ndim != 1 or np.any(Y != np.round(Y)) or Y.min(initial=0) < 0 or Y.max(initial=0) >= K:
        raise ValueError(f"{name} needs integer labels in [0, {K}) of shape (n,), got shape {Y.shape}")
    return np.eye(K)[Y.astype(int)]


def _soft(Y: np.ndarray, K: int) -> np.ndarray:
    if Y.shape[1] != K:
        raise ValueError(f"soft labels must have shape (n, {K}), got {Y.shape}")
    return Y


class ConvexLoss:
    """One inner objective: its loss ℓ and penalty, in cvxpy (solving) and torch (the local smooth problem), the
    targets it takes, and its share of the active-set rule (module docstring). ``spec``: its ``train: convex``
    (loss, penalty); ``real_targets``: takes real-valued targets (``classes = 0``); ``constrainable``: takes a
    constraint on W; ``pins``: the coordinates its penalty pins. What the declaration needs to know without
    numpy (fixed labels, weight columns) is its spec's :attr:`facts`."""

    name: str = ""
    spec: tuple[str, str] = ("", "")
    real_targets = False
    constrainable = False
    pins: Pins = CONSTRAINTS[None]

    @property
    def facts(self) -> ConvexLossFacts:
        """Its :class:`~ddspec.spec.kernel.ConvexLossFacts` (fixed labels, weight columns)."""
        return ConvexTrain.LOSSES[self.spec[0]]

    @property
    def hard_labels(self) -> bool:
        """Its targets are fixed classes, with no derivative (no dL/dT)."""
        return self.facts.fixed_labels

    def columns(self, K: int, outputs: int = 1) -> int:
        """m, the columns of the target matrix T and of W for ``K`` classes (0: ``outputs`` real targets)."""
        return self.facts.columns(K, K or outputs)

    def targets(self, Y: np.ndarray, K: int) -> np.ndarray:
        """The (n, m) target matrix T (see :func:`targets`)."""
        raise NotImplementedError

    def gauge(self, K: int) -> bool:
        """Whether the bias is fixed by Σ_k b_k = 0 (ℓ invariant to z → z + c1)."""
        return False

    def cvx_fit(self, Z: Any, T: np.ndarray, a: np.ndarray, A: np.ndarray, K: int) -> Any:
        """Σ_i a_i ℓ(z_i, t_i) as a cvxpy expression of the scores Z (A: a repeated over the m columns)."""
        raise NotImplementedError

    def cvx_penalty(self, W: Any, lam: float) -> Any:
        """The penalty on W as a cvxpy expression."""
        raise NotImplementedError

    def fit(self, Z: torch.Tensor, T: torch.Tensor, K: int, keep: torch.Tensor | None) -> torch.Tensor:
        """ℓ(z_i, t_i) per sample (n,) in torch; ``keep`` (n, m): the (i, k) that count (the SVM's off-margin terms)."""
        raise NotImplementedError

    def penalty(self, W: torch.Tensor, lam: float) -> torch.Tensor:
        """The penalty on W in torch."""
        raise NotImplementedError

    def margin(self, T: np.ndarray, scores: np.ndarray, tol: float) -> np.ndarray | None:
        """Samples (i, k) whose constraint t_ik z_ik = 1 is active (the SVM), or None."""
        return None

    def duals(self, T: np.ndarray, scores: np.ndarray, a: np.ndarray, margin: np.ndarray, mu: np.ndarray,
              tol: float) -> tuple[np.ndarray | None, bool]:
        """(α, strict): the weight of every sample in ∇_θ ℒ (a_i inside the margin, 0 outside, −μ on it) and
        whether every margin multiplier lies strictly inside (0, a_i); (None, True) without a margin."""
        return None, True

    def solver_labels(self, y: Any, K: int) -> Any:
        """Targets as :func:`solve` takes them (rows of soft labels, indices, or real values)."""
        return y


class Logistic(ConvexLoss):
    """Cross-entropy: binary (K = 2, one column, t ∈ [0, 1]) ℓ = log(1 + e^z) − t z; multinomial (K > 2)
    ℓ = (Σ_k t_k) logsumexp(z) − tᵀz with the gauge Σ_k b_k = 0. Penalty (λ/2)‖W‖²_F (l2) or λ‖W‖₁ (l1, whose
    zero set is pinned)."""

    def __init__(self, penalty: str) -> None:
        self.name, self.spec, self.l1 = f"logistic_{penalty}", ("logistic", penalty), penalty == "l1"
        self.pins = ZeroSet() if self.l1 else CONSTRAINTS[None]

    def targets(self, Y: np.ndarray, K: int) -> np.ndarray:
        if K == 2:
            if Y.ndim != 1 or Y.min(initial=0) < 0 or Y.max(initial=0) > 1:
                raise ValueError(f"binary logistic needs labels in [0, 1] of shape (n,), got shape {Y.shape}")
            return Y[:, None]
        if Y.ndim == 1:
            return _onehot(self.name, Y, K)
        Y = _soft(Y, K)
        if Y.min() < 0:
            raise ValueError("soft labels of a logistic model must be >= 0")
        return Y

    def gauge(self, K: int) -> bool:
        return K > 2

    def cvx_fit(self, Z: Any, T: np.ndarray, a: np.ndarray, A: np.ndarray, K: int) -> Any:
        import cvxpy as cp

        if self.gauge(K):
            return a @ (cp.multiply(T.sum(1), cp.log_sum_exp(Z, axis=1)) - cp.sum(cp.multiply(T, Z), axis=1))
        return a @ (cp.logistic(Z[:, 0]) - cp.multiply(T[:, 0], Z[:, 0]))

    def cvx_penalty(self, W: Any, lam: float) -> Any:
        import cvxpy as cp

        return lam * cp.sum(cp.abs(W)) if self.l1 else lam / 2 * cp.sum_squares(W)

    def fit(self, Z: torch.Tensor, T: torch.Tensor, K: int, keep: torch.Tensor | None) -> torch.Tensor:
        if self.gauge(K):
            return T.sum(1) * torch.logsumexp(Z, 1) - (T * Z).sum(1)
        return F.softplus(Z[:, 0]) - T[:, 0] * Z[:, 0]

    def penalty(self, W: torch.Tensor, lam: float) -> torch.Tensor:
        return lam * W.abs().sum() if self.l1 else lam / 2 * (W**2).sum()

    def solver_labels(self, y: Any, K: int) -> Any:
        """Binary: the class-1 probability of soft-label rows."""
        return y[:, 1] if K == 2 and y.dim() == 2 else y


class Hinge(ConvexLoss):
    """Linear SVM: ℓ = Σ_k max(0, 1 − t_k z_k), t = 2y − 1 (one column for K = 2, one-vs-rest for K > 2), penalty
    (λ/2)‖W‖²_F; margin samples (t z = 1) are the active constraints."""

    name, spec = "svm", ("svm", "l2")

    def targets(self, Y: np.ndarray, K: int) -> np.ndarray:
        onehot = _onehot(self.name, Y, K)
        return 2.0 * (onehot[:, 1:] if K == 2 else onehot) - 1.0

    def cvx_fit(self, Z: Any, T: np.ndarray, a: np.ndarray, A: np.ndarray, K: int) -> Any:
        import cvxpy as cp

        return cp.sum(cp.multiply(A, cp.pos(1 - cp.multiply(T, Z))))

    def cvx_penalty(self, W: Any, lam: float) -> Any:
        import cvxpy as cp

        return lam / 2 * cp.sum_squares(W)

    def fit(self, Z: torch.Tensor, T: torch.Tensor, K: int, keep: torch.Tensor | None) -> torch.Tensor:
        hinge = torch.relu(1 - T * Z)
        return (hinge if keep is None else hinge * keep).sum(1)

    def penalty(self, W: torch.Tensor, lam: float) -> torch.Tensor:
        return lam / 2 * (W**2).sum()

    def margin(self, T: np.ndarray, scores: np.ndarray, tol: float) -> np.ndarray | None:
        return np.abs(T * scores - 1) <= tol

    def duals(self, T: np.ndarray, scores: np.ndarray, a: np.ndarray, margin: np.ndarray, mu: np.ndarray,
              tol: float) -> tuple[np.ndarray | None, bool]:
        A = np.repeat(a[:, None], T.shape[1], axis=1)
        dual = np.where(T * scores < 1, A, 0.0)
        dual[margin] = -mu
        ratio = dual[margin] / A[margin]
        return dual, bool(np.all((ratio > tol) & (ratio < 1 - tol)))


class Squared(ConvexLoss):
    """Ridge: ℓ = ‖z − t‖², penalty λ‖W‖²_F; t one-hot (or soft) class rows, or real-valued targets (classes = 0);
    optionally constrained (:data:`CONSTRAINTS`)."""

    name, spec, real_targets, constrainable = "ridge", ("squared", "l2"), True, True

    def targets(self, Y: np.ndarray, K: int) -> np.ndarray:
        if K == 0:
            return Y[:, None] if Y.ndim == 1 else Y
        return _onehot(self.name, Y, K) if Y.ndim == 1 else _soft(Y, K)

    def cvx_fit(self, Z: Any, T: np.ndarray, a: np.ndarray, A: np.ndarray, K: int) -> Any:
        import cvxpy as cp

        return cp.sum(cp.multiply(A, cp.square(Z - T)))

    def cvx_penalty(self, W: Any, lam: float) -> Any:
        import cvxpy as cp

        return lam * cp.sum_squares(W)

    def fit(self, Z: torch.Tensor, T: torch.Tensor, K: int, keep: torch.Tensor | None) -> torch.Tensor:
        return ((Z - T) ** 2).sum(1)

    def penalty(self, W: torch.Tensor, lam: float) -> torch.Tensor:
        return lam * (W**2).sum()


#: The losses by name (``ConvexModel.kind``).
LOSSES: dict[str, ConvexLoss] = {loss.name: loss for loss in (Logistic("l2"), Logistic("l1"), Hinge(), Squared())}
KINDS = tuple(LOSSES)


@dataclass(frozen=True)
class ConvexModel:
    """An inner problem (see the module docstring): ``kind`` in :data:`KINDS` (its :class:`ConvexLoss` is
    :attr:`loss`), regularization ``lam`` > 0, ``classes`` (2 = binary, K > 2 = multiclass, 0 = real-valued
    targets, for the losses that take them), a ``constraint`` in :data:`CONSTRAINTS` with ``bound`` = c for
    ``box`` (‖W‖_∞ ≤ c)."""

    kind: str
    lam: float
    classes: int = 2
    constraint: str | None = None
    bound: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in LOSSES:
            raise ValueError(f"unknown convex model kind {self.kind!r}; expected one of {KINDS}")
        if not (np.isfinite(self.lam) and self.lam > 0):
            raise ValueError(f"lam must be a finite number > 0 (strict convexity), got {self.lam}")
        if self.loss.real_targets:
            if self.classes == 1 or self.classes < 0:
                raise ValueError(f"{self.kind} needs classes = 0 (real targets) or >= 2, got {self.classes}")
        elif self.classes < 2:
            raise ValueError(f"{self.kind} needs classes >= 2, got {self.classes}")
        if self.constraint not in CONSTRAINTS:
            raise ValueError(f"unknown constraint {self.constraint!r}; expected one of {tuple(CONSTRAINTS)}")
        if self.constraint is not None and not self.loss.constrainable:
            raise ValueError(f"constraints are only supported for ridge, not {self.kind}")
        if not (np.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"bound must be a finite number > 0, got {self.bound}")

    @classmethod
    def of_train(cls, train: Any, classes: int) -> ConvexModel:
        """The model of a ``train: convex`` spec (its loss picked by (loss, penalty)) for ``classes`` (0: real targets)."""
        loss = next(loss for loss in LOSSES.values() if loss.spec == (train.loss, train.penalty))
        return cls(loss.name, train.lam, classes, SPEC_CONSTRAINTS[train.constraint], train.box)

    @property
    def loss(self) -> ConvexLoss:
        return LOSSES[self.kind]

    @property
    def pins(self) -> Pins:
        """The pinned-coordinate rule: the constraint's, or the penalty's (L1) when unconstrained."""
        return CONSTRAINTS[self.constraint] if self.constraint is not None else self.loss.pins

    @property
    def multinomial(self) -> bool:
        return self.loss.gauge(self.classes)


@dataclass(frozen=True)
class Solution:
    """θ* = (W (d, m), b (m,)), the optimal objective value, the solver's status and name, whether the
    solver's answer was refined by Newton steps on its local KKT system (see :func:`solve`) and the max-norm
    ``residual`` of that system ([∇f + J_gᵀμ; g], module docstring) at the returned point."""

    W: np.ndarray
    b: np.ndarray
    objective: float
    status: str
    solver: str
    polished: bool = False
    residual: float = float("nan")


@dataclass(frozen=True)
class ActiveSet:
    """Local structure of a solution. ``free`` ((d+1, m), last row = bias): coordinates that move with the data.
    ``margin`` ((n, m), SVM only): samples with t_ik z_ik = 1. ``dual`` ((n, m), SVM only): α_ik — a_i inside
    the margin, 0 outside, the KKT multiplier on it. ``strict``: strict complementarity holds (the zero set,
    active bounds and margin set are locally constant, so the solution map is differentiable)."""

    free: np.ndarray
    margin: np.ndarray | None
    dual: np.ndarray | None
    strict: bool


class HyperGradient(NamedTuple):
    """dL/dX (n, d); dL/dT w.r.t. the target matrix T of :func:`targets` (one-hot for integer labels), (n,) when
    Y is 1-D and T has one column, None for the SVM's hard labels; dL/dω (n,)."""

    X: np.ndarray
    Y: np.ndarray | None
    weights: np.ndarray


# ---------------------------------------------------------------- inputs


def targets(model: ConvexModel, Y: np.ndarray) -> np.ndarray:
    """The (n, m) target matrix T the objective uses (:meth:`ConvexLoss.targets`): binary logistic t = y ∈ [0, 1];
    multinomial and ridge classification one-hot of integer labels (n,) or soft labels (n, K) as given; SVM
    t = 2y − 1 (one-vs-rest for K > 2); ridge regression Y as a column matrix."""
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim not in (1, 2) or not np.all(np.isfinite(Y)):
        raise ValueError(f"Y must be a finite 1-D or 2-D array, got shape {Y.shape}")
    return model.loss.targets(Y, model.classes)


def _prepare(model: ConvexModel, X: np.ndarray, Y: np.ndarray,
             weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or not np.all(np.isfinite(X)):
        raise ValueError(f"X must be a finite, non-empty (n, d) array, got shape {X.shape}")
    n = X.shape[0]
    if np.shape(Y)[:1] != (n,):
        raise ValueError(f"Y has {np.shape(Y)[:1]} rows but X has {n}")
    T = targets(model, Y)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or w.min() < 0 or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0, not all 0, of shape ({n},), got shape {w.shape}")
    return X, T, w


# ---------------------------------------------------------------- solving


def solve(model: ConvexModel, X: np.ndarray, Y: np.ndarray, weights: np.ndarray | None = None,
          solver: str = "CLARABEL", polish: bool = True, tol: float = 1e-6, **options: float) -> Solution:
    """argmin_θ O(θ; X, T, ω) as a cvxpy problem (exponential cones for the logistic losses, a QP otherwise),
    solved to tight tolerances (:data:`SOLVER_OPTIONS`, overridable by ``options``).

    ``polish``: the conic solver's answer (stationarity ~1e-7 with exponential cones) is refined by Newton
    steps on the KKT system of its local problem (the structure :func:`active_set` finds with ``tol``) to
    machine precision, kept only if that structure is unchanged and the objective does not increase.
    Interior-point methods can stall short of tight tolerances on exponential cones (status
    ``optimal_inaccurate``); such an answer is accepted only when polishing brings the KKT residual below
    :data:`CERTIFIED`. Raises :class:`ConvexSolveError` otherwise, or for any other status."""
    import cvxpy as cp

    X, T, w = _prepare(model, X, Y, weights)
    n, d = X.shape
    m = T.shape[1]
    a = w / n
    A = np.repeat(a[:, None], m, axis=1)
    W, b = cp.Variable((d, m)), cp.Variable(m)
    Z = X @ W + np.ones((n, 1)) @ cp.reshape(b, (1, m), order="C")
    loss = model.loss
    fit = loss.cvx_fit(Z, T, a, A, model.classes)
    penalty = loss.cvx_penalty(W, model.lam)
    constraints = ([cp.sum(b) == 0] if model.multinomial else []) + model.pins.cvx(model, W)
    problem = cp.Problem(cp.Minimize(fit + penalty), constraints)
    try:
        problem.solve(solver=solver, **{**(SOLVER_OPTIONS if solver == "CLARABEL" else {}), **options})
    except cp.error.SolverError as error:
        raise ConvexSolveError(f"{solver} failed on the {model.kind} problem: {error}") from error
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise ConvexSolveError(f"{solver} returned status {problem.status!r} on the {model.kind} problem")
    solution = Solution(np.asarray(W.value, dtype=np.float64), np.asarray(b.value, dtype=np.float64).reshape(m),
                        float(problem.value), problem.status, solver)
    if polish:
        solution = _polish(model, X, T, w, solution, tol)
    if problem.status != cp.OPTIMAL and not (solution.polished and solution.residual < CERTIFIED * w.mean()):
        raise ConvexSolveError(f"{solver} returned status {problem.status!r} on the {model.kind} problem and "
                               "polishing could not certify the answer; check the data scale or the tolerances")
    return solution


def predict(solution: Solution, X: np.ndarray) -> np.ndarray:
    """Scores X W + b, (n, m): logits (binary: one column, label = score > 0) or ridge outputs."""
    return np.asarray(X, dtype=np.float64) @ solution.W + solution.b


# ---------------------------------------------------------------- the local smooth problem (torch, float64)


def _fit(model: ConvexModel, Wt: torch.Tensor, X: torch.Tensor, T: torch.Tensor, a: torch.Tensor,
         keep: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_i a_i ℓ_i with W̃ = ``Wt``; for the SVM only the samples (i, k) where ``keep`` is 1 count."""
    return a @ model.loss.fit(X @ Wt[:-1] + Wt[-1], T, model.classes, keep)


def _penalty(model: ConvexModel, W: torch.Tensor) -> torch.Tensor:
    return model.loss.penalty(W, model.lam)


def _value(model: ConvexModel, X: np.ndarray, T: np.ndarray, w: np.ndarray, W: np.ndarray, b: np.ndarray) -> float:
    Wt = torch.as_tensor(np.vstack([np.reshape(W, (X.shape[1], -1)), np.reshape(b, (1, -1))]))
    t = torch.as_tensor
    return float(_fit(model, Wt, t(X), t(T), t(w / len(w))) + _penalty(model, Wt[:-1]))


def objective(model: ConvexModel, X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray,
              weights: np.ndarray | None = None) -> float:
    """O(W, b; X, T, ω) (constraints not checked)."""
    X, T, w = _prepare(model, X, Y, weights)
    return _value(model, X, T, w, W, b)


class _Local(NamedTuple):
    free: np.ndarray                   # (d+1, m) bool
    margin: np.ndarray | None          # (n, m) bool
    theta: torch.Tensor                # θ*_F, (q,)
    full: Callable[..., torch.Tensor]  # θ_F ↦ W̃ with the pinned coordinates at their exact values
    f: Callable[..., torch.Tensor]     # f(θ_F, X, T, a): the locally smooth objective
    g: Callable[..., torch.Tensor]     # g(θ_F, X, T): equality constraints, (c,)
    mu: torch.Tensor                   # their multipliers (least squares on ∇f + J_gᵀμ = 0), (c,)
    strict: bool
    dual: np.ndarray | None


def _local(model: ConvexModel, X: np.ndarray, T: np.ndarray, w: np.ndarray, solution: Solution,
           tol: float) -> _Local:
    n, d = X.shape
    W, b = np.reshape(solution.W, (d, -1)), np.reshape(solution.b, (-1,))
    m = W.shape[1]
    if T.shape[1] != m or b.shape != (m,):
        raise ValueError(f"solution has W {solution.W.shape}, b {solution.b.shape}; expected ({d}, {T.shape[1]})")
    free = np.ones((d + 1, m), dtype=bool)
    scale = max(1.0, float(np.abs(W).max(initial=0)))
    W = W.copy()
    pinned_free = model.pins.free(model, W, tol, scale)
    if pinned_free is not None:
        free[:-1] = pinned_free
        W[~pinned_free] = model.pins.value(model, W[~pinned_free])
    margin = model.loss.margin(T, X @ W + b, tol)
    keep = None if margin is None else torch.as_tensor((~margin).astype(np.float64))
    margin_t = None if margin is None else torch.as_tensor(margin)
    Wt0 = torch.as_tensor(np.vstack([W, b[None]]))
    Xt, Tt, at = torch.as_tensor(X), torch.as_tensor(T), torch.as_tensor(w / n)
    index = torch.as_tensor(np.flatnonzero(free.ravel()))
    flat0 = Wt0.reshape(-1)

    def full(theta: torch.Tensor) -> torch.Tensor:
        return flat0.index_put((index,), theta).reshape(d + 1, m)

    def f(theta: torch.Tensor, X_: torch.Tensor, T_: torch.Tensor, a_: torch.Tensor) -> torch.Tensor:
        Wt = full(theta)
        return _fit(model, Wt, X_, T_, a_, keep) + _penalty(model, Wt[:-1])

    def g(theta: torch.Tensor, X_: torch.Tensor, T_: torch.Tensor) -> torch.Tensor:
        Wt = full(theta)
        parts = [Wt[-1].sum().reshape(1)] if model.multinomial else []
        if margin_t is not None:
            parts.append((T_ * (X_ @ Wt[:-1] + Wt[-1]))[margin_t] - 1)
        return torch.cat(parts) if parts else Wt.new_zeros(0)

    theta = flat0[index]
    grad_f = torch.func.grad(f)(theta, Xt, Tt, at)
    J = torch.func.jacrev(g)(theta, Xt, Tt)
    mu = torch.linalg.lstsq(J.T, -grad_f[:, None]).solution[:, 0] if J.shape[0] else J.new_zeros(0)

    # strict complementarity: multipliers of the pinned coordinates / margin samples strictly inside their range
    grad_fit = torch.func.grad(lambda Wt: _fit(model, Wt, Xt, Tt, at, keep))(Wt0)[:-1].numpy()
    pinned = ~free[:-1]
    strict = model.pins.strict(model, grad_fit[pinned], W[pinned], tol)
    dual, strict_margin = (None, True) if margin is None else model.loss.duals(
        T, X @ W + b, w / n, margin, mu.numpy(), tol)
    strict = strict and strict_margin
    return _Local(free, margin, theta, full, f, g, mu, strict, dual)


def _kkt_matrix(local: _Local, lagrangian: Callable[..., torch.Tensor], *data: torch.Tensor) -> torch.Tensor:
    """K = [[∇²_θθ ℒ, J_gᵀ], [J_g, 0]] at θ*_F."""
    H = torch.func.jacrev(torch.func.grad(lagrangian))(local.theta, *data)
    J = torch.func.jacrev(local.g)(local.theta, *data[:2])
    c = J.shape[0]
    return torch.cat([torch.cat([H, J.T], 1), torch.cat([J, J.new_zeros(c, c)], 1)], 0)


def _polish(model: ConvexModel, X: np.ndarray, T: np.ndarray, w: np.ndarray, solution: Solution, tol: float,
            steps: int = 8) -> Solution:
    """Newton steps on the KKT system of the local problem at the solver's answer, K [Δθ; μ] = −[∇f; g]
    (one step is exact for the QPs). Kept only if the local structure (zero set and signs, active bounds,
    margin set and the side of every other sample) is unchanged and the objective did not increase."""
    local = _local(model, X, T, w, solution, tol)
    data = (torch.as_tensor(X), torch.as_tensor(T), torch.as_tensor(w / len(w)))

    def kkt(theta: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, float]:
        grad, gval = torch.func.grad(local.f)(theta, *data), local.g(theta, *data[:2])
        J = torch.func.jacrev(local.g)(theta, *data[:2])
        return torch.cat([grad, gval]), float(torch.cat([grad + J.T @ mu, gval]).abs().max())

    theta, mu = local.theta, local.mu
    rhs, residual = kkt(theta, mu)
    start = residual
    try:
        for _ in range(steps):
            K = _kkt_matrix(local._replace(theta=theta), local.f, *data)
            step = torch.linalg.solve(K, -rhs)
            new_theta, new_mu = theta + step[: len(theta)], step[len(theta):]
            new_rhs, new_residual = kkt(new_theta, new_mu)
            if not new_residual < residual:
                break
            theta, mu, rhs, residual = new_theta, new_mu, new_rhs, new_residual
    except torch.linalg.LinAlgError:
        pass
    Wt = local.full(theta).numpy()
    value = _value(model, X, T, w, Wt[:-1], Wt[-1])
    polished = Solution(Wt[:-1].copy(), Wt[-1].copy(), value, solution.status, solution.solver, True, residual)
    after = _local(model, X, T, w, polished, tol)
    same = np.array_equal(after.free, local.free) and np.array_equal(
        np.sign(Wt[:-1]), np.sign(local.full(local.theta).numpy()[:-1]))
    if local.margin is not None:
        side = np.sign(T * (X @ solution.W + solution.b) - 1), np.sign(T * (X @ Wt[:-1] + Wt[-1]) - 1)
        same = same and np.array_equal(after.margin, local.margin) and np.array_equal(*(s[~local.margin] for s in side))
    before = _value(model, X, T, w, solution.W, solution.b)
    if same and residual <= start and np.all(np.isfinite(Wt)) and value <= before + 1e-9 * max(1.0, abs(before)):
        return polished
    return replace(solution, residual=start)


def active_set(model: ConvexModel, X: np.ndarray, Y: np.ndarray, solution: Solution,
               weights: np.ndarray | None = None, tol: float = 1e-6) -> ActiveSet:
    """The local structure of ``solution`` (see :class:`ActiveSet`); ``tol`` decides what counts as zero,
    at a bound, or on the margin (relative to max(1, ‖W‖_∞), the bound, and 1)."""
    X, T, w = _prepare(model, X, Y, weights)
    local = _local(model, X, T, w, solution, tol)
    return ActiveSet(local.free, local.margin, local.dual, local.strict)


def hypergradient(model: ConvexModel, X: np.ndarray, Y: np.ndarray, solution: Solution, grad_W: np.ndarray,
                  grad_b: np.ndarray, weights: np.ndarray | None = None, tol: float = 1e-6) -> HyperGradient:
    """dL/d(X, T, ω) for an outer loss L(W*, b*) with ∂L/∂W = ``grad_W``, ∂L/∂b = ``grad_b`` at ``solution``
    (the :func:`solve` output for the same X, Y, weights), by implicit differentiation of the KKT system of
    the local problem (module docstring). Warns if strict complementarity fails (the derivative is then
    one-sided); raises :class:`SingularKKTError` if the KKT matrix is singular (the solution is not locally unique)."""
    X, T, w = _prepare(model, X, Y, weights)
    n, d = X.shape
    m = T.shape[1]
    grad_W, grad_b = np.asarray(grad_W, dtype=np.float64), np.asarray(grad_b, dtype=np.float64)
    if grad_W.size != d * m or grad_b.size != m:
        raise ValueError(f"grad_W {grad_W.shape} / grad_b {grad_b.shape} do not match W ({d}, {m}), b ({m},)")
    local = _local(model, X, T, w, solution, tol)
    if not local.strict:
        warnings.warn("strict complementarity fails at this solution (a coordinate or sample sits on the edge "
                      "of its active set): the hypergradient is one-sided", stacklevel=2)
    Xt, Tt, wt = (torch.as_tensor(v).clone() for v in (X, T, w))

    def lagrangian(theta: torch.Tensor, X_: torch.Tensor, T_: torch.Tensor, w_: torch.Tensor) -> torch.Tensor:
        return local.f(theta, X_, T_, w_ / n) + local.mu @ local.g(theta, X_, T_)

    K = _kkt_matrix(local, lagrangian, Xt, Tt, wt)
    c = len(K) - len(local.theta)
    g_theta = torch.as_tensor(np.vstack([grad_W.reshape(d, m), grad_b.reshape(1, m)]).ravel()[local.free.ravel()])
    try:
        vu = torch.linalg.solve(K, torch.cat([g_theta, g_theta.new_zeros(c)]))
    except torch.linalg.LinAlgError as error:
        raise SingularKKTError(f"the KKT matrix of the {model.kind} solution is singular: the solution is not locally "
                               "unique (e.g. an SVM column with no margin sample), so it has no hypergradient") from error
    v, u = vu[: len(local.theta)], vu[len(local.theta):]
    for leaf in (Xt, Tt, wt):
        leaf.requires_grad_(True)
    theta = local.theta.clone().requires_grad_(True)
    (grad_lagrangian,) = torch.autograd.grad(lagrangian(theta, Xt, Tt, wt), theta, create_graph=True)
    s = v @ grad_lagrangian + u @ local.g(theta.detach(), Xt, Tt)
    dX, dT, dw = torch.autograd.grad(-s, (Xt, Tt, wt), allow_unused=True, materialize_grads=True)
    dY = None
    if not model.loss.hard_labels:
        dY = dT.numpy()[:, 0] if np.ndim(Y) == 1 and m == 1 else dT.numpy()
    return HyperGradient(dX.numpy(), dY, dw.numpy())
