"""How synthetic tensors are parameterized for first-order outer optimizers (matching, bilevel).

- Inputs are held standardized, z = (x − μ)/σ with μ, σ the per-channel mean and std of the real
  training inputs, so reference learning rates (set on normalized data) carry over to any units.
- Learned labels are logits ℓ (N x K); the soft labels are softmax(ℓ), initialised at one-hot·s
  with s chosen so that the true class gets probability :data:`LABEL_INIT_PROB`.
- Learned inner learning rates are held as log lr (positive by construction).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

#: Learned labels start as one-hot x scale, with scale such that softmax gives the class this probability.
LABEL_INIT_PROB = 0.9


def label_scale(num_classes: int) -> float:
    """s with softmax(s·e_c)_c = p: s = log(p (K − 1) / (1 − p)), p = :data:`LABEL_INIT_PROB`."""
    return math.log(LABEL_INIT_PROB * max(num_classes - 1, 1) / (1 - LABEL_INIT_PROB))


def label_logits(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Learnable label logits (one-hot x :func:`label_scale`) for class indices ``y``."""
    return (torch.nn.functional.one_hot(y, num_classes).float() * label_scale(num_classes)).requires_grad_(True)


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of N x C x ... inputs (per feature for N x D), shaped to
    broadcast over one sample; a zero std becomes 1."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims, keepdim=True)[0]
    std = x.std(dims, keepdim=True, unbiased=False)[0]
    return mean, torch.where(std > 0, std, torch.ones_like(std))


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
