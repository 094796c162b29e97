"""The evaluation protocol: train fresh models on D̂ from fixed seeds, measure the final-epoch model.

Closed-form models (``kernel_ridge``) are fitted exactly (float64, no seed involved). For every other
model (``evaluate.models``, or the problem's model) and each seed: ``torch.manual_seed(seed)``,
build the model, train ``epochs`` epochs on (x, y) with cross-entropy (class targets for int64 y,
probability targets for float N x K y), SGD or Adam, mini-batches shuffled by a generator seeded with
``seed``, lr x 0.1 from epoch ⌊epochs/2⌋ on (``lr_drop_at_half``), optional augmentation. The model
after the last epoch (never the best epoch) is scored on the clean test set with every metric and,
for accuracy, on each corrupted test set (built once, from a generator seeded with
:data:`CORRUPTION_SEED`, so every run and every method sees the same corrupted data).

Figures are summarized as mean, std and the raw values, ordered model-major then seed. std is the
sample standard deviation (ddof = 1) when there are at least two values, else 0.0.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ddspec.components.data.base import Dataset
from ddspec.components.training.fit import Augmenter, fit
from ddspec.errors import RunError, SpecError
from ddspec.evaluate.metrics import correct, metric_details
from ddspec.registry import CORRUPTIONS, METRICS, MODELS

CORRUPTION_SEED = 0
PREDICT_BATCH = 1024


@dataclass
class _Run:
    """The scores of one (model, seed) run."""

    model: int
    metrics: dict[str, float] = field(default_factory=dict)
    corrupted: dict[str, float] = field(default_factory=dict)
    details: dict[str, dict[str, list]] = field(default_factory=dict)


def evaluate_distilled(
    x: torch.Tensor, y: torch.Tensor, data: Dataset, problem: Any, device: torch.device | str, progress: bool = True
) -> dict[str, Any]:
    """Run the protocol of ``problem.evaluate`` on the distilled set (x, y); return the JSON-ready figures:
    ``{metric: {mean, std, values, <params>}, "corruptions": {kind: {mean, std, values, <params>}},
    "per_model": {"<i>:<kind>": {...}}, "protocol": {...}, "seeds": [...], "std_ddof": 1}``."""
    from tqdm.auto import tqdm

    ev = problem.evaluate
    models = resolved_models(problem)
    augment = _augmenter(problem, data) if ev.augment else None
    test_sets = {c.kind: _corrupt(c, data) for c in ev.corruptions}
    runs: list[_Run] = []
    bar = tqdm(list(itertools.product(range(len(models)), ev.seeds)), desc="evaluate", disable=not progress)
    for index, seed in bar:
        if "closed_form" in MODELS[models[index].kind].capabilities:
            model = _fit_closed_form(models[index], x, y, data, problem)
        else:
            inputs, labels = x.detach().to(device, torch.float32), _targets(y, data.num_classes).to(device)
            model = _train(models[index], seed, inputs, labels, data, ev, augment, device)
        runs.append(_score(index, model, data, ev.metrics, test_sets, device))
        bar.set_postfix(accuracy=f"{runs[-1].metrics.get('accuracy', math.nan):.4f}", refresh=False)
    bar.close()
    return {
        **_summary(runs, ev, details=True),
        "per_model": {f"{i}:{m.kind}": _summary([r for r in runs if r.model == i], ev) for i, m in enumerate(models)},
        "protocol": {**ev.model_dump(mode="json"), "models": [m.model_dump(mode="json") for m in models]},
        "seeds": list(ev.seeds),
        "std_ddof": 1,
    }


def resolved_models(problem: Any) -> list[Any]:
    """``evaluate.models``, or ``[problem.model]`` when that list is empty."""
    models = list(problem.evaluate.models) or [problem.model]
    if models[0] is None:
        raise SpecError.one(
            "EVAL_NO_MODEL", "evaluate.models", "no model to evaluate: evaluate.models is empty and model is unset",
            "set `model`, or list architectures under evaluate.models",
        )
    return models


def _targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 class indices (N), or float probability rows (N x K, non-negative, summing to 1)."""
    if y.dim() == 1 and not y.is_floating_point():
        return y.long()
    if y.dim() == 2 and y.is_floating_point() and y.shape[1] == num_classes:
        y = y.detach().float()
        if bool((y >= 0).all()) and torch.allclose(y.sum(1), torch.ones(len(y), device=y.device), atol=1e-3):
            return y
    raise RunError.one(
        "EVAL_LABELS", "synthetic",
        f"distilled labels must be int64 class indices (N) or soft-label probabilities (N x {num_classes}); "
        f"got {y.dtype} {tuple(y.shape)}" + (" whose rows are not probability vectors" if y.dim() == 2 else ""),
        "store y as class indices, or as softmax(logits) for learned labels",
    )


