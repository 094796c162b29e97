"""First-order optimizers of the synthetic tensors and of inner training: SGD / Adam, and the outer lr schedule.

(How the synthetic tensors themselves are held — standardized inputs, label logits — is
:mod:`ddspec.components.synthetic.set`.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """torch's ``LambdaLR`` giving iteration t (0-based) of ``total`` the lr initial_lr · 1 (``constant``),
    initial_lr · ½(1 + cos(π t/total)) (``cosine``) or initial_lr/√(1 + t) (``inv_sqrt``); step it after each
    iteration (its ``state_dict`` holds t)."""
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    if schedule == "inv_sqrt":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0 / math.sqrt(1.0 + t))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 * (1.0 + math.cos(math.pi * t / total)))


def make_optimizer(kind: str, params: Iterable[torch.Tensor], lr: float, momentum: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """SGD with momentum, or Adam."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
