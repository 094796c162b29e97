"""The numpy / torch side of the KRR backend (see :mod:`ddspec.backends.krr` for the math).

The exact construction works in float64 and returns x in float64 (a float32 copy would move W_S
away from W by ~1e-7); KIP optimizes float64 inputs too, in standardized units as the other
gradient backends do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ddspec.backends.base import Distilled
from ddspec.components.closed_form import krr
from ddspec.components.synthetic.init import init_synthetic
from ddspec.components.models.kernel import feature_map, flat64, kernel_ridge_solve, targets, torch_features
from ddspec.components.training.optimizers import make_optimizer
from ddspec.components.synthetic.set import channel_stats
from ddspec.errors import SpecError
from ddspec.runtime.context import RunContext


def full_data_model(problem: Any, data: Any) -> tuple[krr.FeatureMap, np.ndarray]:
    """(φ, W): the feature map and the ridge weights fitted to all real training data."""
    fm = feature_map(problem.model.features, int(np.prod(data.input_shape)))
    return fm, krr.fit_krr(fm(flat64(data.x_train)), targets(data.y_train, data.num_classes), problem.model.lam)


def infeasible(err: krr.KRRInfeasible, label_only: bool) -> SpecError:
    """The theory's "no" (its message says why and what would work) as a spec error at the setting to change."""
    path = "optimize.label_only" if label_only else "train.lam_synthetic"
    return SpecError.one("KRR_INFEASIBLE", path, str(err), "docs/backends/krr.md: when an exact synthetic set exists")


def exact(ctx: RunContext) -> Distilled:
    """D̂ with W_S = W: from the starting points X̂ (``synthetic.init``), labels one-hot or the model's."""
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
            Y = targets(y0, data.num_classes) if p.optimize.labels == "onehot" else Phi_hat @ W.T
            Z = krr.regularized_pinv(Phi_hat, lam_s).T
            result = krr.distill_inputs(fm, W, Y, lam_s, Z, branch="nearest", reference=Phi_hat)
            X_s, Y_s = result.X, result.Y
    except krr.KRRInfeasible as err:
        raise infeasible(err, p.optimize.label_only) from None
    x = torch.from_numpy(np.ascontiguousarray(X_s)).reshape(len(X_s), *data.input_shape)
    return Distilled(x, torch.from_numpy(np.ascontiguousarray(Y_s)))


def kip(ctx: RunContext) -> Distilled:
    """KIP: minimize ½ mean ‖Y_t − φ(X_t) W_Sᵀ‖², W_Sᵀ = φ(X_S)ᵀ(φ(X_S)φ(X_S)ᵀ + λ_S I)⁻¹ Y_S
    (pseudo-inverse for λ_S = 0), over X_S (standardized) and, with learned labels, Y_S."""
    p, data = ctx.problem, ctx.data
    fm = feature_map(p.model.features, int(np.prod(data.input_shape)))
    x0, y0 = init_synthetic(p, data, ctx.generator)
    mean, std = (t.double() for t in channel_stats(data.x_train))
    z = ((x0.double() - mean) / std).detach().requires_grad_(True)
    labels = torch.from_numpy(targets(y0, data.num_classes)).to(z.device)
    learned = {"x": z}
    if p.synthetic.learn_labels:
        labels.requires_grad_(True)
        learned["labels"] = labels
    opt = p.optimize
    optimizer = make_optimizer(opt.optimizer, learned.values(), opt.lr, opt.momentum, opt.weight_decay)
    loop = ctx.loop(opt.iterations, {**learned, "opt": optimizer}, desc="KIP",
                    fix=f"lower optimize.lr (now {opt.lr:g})")
    lam_s = p.train.lam_synthetic
    for it in loop:
        rows = torch.cat([ctx.sample_real(idx, opt.real_batch_per_class) for idx in data.strata()])
        phi_t = torch_features(fm, data.x_train[rows].double().reshape(len(rows), -1))
        y_t = torch.nn.functional.one_hot(data.y_train[rows], data.num_classes).double()
        phi_s = torch_features(fm, (mean + std * z).reshape(len(z), -1))
        w_t = kernel_ridge_solve(phi_s, labels, lam_s)
        loss = 0.5 * ((y_t - phi_t @ w_t) ** 2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loop.record(it, loss=float(loss.detach()))
        loop.check_finite(it, **learned)
    x = (mean + std * z).detach()
    return Distilled(x.clone(), labels.detach().clone())


def distill(ctx: RunContext) -> Distilled:
    return exact(ctx) if ctx.problem.optimize.kind == "exact" else kip(ctx)


def weight_metrics(problem: Any, data: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """W_S against W: ``w_rel_error`` = ‖W_S − W‖/‖W‖, ``agreement`` (fraction of test predictions equal),
    and both models' test accuracy (``accuracy_full_model``, ``accuracy_distilled_model``)."""
    fm, W = full_data_model(problem, data)
    W_s = krr.fit_krr(fm(flat64(x)), targets(y, data.num_classes), problem.train.lam_synthetic)
    phi_test = fm(flat64(data.x_test))
    full, distilled = ((phi_test @ w.T).argmax(1) for w in (W, W_s))
    truth = data.y_test.cpu().numpy()
    return {
        "w_rel_error": krr.relative_error(W_s, W),
        "agreement": float((full == distilled).mean()),
        "accuracy_full_model": float((full == truth).mean()),
        "accuracy_distilled_model": float((distilled == truth).mean()),
    }
