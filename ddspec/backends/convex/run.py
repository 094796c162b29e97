"""The numpy / cvxpy / torch side of the convex backend (see :mod:`ddspec.backends.convex`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ddspec.backends.base import Distilled, OuterGradient, stepped_gradient
from ddspec.components.closed_form import convex
from ddspec.components.closed_form.compare import Fitted, weight_metrics
from ddspec.components.models.kernel import flat64
from ddspec.components.synthetic.set import SyntheticSet
from ddspec.runtime.context import RunContext


def outer_loss(scores: torch.Tensor, y: torch.Tensor, data: Any) -> torch.Tensor:
    """The test error of the linear model's scores on real rows: the targets' loss (cross-entropy over K columns,
    squared error for real values), or a logistic on the one column of a binary model."""
    if scores.shape[1] == 1 and data.num_classes == 2:
        return F.binary_cross_entropy_with_logits(scores[:, 0], y.double())
    return data.targets.loss(scores, y)


def convex_step(ctx: RunContext) -> tuple[convex.ConvexModel, SyntheticSet, Callable[[], float]]:
    """The inner model, D̂ (float64) and the outer step: solve the inner problem on D̂ exactly, measure the test
    error on a fresh real batch, and accumulate its hypergradient (KKT) into the learned tensors; returns the loss."""
    p, data = ctx.problem, ctx.data
    model = convex.ConvexModel.of_train(p.train, data.num_classes)
    synthetic = SyntheticSet.create(p, data, ctx.generator, torch.float64, labels="logits")

    def step() -> float:
        x = synthetic.x.reshape(len(synthetic.z), -1)
        y = model.loss.solver_labels(synthetic.targets(), model.classes)
        X_s, Y_s = x.detach().cpu().numpy(), y.detach().cpu().numpy()
        solution = convex.solve(model, X_s, Y_s)
        rows = ctx.real_batch(p.optimize.real_batch_per_class)
        W = torch.from_numpy(solution.W).requires_grad_(True)
        b = torch.from_numpy(solution.b).requires_grad_(True)
        loss = outer_loss(torch.from_numpy(flat64(data.x_train[rows])) @ W + b, data.y_train[rows].cpu(), data)
        g_w, g_b = torch.autograd.grad(loss, [W, b])
        hyper = convex.hypergradient(model, X_s, Y_s, solution, g_w.numpy(), g_b.numpy())
        tensors, grads = [x], [torch.from_numpy(hyper.X).to(x)]
        if synthetic.learned is not None and hyper.Y is not None:
            tensors.append(y)
            grads.append(torch.from_numpy(hyper.Y).to(y).reshape(y.shape))
        torch.autograd.backward(tensors, grads)
        return float(loss.detach())
    return model, synthetic, step


def distill(ctx: RunContext) -> Distilled:
    """``optimize.iterations`` steps of the outer optimizer on D̂ (standardized inputs; label logits when learned)."""
    model, synthetic, step = convex_step(ctx)
    learned = synthetic.tensors
    opt = ctx.problem.optimize
    optimizer, loop = ctx.outer(learned, f"convex ({model.kind})", f"lower optimize.lr (now {opt.lr:g})")
    for it in loop:
        optimizer.zero_grad()
        loss = step()
        optimizer.step()
        loop.record(it, loss=loss)
        loop.check_finite(it, **learned)
    return Distilled(*synthetic.result())


def outer_gradient(ctx: RunContext) -> OuterGradient:
    """The test error of the inner solution on D̂ (first iteration's real batch) and its KKT hypergradient
    (:func:`convex_step`); the objective is as precise as the conic solver's tolerances."""
    _, synthetic, step = convex_step(ctx)
    return stepped_gradient(synthetic.tensors, ctx.replay(), step, precision=convex.SOLVER_OPTIONS["tol_gap_rel"])


#: Part of the key of a cached full-data solution: raise it when a change to ddspec changes the solutions.
FULL_CACHE_VERSION = 1


def convex_metrics(problem: Any, data: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """The inner problem solved on D̂ (W_S) and on all real data (W: :func:`full_data_weights`), compared on
    W̃ = [W; bᵀ] (:func:`~ddspec.components.closed_form.compare.weight_metrics`)."""
    model = convex.ConvexModel.of_train(problem.train, data.num_classes)
    y_s = y.numpy() if y.dim() == 1 else model.loss.solver_labels(y.double(), model.classes).numpy()
    distilled = convex.solve(model, flat64(x), y_s)
    fitted = [full_data_weights(problem.train, model, data), np.vstack([distilled.W, distilled.b[None]])]
    return weight_metrics(*(Fitted(w, lambda rows, w=w: rows @ w[:-1] + w[-1]) for w in fitted), data)


def full_data_weights(train: Any, model: convex.ConvexModel, data: Any) -> np.ndarray:
    """W̃ = [W; bᵀ] of the inner problem solved on all real training data. It does not depend on D̂, so it is
    cached like the full baseline's figures (:func:`ddspec.evaluate.baselines.cached`, kind ``convex``) under the
    data's contents, the train spec, the solver's options and :data:`FULL_CACHE_VERSION`: the solve (tens of
    seconds with the conic solver on digits) runs once per data and inner problem."""
    from ddspec.evaluate.baselines import cached, data_digest

    key = {"data": data_digest(data), "train": train.model_dump(mode="json"), "classes": data.num_classes,
           "solver": convex.SOLVER_OPTIONS, "version": FULL_CACHE_VERSION}

    def solve() -> dict[str, Any]:
        s = convex.solve(model, flat64(data.x_train), data.y_train.cpu().numpy())
        return {"weights": np.vstack([s.W, s.b[None]]).tolist()}

    return np.asarray(cached(key, solve, kind="convex")["weights"], dtype=np.float64)
