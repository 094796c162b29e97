"""Evaluating collocation points: fresh MLP PINNs trained on D̂ by the residual, scored by relL2 per held-out BC.

:func:`fit_pinn` is the protocol's training for a physics-informed model family: ``torch.manual_seed(seed)``, the
model built for the data's PDE, ``evaluate.epochs`` passes over D̂'s points in mini-batches of
``evaluate.batch_size`` (one full-batch step per epoch when the batch holds every point; batches drawn by a
generator seeded with the seed) of ``evaluate.optimizer`` at ``evaluate.lr`` on mean_i L[u_θ](p_i)², lr x 0.1 from
half of the steps on with ``lr_drop_at_half``; the model after the last step is scored.

:class:`RelativeL2` (metric ``relative_l2``): relL2_b = ‖u_θ − u_b‖₂/‖u_b‖₂ over the test grid of each test BC b;
the value is the mean over all test BCs, the figures ``in`` / ``out`` the mean and the metric's quantile over
A_in's and A_out's BCs; the details (per run) list every test BC's relL2 and parameters (the data's test order:
A_in, then A_out), and the worst BC's index and error field u_θ − u on the test grid (for the report).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ddspec.components.pde.data import PdeDataset
from ddspec.components.pde.pinn import train_pinn
from ddspec.evaluate.metrics import Metric, Scored
from ddspec.registry import MODELS


def fit_pinn(spec: Any, seed: int, points: torch.Tensor, data: PdeDataset, ev: Any, device: torch.device | str
             ) -> nn.Module:
    """A PINN of ``spec`` trained on ``points`` as the module docstring says."""
    torch.manual_seed(seed)
    model = MODELS.build(spec, data).to(device)
    points = points.detach().to(device, torch.float64)
    batch = ev.batch_size if ev.batch_size < len(points) else None
    steps = ev.epochs * math.ceil(len(points) / ev.batch_size)
    generator = torch.Generator().manual_seed(seed)
    train_pinn(model, points, steps, ev.lr, optimizer=ev.optimizer, batch_size=batch, generator=generator,
               lr_drop_at=steps // 2 if ev.lr_drop_at_half else None)
    return model


def per_bc(outputs: torch.Tensor, data: PdeDataset) -> torch.Tensor:
    """relL2 of the test outputs (N x 1) per test BC."""
    fields = data.y_test.reshape(len(data.bcs_test), -1)
    u = outputs.reshape(fields.shape).to(fields.dtype)
    return (u - fields).norm(dim=1) / fields.norm(dim=1)


class RelativeL2(Metric):
    """relL2 over the held-out BCs (see the module docstring)."""

    def __call__(self, outputs: torch.Tensor, data: PdeDataset) -> float:
        return float(per_bc(outputs, data).mean())

    def scored(self, outputs: torch.Tensor, data: PdeDataset) -> Scored:
        values = per_bc(outputs, data)
        q, out = self.spec.quantile, data.test_out.to(values.device)
        figures = {split: {"mean": float(v.mean()), f"q{round(100 * q)}": float(torch.quantile(v, q))}
                   for split, v in (("in", values[~out]), ("out", values[out]))}
        worst = int(values.argmax())
        error = outputs.reshape(len(values), -1)[worst].to(data.y_test.dtype) - data.y_test.reshape(len(values), -1)[worst]
        details = {"per_bc": values.tolist(), "bcs": data.bcs_test.tolist(), "worst_bc": worst,
                   "worst_error": error.tolist()}
        return Scored(float(values.mean()), figures, details)
