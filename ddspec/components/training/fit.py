"""Plain (non-differentiable) training of a model on a dataset: the loop shared by the evaluation
protocol and by the teachers and experts some objectives train on the real data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ddspec.components.training.optimizers import make_optimizer
from ddspec.components.training.regularizers import Regularizer, batch_loss

Augmenter = Callable[[torch.Tensor, int], torch.Tensor]
EpochHook = Callable[[int, nn.Module], None]
#: ``loss(outputs, y) -> scalar``: the mean loss of a batch (``Dataset.targets.loss``: cross-entropy for classes,
#: squared error for real-valued targets).
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Any, order: torch.Generator,
        augment: Augmenter | None = None, on_epoch: EpochHook | None = None, *, loss: Loss,
        regularizers: Sequence[Regularizer] = ()) -> nn.Module:
    """Minimize (1/|B|) Σ_{i∈B} ℓ(model(aug(x_i)), y_i) over batches shuffled by ``order`` for
    ``recipe.epochs`` epochs (lr × 0.1 from epoch ⌊epochs/2⌋ if ``recipe.lr_drop_at_half``), ℓ = ``loss``
    (required, no default: the data's ``Dataset.targets.loss``, so real-valued targets never train with
    cross-entropy); one augmentation draw per batch, its seed drawn from ``order``. ``on_epoch(e, model)``
    runs after each epoch e = 1..epochs. With ``regularizers`` (teachers and experts only; the evaluation protocol
    trains on the plain loss) the batch loss is mean_i ℓ_i + Σ_r λ_r mean_i R_r,i. Returns the final model in eval
    mode."""
    optimizer = make_optimizer(recipe.optimizer, model.parameters(), recipe.lr, recipe.momentum, recipe.weight_decay)
    drop_at = recipe.epochs // 2 if recipe.lr_drop_at_half else 0
    model.train()
    for epoch in range(recipe.epochs):
        if epoch == drop_at and drop_at > 0:
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * 0.1
        for batch in torch.randperm(len(x), generator=order).split(recipe.batch_size):
            batch = batch.to(x.device)
            inputs = x[batch]
            if augment is not None:
                inputs = augment(inputs, int(torch.randint(2**31, (), generator=order)))
            value = batch_loss(model, inputs, y[batch], loss, regularizers)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
    return model.eval()
