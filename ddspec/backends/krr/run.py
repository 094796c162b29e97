"""The numpy / torch side of the KRR backend (see :mod:`ddspec.backends.krr` for the math).

Targets are rows Y: one-hot classes, or real values (regression; the theorem holds for any Y). The exact
construction works in float64 and returns x in float64 (a float32 copy would move W_S away from W by ~1e-7);
KIP optimizes float64 inputs too, in standardized units as the other gradient backends do (its
:class:`~ddspec.components.synthetic.set.SyntheticSet` learns target rows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ddspec.backends.base import Distilled, NoOuterGradient, OuterGradient, stepped_gradient
from ddspec.components.closed_form import krr
from ddspec.components.closed_form.compare import Fitted, weight_metrics
from ddspec.components.models.kernel import feature_map, flat64, kernel_ridge_solve
from ddspec.components.synthetic.init import init_synthetic
from ddspec.components.synthetic.set import SyntheticSet
from ddspec.errors import SpecError
from ddspec.runtime.context import RunContext


def rows64(data: Any, y: torch.Tensor) -> np.ndarray:
    """The targets ``y`` as float64 numpy rows (:meth:`~ddspec.components.objectives.targets.Targets.rows`:
    one-hot for class indices)."""
    return data.targets.rows(y.detach().cpu()).double().numpy()


def full_data_model(problem: Any, data: Any) -> tuple[krr.FeatureMap, np.ndarray]:
    """(φ, W): the feature map and the ridge weights fitted to all real training data."""
    fm = feature_map(problem.model.features, int(np.prod(data.input_shape)))
    return fm, krr.fit_krr(fm(flat64(data.x_train)), rows64(data, data.y_train), problem.model.lam)


def infeasible(err: krr.KRRInfeasible, label_only: bool) -> SpecError:
    """The theory's "no" (its message says why and what would work) as a spec error at the setting to change."""
    path = "optimize.label_only" if label_only else "train.lam_synthetic"
    return SpecError.one("KRR_INFEASIBLE", path, str(err), "docs/backends/krr.md: when an exact synthetic set exists")


def exact(ctx: RunContext) -> Distilled:
    """D̂ with W_S = W from the starting points X̂ (``synthetic.init``, read as drawn: the construction has no
    learnable tensors), labels their targets' rows (one-hot classes or real values) or the model's predictions."""
    p, data = ctx.problem, ctx.data
    fm, W = full_data_model(p, data)
    lam_s = p.train.lam_synthetic
    x0, y0 = init_synthetic(p, data, ctx.generator)
    X_hat = flat64(x0)
    Phi_hat = fm(X_hat)
    try:
        if p.optimize.label_only:
            X_s, Y_s = X_hat, krr.label_only(W, Phi_hat, lam_s)
        else:
            Y = rows64(data, y0) if p.optimize.labels == "onehot" else Phi_hat @ W.T
            Z = krr.regularized_pinv(Phi_hat, lam_s).T
            result = krr.distill_inputs(fm, W, Y, lam_s, Z, branch="nearest", reference=Phi_hat)
            X_s, Y_s = result.X, result.Y
    except krr.KRRInfeasible as err:
        raise infeasible(err, p.optimize.label_only) from None
    x = torch.from_numpy(np.ascontiguousarray(X_s)).reshape(len(X_s), *data.input_shape)
    return Distilled(x, torch.from_numpy(np.ascontiguousarray(Y_s)))


def kip_step(ctx: RunContext) -> tuple[SyntheticSet, Callable[[], float]]:
    """KIP's synthetic set (float64) and its step: ½ mean ‖Y_t − φ(X_t) W_Sᵀ‖² on a fresh real batch, its gradient
    accumulated into the learned tensors; returns the loss."""
    p, data = ctx.problem, ctx.data
    fm = feature_map(p.model.features, int(np.prod(data.input_shape)))
    synthetic = SyntheticSet.create(p, data, ctx.generator, torch.float64, labels="rows")

    def step() -> float:
        batch = ctx.real_batch(p.optimize.real_batch_per_class)
        phi_t = fm.torch(data.x_train[batch].double().reshape(len(batch), -1))
        y_t = data.targets.rows(data.y_train[batch]).double()
        phi_s = fm.torch(synthetic.x.reshape(len(synthetic.z), -1))
        w_t = kernel_ridge_solve(phi_s, kip_rows(data, synthetic), p.train.lam_synthetic)
        loss = 0.5 * ((y_t - phi_t @ w_t) ** 2).sum(1).mean()
        loss.backward()
        return float(loss.detach())
    return synthetic, step


def kip_rows(data: Any, synthetic: SyntheticSet) -> torch.Tensor:
    """D̂'s target rows Y_S (float64)."""
    return data.targets.rows(synthetic.targets()).to(torch.float64)


def kip(ctx: RunContext) -> Distilled:
    """KIP: minimize ½ mean ‖Y_t − φ(X_t) W_Sᵀ‖², W_Sᵀ = φ(X_S)ᵀ(φ(X_S)φ(X_S)ᵀ + λ_S I)⁻¹ Y_S
    (pseudo-inverse for λ_S = 0), over X_S (standardized) and, with learned labels, the target rows Y_S."""
    synthetic, step = kip_step(ctx)
    learned = synthetic.tensors
    opt = ctx.problem.optimize
    optimizer, loop = ctx.outer(learned, "KIP", f"lower optimize.lr (now {opt.lr:g})")
    for it in loop:
        optimizer.zero_grad()
        loss = step()
        optimizer.step()
        loop.record(it, loss=loss)
        loop.check_finite(it, **learned)
    return Distilled(synthetic.x.detach().clone(), kip_rows(ctx.data, synthetic).detach().clone())


def outer_gradient(ctx: RunContext) -> OuterGradient:
    """KIP's loss on the first iteration's real batch and its gradient (:func:`kip_step`); the exact construction
    has none (:class:`~ddspec.backends.base.NoOuterGradient`)."""
    if ctx.analysis.has("optimize:exact"):
        raise NoOuterGradient("the exact KRR construction solves for D̂ in closed form: it steps along no gradient")
    synthetic, step = kip_step(ctx)
    return stepped_gradient(synthetic.tensors, ctx.replay(), step)


def distill(ctx: RunContext) -> Distilled:
    return exact(ctx) if ctx.analysis.has("optimize:exact") else kip(ctx)


def kernel_metrics(problem: Any, data: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """W_S = Y_S φ_λS(X_S)⁺ against the full-data W (:func:`~ddspec.components.closed_form.compare.weight_metrics`)."""
    fm, W = full_data_model(problem, data)
    W_s = krr.fit_krr(fm(flat64(x)), rows64(data, y), problem.train.lam_synthetic)
    return weight_metrics(*(Fitted(w, lambda rows, w=w: fm(rows) @ w.T) for w in (W, W_s)), data)
