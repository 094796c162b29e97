"""Zero-order (derivative-free) gradient estimation by Gaussian smoothing.

The objective L: ℝ^d → ℝ is replaced by its Gaussian smoothing

    L_σ(x) = E_v L(x + σ v),   v ~ N(0, I_d),   ∇L_σ(x) = E_v[L(x + σ v) v] / σ   (Stein's lemma),

which is differentiable even where L is not (L need only be measurable and bounded, e.g. an indicator).
With M directions v_1..v_M the two estimators of ∇L_σ(x) are

    forward     ĝ = (1/M) Σ_l [L(x + σ v_l) − L(x)] v_l / σ               (M + 1 evaluations)
    antithetic  ĝ = (1/M) Σ_l [L(x + σ v_l) − L(x − σ v_l)] v_l / (2σ)     (2M evaluations)

Both are unbiased for ∇L_σ(x) when each v_l is marginally N(0, I_d) (the baseline L(x) and the mirrored term
only cancel zero-mean parts: E[v] = 0 and v, −v have one law). This holds for :func:`gaussian_directions`
(i.i.d. rows) and for :func:`orthogonal_directions` (rows exactly orthogonal within a block of ≤ d rows, each
row marginally N(0, I_d)), which lowers the variance. L_σ is not L: for a quadratic ∇L_σ = ∇L; in general
∇L_σ − ∇L = O(σ²) when ∇²L is Lipschitz (the odd-order terms cancel, Nesterov & Spokoiny 2017).

Facts for a quadratic L(x) = ½ xᵀAx + bᵀx (A symmetric), g = ∇L(x) = Ax + b, and fixed directions:

    antithetic  ĝ = (1/M) Σ_l (gᵀv_l) v_l                          exactly,
    forward     ĝ = (1/M) Σ_l (gᵀv_l + (σ/2) v_lᵀAv_l) v_l         exactly,

and with i.i.d. Gaussian directions (:func:`expected_sq_error`)

    forward     E‖ĝ − g‖² = [(d + 1)‖g‖² + (σ²/4)(d + 4)((tr A)² + 2 tr A²)] / M,
    antithetic  E‖ĝ − g‖² = (d + 1)‖g‖² / M.

(Derivation: one term w = (gᵀv + c vᵀAv) v has E w = g, the odd moments vanish, E[(gᵀv)²‖v‖²] = (d + 2)‖g‖²
from E[v_i v_j v_k v_k] = (d + 2) δ_ij, and writing v = r u with r² ~ χ²_d independent of the direction u,
E[(vᵀAv)²‖v‖²] = E[r⁶]/E[r⁴] · E[(vᵀAv)²] = (d + 4)((tr A)² + 2 tr A²); so
E‖w − g‖² = (d + 1)‖g‖² + c²(d + 4)((tr A)² + 2 tr A²) with c = σ/2 (forward) or 0 (antithetic), divided by M.)
With M = d orthogonal directions of the fixed norm √d, v_l = √d q_l, the antithetic estimator is exact on a
quadratic: ĝ = QQᵀg = g. (:func:`orthogonal_directions` draws χ(d) norms instead, which keeps ĝ unbiased but not
exact: ĝ = (1/d) Σ_l r_l² q_l q_lᵀ g.)

Fitness shaping ``centered_rank`` replaces the values by their centered ranks (:func:`centered_ranks`); it is
invariant to monotone transforms of L and robust to outliers but biased: it estimates the smoothed gradient of a
rank-transformed objective, not ∇L_σ.

Every function computes in the dtype of its inputs and draws randomness only from the ``generator`` it is given
(never the global RNG). Points and directions may carry leading batch dimensions: x is (..., d), v (..., M, d).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

ESTIMATORS = ("forward", "antithetic")
KINDS = ("gaussian", "orthogonal")
SHAPINGS = ("none", "centered_rank")


def _check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown zero-order estimator {estimator!r}; expected one of {ESTIMATORS}")


def _check_sigma(sigma: float) -> None:
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"smoothing radius sigma must be a finite number > 0, got {sigma!r}")


def _check_counts(samples: int, dim: int) -> None:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples (number of directions M) must be an integer >= 1, got {samples!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim (dimension d) must be an integer >= 1, got {dim!r}")


def evaluations(samples: int, estimator: str) -> int:
    """Objective evaluations per estimate with M = ``samples`` directions: forward M + 1, antithetic 2M."""
    _check_counts(samples, 1)
    _check_estimator(estimator)
    return samples + 1 if estimator == "forward" else 2 * samples


def gaussian_directions(samples: int, dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float64,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """M x d i.i.d. N(0, I_d) rows drawn from ``generator``."""
    _check_counts(samples, dim)
    if not dtype.is_floating_point:
        raise ValueError(f"directions need a floating dtype, got {dtype}")
    return torch.randn(samples, dim, generator=generator, dtype=dtype, device=device)


def orthogonal_directions(samples: int, dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float64,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """M x d rows, exactly orthogonal within each block of ≤ d consecutive rows, each marginally N(0, I_d).

    Per block: G (d x d, Gaussian) = QR, Q ← Q diag(sign diag R) (Haar-distributed), the block's rows are the
    first rows of Qᵀ; row l is then rescaled to norm ‖z_l‖ with z_l ~ N(0, I_d) independent (a χ(d) norm), so
    v_l = ‖z_l‖ q_l is uniform in direction with Gaussian norm, i.e. N(0, I_d).
    """
    _check_counts(samples, dim)
    if not dtype.is_floating_point:
        raise ValueError(f"directions need a floating dtype, got {dtype}")
    blocks = -(-samples // dim)
    gauss = torch.randn(blocks, dim, dim, generator=generator, dtype=dtype, device=device)
    q, r = torch.linalg.qr(gauss)
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    q = q * signs.unsqueeze(-2)  # column j of Q times sign(R_jj)
    rows = q.transpose(-2, -1).reshape(blocks * dim, dim)[:samples]  # rows of Qᵀ, block after block
    norms = torch.randn(samples, dim, generator=generator, dtype=dtype, device=device).norm(dim=-1, keepdim=True)
    return rows * norms


def directions(kind: str, samples: int, dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float64,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """M x d directions of ``kind`` ``gaussian`` (:func:`gaussian_directions`) or ``orthogonal``
    (:func:`orthogonal_directions`)."""
    if kind == "gaussian":
        return gaussian_directions(samples, dim, generator, dtype, device)
    if kind == "orthogonal":
        return orthogonal_directions(samples, dim, generator, dtype, device)
    raise ValueError(f"unknown direction kind {kind!r}; expected one of {KINDS}")


def _check_shapes(x: torch.Tensor, v: torch.Tensor) -> None:
    if x.dim() < 1 or v.dim() < 2 or v.shape[-1] != x.shape[-1]:
        raise ValueError(f"expected x of shape (..., d) and v of shape (..., M, d); got x {tuple(x.shape)}, "
                         f"v {tuple(v.shape)}")
    if v.shape[-2] < 1:
        raise ValueError("v must hold at least one direction (M >= 1)")


def perturbations(x: torch.Tensor, v: torch.Tensor, sigma: float, estimator: str) -> torch.Tensor:
    """The E x d points to evaluate, in the order :func:`combine` expects.

    forward: [x, x + σv_1, ..., x + σv_M] (M + 1 rows); antithetic: [x + σv_1, ..., x + σv_M, x − σv_1, ...,
    x − σv_M] (2M rows). With batch dimensions x (..., d), v (..., M, d) gives (..., E, d).
    """
    _check_sigma(sigma)
    _check_estimator(estimator)
    _check_shapes(x, v)
    v = v.to(x.dtype)
    base = x.unsqueeze(-2)
    step = sigma * v
    if estimator == "forward":
        base_row = base.expand(*torch.broadcast_shapes(base.shape[:-2], v.shape[:-2]), 1, x.shape[-1])
        return torch.cat([base_row, base + step], dim=-2)
    return torch.cat([base + step, base - step], dim=-2)


def centered_ranks(values: torch.Tensor) -> torch.Tensor:
    """rank(values)/(n − 1) − ½ ∈ [−½, ½] along the last dimension (rank 0 = smallest, ties broken by order);
    0 when n = 1."""
    if values.dim() < 1:
        raise ValueError("centered_ranks needs at least one dimension")
    n = values.shape[-1]
    if n <= 1:
        return torch.zeros_like(values)
    order = torch.argsort(values, dim=-1, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(n, device=values.device).expand_as(order)
    ranks.scatter_(-1, order, positions)
    dtype = values.dtype if values.dtype.is_floating_point else torch.float64
    return ranks.to(dtype) / (n - 1) - 0.5


def combine(values: torch.Tensor, v: torch.Tensor, sigma: float, estimator: str,
            shaping: str = "none") -> torch.Tensor:
    """ĝ (d, or (..., d) with batch dimensions) from the E ``values`` of L at :func:`perturbations`' rows.

    forward ĝ = (1/M) Σ_l [f_l − f_0] v_l / σ; antithetic ĝ = (1/M) Σ_l [f_l⁺ − f_l⁻] v_l / (2σ).
    ``centered_rank``: forward uses u = centered_ranks(f_1..f_M) and ĝ = (1/M) Σ u_l v_l / σ (the baseline f_0
    replaced by the ranks' mean 0); antithetic ranks all 2M values together. Rank shaping is biased: it
    estimates the smoothing of a monotone (rank) transform of L, not ∇L_σ.
    """
    _check_sigma(sigma)
    _check_estimator(estimator)
    if shaping not in SHAPINGS:
        raise ValueError(f"unknown fitness shaping {shaping!r}; expected one of {SHAPINGS}")
    if v.dim() < 2:
        raise ValueError(f"expected v of shape (..., M, d), got {tuple(v.shape)}")
    m = v.shape[-2]
    expected = evaluations(m, estimator)
    if values.dim() < 1 or values.shape[-1] != expected:
        raise ValueError(f"{estimator} with M = {m} directions needs {expected} values (last dimension), got "
                         f"shape {tuple(values.shape)}")
    v = v.to(values.dtype) if values.dtype.is_floating_point else v
    if estimator == "forward":
        perturbed = values[..., 1:]
        if shaping == "centered_rank":
            weights = centered_ranks(perturbed) / sigma
        else:
            weights = (perturbed - values[..., :1]) / sigma
    else:
        if shaping == "centered_rank":
            values = centered_ranks(values)
        weights = (values[..., :m] - values[..., m:]) / (2 * sigma)
    weights = weights.to(v.dtype)
    return (weights.unsqueeze(-1) * v).sum(dim=-2) / m


def estimate(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor, sigma: float,
             estimator: str, shaping: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """(ĝ, values): evaluate f (an E x d batch → E values) at :func:`perturbations` and :func:`combine`."""
    points = perturbations(x, v, sigma, estimator)
    values = f(points)
    if not isinstance(values, torch.Tensor) or values.shape != points.shape[:-1]:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"f must map the {tuple(points.shape)} points to values of shape {tuple(points.shape[:-1])},"
                         f" got {shape}")
    return combine(values, v.to(x.dtype), sigma, estimator, shaping), values


def expected_sq_error(g_norm_sq: float, d: int, M: int, sigma: float, trace_a: float, trace_a2: float,
                      estimator: str) -> float:
    """E‖ĝ − g‖² for a quadratic ½xᵀAx + bᵀx (A symmetric) with M i.i.d. Gaussian directions:
    forward [(d + 1)‖g‖² + (σ²/4)(d + 4)((tr A)² + 2 tr A²)]/M, antithetic (d + 1)‖g‖²/M."""
    _check_counts(M, d)
    _check_sigma(sigma)
    _check_estimator(estimator)
    error = (d + 1) * g_norm_sq
    if estimator == "forward":
        error += sigma ** 2 / 4 * (d + 4) * (trace_a ** 2 + 2 * trace_a2)
    return float(error / M)
