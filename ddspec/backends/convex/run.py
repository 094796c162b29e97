"""The numpy / cvxpy / torch side of the convex backend (see :mod:`ddspec.backends.convex`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ddspec.backends.base import Distilled
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


def distill(ctx: RunContext) -> Distilled:
    """``optimize.iterations`` steps of the outer optimizer on D̂ (standardized inputs; label logits when learned)."""
    p, data = ctx.problem, ctx.data
    model = convex.ConvexModel.of_train(p.train, data.num_classes)
    synthetic = SyntheticSet.create(p, data, ctx.generator, torch.float64, labels="logits")
    learned = synthetic.tensors
    opt = p.optimize
    optimizer, loop = ctx.outer(learned, f"convex ({model.kind})", f"lower optimize.lr (now {opt.lr:g})")
    for it in loop:
        x = synthetic.x.reshape(len(synthetic.z), -1)
        y = model.loss.solver_labels(synthetic.targets(), model.classes)
        X_s, Y_s = x.detach().cpu().numpy(), y.detach().cpu().numpy()
        solution = convex.solve(model, X_s, Y_s)
        rows = ctx.real_batch(opt.real_batch_per_class)
        W = torch.from_numpy(solution.W).requires_grad_(True)
        b = torch.from_numpy(solution.b).requires_grad_(True)
        loss = outer_loss(torch.from_numpy(flat64(data.x_train[rows])) @ W + b, data.y_train[rows].cpu(), data)
        g_w, g_b = torch.autograd.grad(loss, [W, b])
        hyper = convex.hypergradient(model, X_s, Y_s, solution, g_w.numpy(), g_b.numpy())
        optimizer.zero_grad()
        tensors, grads = [x], [torch.from_numpy(hyper.X).to(x)]
        if synthetic.learned is not None and hyper.Y is not None:
            tensors.append(y)
            grads.append(torch.from_numpy(hyper.Y).to(y).reshape(y.shape))
        torch.autograd.backward(tensors, grads)
        optimizer.step()
        loop.record(it, loss=float(loss.detach()))
        loop.check_finite(it, **learned)
    return Distilled(*synthetic.result())


def convex_metrics(problem: Any, data: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """The inner problem solved on D̂ (W_S) and on all real data (W), compared on W̃ = [W; bᵀ]
    (:func:`~ddspec.components.closed_form.compare.weight_metrics`)."""
    model = convex.ConvexModel.of_train(problem.train, data.num_classes)
    y_s = y.numpy() if y.dim() == 1 else model.loss.solver_labels(y.double(), model.classes).numpy()
    solutions = (convex.solve(model, flat64(data.x_train), data.y_train.cpu().numpy()),
                 convex.solve(model, flat64(x), y_s))
    return weight_metrics(*(Fitted(np.vstack([s.W, s.b[None]]), lambda rows, s=s: convex.predict(s, rows))
                            for s in solutions), data)
