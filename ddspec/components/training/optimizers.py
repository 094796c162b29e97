"""First-order optimizers of the synthetic tensors and of inner training: SGD / Adam, and the outer lr schedule.

(How the synthetic tensors themselves are held — standardized inputs, label logits — is
:mod:`ddspec.components.synthetic.set`.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def apply_schedule(optimizer: torch.optim.Optimizer, schedule: str, iteration: int, total: int) -> None:
    """Set each param group's lr for ``iteration`` (0-based) of ``total``: its initial lr times 1 (``constant``)
    or ½(1 + cos(π·iteration/total)) (``cosine``). The initial lr is kept in the group (``initial_lr``), so the
    schedule survives a checkpoint round trip."""
    factor = 1.0 if schedule == "constant" else 0.5 * (1.0 + math.cos(math.pi * iteration / total))
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


def make_optimizer(kind: str, params: Iterable[torch.Tensor], lr: float, momentum: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """SGD with momentum, or Adam."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