def _augmenter(problem: Any, data: Dataset) -> Augmenter:
    """DSA augmentation with the ops of ``optimize.augmentation``, for the data's spatial dimension; always
    on (``evaluate.augment`` is the switch for evaluation, ``augmentation.enabled`` the one for distillation)."""
    spec = getattr(problem.optimize, "augmentation", None)
    ndim = len(data.input_shape) - 1
    if spec is None:
        raise _augment_error(
            f"evaluate.augment is true but optimize kind {problem.optimize.kind!r} declares no augmentation",
            "set evaluate.augment: false, or use an optimizer with an `augmentation` section (kind: gradient)",
        )
    if ndim not in (1, 2):
        raise _augment_error(f"augmentation needs 1-D or 2-D inputs (C x L, C x H x W), not {data.input_shape}")
    try:
        from ddspec.components.training.augment import Augment
    except ImportError as err:
        raise _augment_error(f"augmentation is unavailable in this installation ({err})") from err
    return Augment(spec.model_copy(update={"enabled": True}), ndim)


def _augment_error(message: str, fix: str = "set evaluate.augment: false") -> SpecError:
    return SpecError.one("EVAL_AUGMENT", "evaluate.augment", message, fix)


def _corrupt(spec: Any, data: Dataset) -> torch.Tensor:
    """The corrupted test inputs (CPU), from a fresh generator seeded with CORRUPTION_SEED."""
    generator = torch.Generator().manual_seed(CORRUPTION_SEED)
    return CORRUPTIONS.build(spec, data.x_test.detach().cpu(), data.value_range(), generator)


def _fit_closed_form(spec: Any, x: torch.Tensor, y: torch.Tensor, data: Dataset, problem: Any) -> nn.Module:
    """A closed-form model (kernel ridge) fitted exactly to (x, y) in float64, with the inner procedure's
    ridge (``train.lam_synthetic``) when it declares one, else the model's own λ. Deterministic: every seed
    gives the same model."""
    lam = getattr(problem.train, "lam_synthetic", spec.lam)
    return MODELS.build(spec, data.input_shape, data.num_classes).fit(x, y, lam)


def _train(
    spec: Any, seed: int, x: torch.Tensor, y: torch.Tensor, data: Dataset, ev: Any,
    augment: Augmenter | None, device: torch.device | str,
) -> nn.Module:
    """A model of ``spec`` initialised from ``seed`` and trained by :func:`~ddspec.components.training.fit.fit` with the
    protocol's recipe, its batches shuffled by a generator seeded with ``seed``; the final model (eval mode)."""
    torch.manual_seed(seed)
    model = MODELS.build(spec, data.input_shape, data.num_classes).to(device)
    return fit(model, x, y, ev, torch.Generator().manual_seed(seed), augment)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """argmax_k model(x)_k as int64 on the CPU."""
    return torch.cat([model(chunk.to(device)).argmax(1).cpu() for chunk in x.split(PREDICT_BATCH)])


def _score(
    index: int, model: nn.Module, data: Dataset, metrics: list, test_sets: dict[str, torch.Tensor],
    device: torch.device | str,
) -> _Run:
    run = _Run(index)
    pred = _predict(model, data.x_test, device)
    for spec in metrics:
        run.metrics[spec.kind] = float(METRICS.build(spec, pred, data))
        run.details[spec.kind] = metric_details(spec, pred, data)
    for kind, x_test in test_sets.items():
        run.corrupted[kind] = float(correct(_predict(model, x_test, device), data.y_test).mean())
    return run


def stats(values: list[float]) -> dict[str, Any]:
    """{mean, std (sample, ddof=1; 0.0 for one value), values}."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "values": list(values)}


def _params(spec: Any) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude={"kind"})


def _summary(runs: list[_Run], ev: Any, details: bool = False) -> dict[str, Any]:
    """Stats per metric and per corruption over ``runs``; with ``details``, also the specs' parameters and
    the per-run extras of each metric (one list entry per run)."""
    out: dict[str, Any] = {}
    for spec in ev.metrics:
        out[spec.kind] = stats([r.metrics[spec.kind] for r in runs])
        if details:
            extras = [r.details[spec.kind] for r in runs]
            out[spec.kind] |= _params(spec) | {k: [e[k] for e in extras] for k in extras[0]}
    out["corruptions"] = {
        spec.kind: stats([r.corrupted[spec.kind] for r in runs]) | (_params(spec) if details else {})
        for spec in ev.corruptions
    }
    return out
