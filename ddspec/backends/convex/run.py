"""The numpy / cvxpy / torch side of the convex backend (see :mod:`ddspec.backends.convex`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ddspec.backends.base import Distilled
from ddspec.components.closed_form import convex
from ddspec.components.synthetic.init import init_synthetic
from ddspec.components.models.kernel import flat64
from ddspec.components.training.optimizers import make_optimizer
from ddspec.components.synthetic.set import channel_stats, label_logits
from ddspec.runtime.context import RunContext

KINDS = {("logistic", "l2"): "logistic_l2", ("logistic", "l1"): "logistic_l1", ("svm", "l2"): "svm",
         ("squared", "l2"): "ridge"}


def convex_model(train: Any, num_classes: int) -> convex.ConvexModel:
    """The :class:`~ddspec.components.closed_form.convex.ConvexModel` of a ``train: convex`` spec."""
    constraint = {"none": None, "nonnegative": "nonneg", "box": "box"}[train.constraint]
    return convex.ConvexModel(KINDS[train.loss, train.penalty], train.lam, num_classes, constraint, train.box)


def outer_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the linear model's scores: softmax over K columns, or a logistic on one column."""
    if scores.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(scores[:, 0], y.double())
    return F.cross_entropy(scores, y)


def labels_for(model: convex.ConvexModel, y: torch.Tensor) -> torch.Tensor:
    """Soft labels as the solver takes them: the class-1 probability for binary logistic, rows otherwise."""
    return y[:, 1] if model.kind.startswith("logistic") and model.classes == 2 and y.dim() == 2 else y


def distill(ctx: RunContext) -> Distilled:
    """``optimize.iterations`` steps of the outer optimizer on D̂ (standardized inputs; label logits when learned)."""
    p, data = ctx.problem, ctx.data
    model = convex_model(p.train, data.num_classes)
    x0, y0 = init_synthetic(p, data, ctx.generator)
    mean, std = (t.double() for t in channel_stats(data.x_train))
    z = ((x0.double() - mean) / std).detach().requires_grad_(True)
    learned = {"x": z}
    logits = None
    if p.synthetic.learn_labels:
        logits = label_logits(y0, data.num_classes).double().detach().requires_grad_(True)
        learned["labels"] = logits
    opt = p.optimize
    optimizer = make_optimizer(opt.optimizer, learned.values(), opt.lr, opt.momentum, opt.weight_decay)
    loop = ctx.loop(opt.iterations, {**learned, "opt": optimizer}, desc=f"convex ({model.kind})",
                    fix=f"lower optimize.lr (now {opt.lr:g})")
    for it in loop:
        x = (mean + std * z).reshape(len(z), -1)
        y = y0 if logits is None else labels_for(model, torch.softmax(logits, 1))
        X_s, Y_s = x.detach().cpu().numpy(), y.detach().cpu().numpy()
        solution = convex.solve(model, X_s, Y_s)
        rows = torch.cat([ctx.sample_real(idx, opt.real_batch_per_class) for idx in data.strata()])
        W = torch.from_numpy(solution.W).requires_grad_(True)
        b = torch.from_numpy(solution.b).requires_grad_(True)
        loss = outer_loss(torch.from_numpy(flat64(data.x_train[rows])) @ W + b, data.y_train[rows].cpu())
        g_w, g_b = torch.autograd.grad(loss, [W, b])
        hyper = convex.hypergradient(model, X_s, Y_s, solution, g_w.numpy(), g_b.numpy())
        optimizer.zero_grad()
        tensors, grads = [x], [torch.from_numpy(hyper.X).to(x)]
        if logits is not None and hyper.Y is not None:
            tensors.append(y)
            grads.append(torch.from_numpy(hyper.Y).to(y).reshape(y.shape))
        torch.autograd.backward(tensors, grads)
        optimizer.step()
        loop.record(it, loss=float(loss.detach()))
        loop.check_finite(it, **learned)
    x = (mean + std * z).detach()
    y = y0 if logits is None else torch.softmax(logits, 1).detach()
    return Distilled(x.clone(), y.clone())


def weight_metrics(problem: Any, data: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """The inner problem solved on D̂ (W_S) and on all real data (W): ``w_rel_error`` = ‖W̃_S − W̃‖/‖W̃‖ (W̃ = [W; b]),
    ``agreement`` of their test predictions, and both models' test accuracy."""
    model = convex_model(problem.train, data.num_classes)
    y_s = y.numpy() if y.dim() == 1 else labels_for(model, y.double()).numpy()
    full = convex.solve(model, flat64(data.x_train), data.y_train.cpu().numpy())
    distilled = convex.solve(model, flat64(x), y_s)
    stack = [np.vstack([s.W, s.b[None]]) for s in (full, distilled)]
    x_test = flat64(data.x_test)
    pred = []
    for s in (full, distilled):
        scores = convex.predict(s, x_test)
        pred.append((scores[:, 0] > 0).astype(int) if scores.shape[1] == 1 else scores.argmax(1))
    truth = data.y_test.cpu().numpy()
    return {
        "w_rel_error": float(np.linalg.norm(stack[1] - stack[0]) / np.linalg.norm(stack[0])),
        "agreement": float((pred[0] == pred[1]).mean()),
        "accuracy_full_model": float((pred[0] == truth).mean()),
        "accuracy_distilled_model": float((pred[1] == truth).mean()),
    }
