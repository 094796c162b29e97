"""The evaluation protocol: train fresh models on D̂ from fixed seeds, measure the final-epoch model.

Closed-form models (``kernel_ridge``) are fitted exactly (float64, no seed involved). For every other
model (``evaluate.models``, or the problem's model) and each seed: ``torch.manual_seed(seed)``, build the
model with ``data.targets.num_outputs`` outputs, train ``epochs`` epochs on (x, y) with the targets' loss
(cross-entropy for classes, against class indices or probability rows; squared error for real values),
SGD or Adam, mini-batches shuffled by a generator seeded with ``seed``, lr x 0.1 from epoch ⌊epochs/2⌋ on
(``lr_drop_at_half``), optional augmentation. The model after the last epoch (never the best epoch) is
scored on the clean test set with every metric (``evaluate.metrics``, or the defaults for the data's
targets; a kind with capability ``needs_model``, such as ``adversarial``, gets the model itself) and, with the
primary metric (accuracy, or rmse), on each corrupted test set (built once, from a
generator seeded with :data:`CORRUPTION_SEED`, so every run and every method sees the same corrupted data).

A physics-informed model family (model capability ``physics_informed``: a PINN on data ``pde``) trains on D̂'s
label-free points by the PDE residual instead (:func:`ddspec.evaluate.pde.fit_pinn`) and is scored by relL2 per
held-out boundary condition.

A categorical model family (model capability ``categorical``: naive Bayes, one-hot logistic regression, a decision
tree, on data with capability ``categorical``) is fitted by scikit-learn to D̂'s codes (the tree with
``random_state = seed``; :mod:`ddspec.components.categorical.classifiers`), no epochs.

A train kind with capability ``estimator`` (``train: sklearn``) is the model family itself: without
``evaluate.models``, each seed fits it to (x, y) with ``random_state = seed`` (no epochs, no augmentation) and
the fitted estimator is scored like a network; the recorded model is the train spec, so its ``per_model``
key is ``"0:<train kind>"`` (``"0:sklearn"``). ``evaluate.models``, when given, are networks trained as above.

The baselines (``evaluate.baselines``) go through the same protocol with other training sets: ``random``
draws, for each seed, as many real training rows per stratum as D̂ has (a generator seeded with the
seed); ``full`` is the whole real training set, cached (:mod:`ddspec.evaluate.baselines`).

Under torchrun (``ranks``) the (model, seed) runs are split across the ranks and gathered back in that order: each
run depends on its seed alone, so the figures equal one process's. Figures are summarized as mean, std and the raw
values, ordered model-major then seed; a metric's nested
figures (:class:`~ddspec.evaluate.metrics.Scored`) leaf by leaf in the same way, inside the metric's entry. std is the
sample standard deviation (ddof = 1) when there are at least two values, else 0.0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ddspec.components.data.base import Dataset
from ddspec.components.training.fit import Augmenter, fit
from ddspec.errors import RunError, SpecError
from ddspec.evaluate.metrics import Figures, Metric
from ddspec.registry import CORRUPTIONS, METRICS, MODELS, TRAIN
from ddspec.spec.evaluate import primary_metric

if TYPE_CHECKING:
    from ddspec.runtime.distributed import Ranks

CORRUPTION_SEED = 0
PREDICT_BATCH = 1024

#: What is scored: a trained network, or any callable x -> outputs (N x num_outputs), e.g. a fitted estimator.
Model = Callable[[torch.Tensor], torch.Tensor]

#: A training set per seed: ``seed -> (x, y)``.
TrainingSets = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class _Run:
    """The scores of one (model, seed) run."""

    model: int
    metrics: dict[str, float] = field(default_factory=dict)
    corrupted: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Figures] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)


class Protocol:
    """``problem.evaluate`` bound to the data: the models, the metric objects, the augmentation and the
    corrupted test sets, ready to measure any training set."""

    def __init__(self, problem: Any, data: Dataset, device: torch.device | str, progress: bool = True,
                 ranks: Ranks | None = None) -> None:
        self.problem, self.data, self.device, self.progress, self.ranks = problem, data, device, progress, ranks
        self.ev = problem.evaluate
        self.models = resolved_models(problem)
        estimator = _estimator(problem)
        self.estimator = None if estimator is None else TRAIN.build(estimator, data.targets)
        self.metric_specs = self.ev.metric_specs(data.targets.kind)
        self.metrics: list[Metric] = [METRICS.build(spec) for spec in self.metric_specs]
        self.primary_spec = primary_metric(data.targets.kind)
        self.primary: Metric = METRICS.build(self.primary_spec)
        self.augment = _augmenter(problem, data) if self.ev.augment else None
        self.test_sets = {c.kind: _corrupt(c, data) for c in self.ev.corruptions}

    def measure(self, training: TrainingSets, desc: str) -> list[_Run]:
        """Train and score every (model, seed), the training set of each seed from ``training``; under torchrun
        this rank's share of them, then every rank's runs gathered in order."""
        pairs = list(itertools.product(range(len(self.models)), self.ev.seeds))
        if self.ranks is not None:
            ranks, mine = self.ranks, [pairs[i] for i in self.ranks.mine(len(pairs))]
            return ranks.gather_objects(ranks.agree(lambda: self._measure(training, desc, mine), desc),
                                        len(pairs), desc)
        return self._measure(training, desc, pairs)

    def _measure(self, training: TrainingSets, desc: str, pairs: list[tuple[int, int]]) -> list[_Run]:
        from tqdm.auto import tqdm

        runs: list[_Run] = []
        bar = tqdm(pairs, desc=desc, disable=not self.progress)
        for index, seed in bar:
            x, y = training(seed)
            spec = self.models[index]
            if self.estimator is not None:
                model = self.estimator.fit(x, _targets(y, self.data), seed)
            elif "closed_form" in MODELS[spec.kind].capabilities:
                model = _fit_closed_form(spec, x, y, self.data, self.problem)
            elif "categorical" in MODELS[spec.kind].capabilities:
                model = MODELS.build(spec, self.data).fit(x, _targets(y, self.data), seed)
            elif "physics_informed" in MODELS[spec.kind].capabilities:
                from ddspec.evaluate.pde import fit_pinn

                model = fit_pinn(spec, seed, x, self.data, self.ev, self.device)
            else:
                inputs, targets = x.detach().to(self.device, torch.float32), _targets(y, self.data).to(self.device)
                model = _train(spec, seed, inputs, targets, self.data, self.ev, self.augment, self.device)
            runs.append(self._score(index, model))
            value = runs[-1].metrics.get(self.primary_spec.kind, math.nan)
            bar.set_postfix({self.primary_spec.kind: f"{value:.4f}"}, refresh=False)
        bar.close()
        return runs

    def _score(self, index: int, model: Model) -> _Run:
        run = _Run(index)
        outputs = _outputs(model, self.data.x_test, self.device)
        for spec, metric in zip(self.metric_specs, self.metrics):
            if "needs_model" in METRICS[spec.kind].capabilities:
                scored = metric.of_model(model, self.data, self.device)
            else:
                scored = metric.scored(outputs, self.data)
            run.metrics[spec.kind] = float(scored.value)
            run.figures[spec.kind] = scored.figures
            run.details[spec.kind] = scored.details
        for kind, x_test in self.test_sets.items():
            run.corrupted[kind] = float(self.primary(_outputs(model, x_test, self.device), self.data))
        return run

    def summary(self, runs: list[_Run], details: bool = False) -> dict[str, Any]:
        """Stats per metric (with its nested figures' stats) and per corruption over ``runs``; with ``details``,
        also the specs' parameters, the per-run extras of each metric (one list entry per run) and, per
        corruption, the metric measured."""
        out: dict[str, Any] = {}
        for spec in self.metric_specs:
            out[spec.kind] = stats([r.metrics[spec.kind] for r in runs]) | nested_stats([r.figures[spec.kind] for r in runs])
            if details:
                extras = [r.details[spec.kind] for r in runs]
                out[spec.kind] |= _params(spec) | {k: [e[k] for e in extras] for k in extras[0]}
        out["corruptions"] = {
            spec.kind: stats([r.corrupted[spec.kind] for r in runs])
            | (_params(spec) | {"metric": self.primary_spec.kind} if details else {})
            for spec in self.ev.corruptions
        }
        return out

    def ridges(self) -> list[float | None]:
        """Per model, the λ it is fitted with when it is closed form (:func:`ridge`), else None."""
        return [ridge(m, self.problem) if self.estimator is None and "closed_form" in MODELS[m.kind].capabilities
                else None for m in self.models]

    def record(self) -> dict[str, Any]:
        """The protocol as recorded in ``metrics.json``: ``evaluate`` with its metrics and models resolved."""
        return {**self.ev.model_dump(mode="json"), "metrics": [m.model_dump(mode="json") for m in self.metric_specs],
                "models": [m.model_dump(mode="json") for m in self.models]}


def evaluate_distilled(
    x: torch.Tensor, y: torch.Tensor, data: Dataset, problem: Any, device: torch.device | str, progress: bool = True,
    ranks: Ranks | None = None,
) -> dict[str, Any]:
    """Run the protocol of ``problem.evaluate`` on the distilled set (x, y), then on its baselines; return
    the JSON-ready figures: ``{metric: {mean, std, values, <params>}, "corruptions": {kind: {mean, std,
    values, metric, <params>}}, "per_model": {"<i>:<kind>": {...}}, "protocol": {...}, "seeds": [...],
    "std_ddof": 1}`` and, with baselines, ``"baselines": {name: {metric: {mean, std, values}, "corruptions":
    {...}}}``. Under torchrun the runs are split across ``ranks``."""
    from ddspec.evaluate.baselines import measure_baseline

    protocol = Protocol(problem, data, device, progress, ranks)
    runs = protocol.measure(lambda seed: (x, y), "evaluate")
    result = {
        **protocol.summary(runs, details=True),
        "per_model": {f"{i}:{m.kind}": protocol.summary([r for r in runs if r.model == i])
                      for i, m in enumerate(protocol.models)},
        "protocol": protocol.record(),
        "seeds": list(protocol.ev.seeds),
        "std_ddof": 1,
    }
    if protocol.ev.baselines:
        result["baselines"] = {name: measure_baseline(name, protocol) for name in protocol.ev.baselines}
    return result


def resolved_models(problem: Any) -> list[Any]:
    """``evaluate.models``, or when that list is empty ``[problem.train]`` if it is an estimator (see
    :func:`_estimator`), else ``[problem.model]``."""
    estimator = _estimator(problem)
    models = list(problem.evaluate.models) or [problem.model if estimator is None else estimator]
    if models[0] is None:
        raise SpecError.one(
            "EVAL_NO_MODEL", "evaluate.models", "no model to evaluate: evaluate.models is empty and model is unset",
            "set `model`, or list architectures under evaluate.models",
        )
    return models


def _estimator(problem: Any) -> Any | None:
    """``problem.train`` when it is the model family evaluated: its kind has capability ``estimator`` and
    ``evaluate.models`` is empty; else None."""
    return problem.train if not problem.evaluate.models and TRAIN.has(problem.train, "estimator") else None


def _targets(y: torch.Tensor, data: Dataset) -> torch.Tensor:
    """The distilled targets as the loss takes them: for classes, int64 class indices (N) or float
    probability rows (N x K, non-negative, summing to 1); for real targets, float N or N x T values."""
    outputs = data.targets.num_outputs
    if data.num_classes == 0:
        if y.is_floating_point() and y.dim() in (1, 2) and y.reshape(len(y), -1).shape[1] == outputs:
            return y.detach().float()
        expected = f"real values (N or N x {outputs})"
    else:
        if y.dim() == 1 and not y.is_floating_point():
            return y.long()
        if y.dim() == 2 and y.is_floating_point() and y.shape[1] == outputs:
            y = y.detach().float()
            if bool((y >= 0).all()) and torch.allclose(y.sum(1), torch.ones(len(y), device=y.device), atol=1e-3):
                return y
        expected = f"int64 class indices (N) or soft-label probabilities (N x {outputs})"
    raise RunError.one(
        "EVAL_LABELS", "synthetic",
        f"distilled labels must be {expected}; got {y.dtype} {tuple(y.shape)}"
        + (" whose rows are not probability vectors" if y.dim() == 2 and data.num_classes else ""),
        "store y as class indices, or as softmax(logits) for learned labels" if data.num_classes
        else "store y as float targets with one column per output",
    )


def _augmenter(problem: Any, data: Dataset) -> Augmenter:
    """DSA augmentation with the ops of ``optimize.augmentation``, for the data's spatial dimension; always
    on (``evaluate.augment`` is the switch for evaluation, ``augmentation.enabled`` the one for distillation)."""
    spec = problem.optimize.augmentation_ops()
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


def ridge(spec: Any, problem: Any) -> float:
    """The λ a closed-form model is fitted with: the inner procedure's ridge (``train.lam_synthetic``) when it
    declares one, else the model's own λ."""
    lam = problem.train.synthetic_ridge()
    return spec.lam if lam is None else lam


def _fit_closed_form(spec: Any, x: torch.Tensor, y: torch.Tensor, data: Dataset, problem: Any) -> nn.Module:
    """A closed-form model (kernel ridge) fitted exactly to (x, y) in float64 with :func:`ridge`'s λ.
    Deterministic: every seed gives the same model."""
    return MODELS.build(spec, data.input_shape, data.targets.num_outputs).fit(x, y, ridge(spec, problem))


def _train(
    spec: Any, seed: int, x: torch.Tensor, y: torch.Tensor, data: Dataset, ev: Any,
    augment: Augmenter | None, device: torch.device | str,
) -> nn.Module:
    """A model of ``spec`` initialised from ``seed`` and trained by :func:`~ddspec.components.training.fit.fit`
    with the protocol's recipe and the targets' loss, its batches shuffled by a generator seeded with ``seed``;
    the final model (eval mode)."""
    torch.manual_seed(seed)
    model = MODELS.build(spec, data.input_shape, data.targets.num_outputs).to(device)
    return fit(model, x, y, ev, torch.Generator().manual_seed(seed), augment, loss=data.targets.loss)


@torch.no_grad()
def _outputs(model: Model, x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """model(x) (N x num_outputs) on the CPU, computed in chunks of PREDICT_BATCH rows."""
    return torch.cat([model(chunk.to(device)).cpu() for chunk in x.split(PREDICT_BATCH)])


def stats(values: list[float]) -> dict[str, Any]:
    """{mean, std (sample, ddof=1; 0.0 for one value), values}."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "values": list(values)}


def nested_stats(figures: list[Figures]) -> dict[str, Any]:
    """The runs' nested figures (same keys in every run) with every float leaf replaced by :func:`stats` of
    its values over the runs."""
    if not figures:
        return {}
    return {key: nested_stats([f[key] for f in figures]) if isinstance(value, dict)
            else stats([float(f[key]) for f in figures]) for key, value in figures[0].items()}


def _params(spec: Any) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude={"kind"})
