"""Well-posedness rules. Each rule reads an :class:`Analysis` and yields findings (errors block
compilation; notes are shown by ``explain``). :func:`check` runs all rules and reports every
problem at once. Register a new rule with :func:`rule`."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable

from ddspec.analysis.facts import Analysis
from ddspec.errors import Finding
from ddspec.registry import DATA, DISTANCES

Rule = Callable[[Analysis], Iterable[Finding]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def check(analysis: Analysis) -> list[Finding]:
    """All findings of all rules, errors first."""
    found = [f for r in RULES for f in r(analysis)]
    return sorted(found, key=lambda f: f.severity != "error")


#: The sections whose kinds check themselves (:meth:`ddspec.spec.base.SpecModel.findings`).
SECTIONS = ("data", "synthetic", "model", "train", "scenarios", "task", "distance", "risk", "optimize", "evaluate",
            "runtime")


@rule
def kinds_check_themselves(a: Analysis) -> Iterable[Finding]:
    """Each section's own findings: the knowledge of one kind lives with that kind, not here."""
    for name in SECTIONS:
        section = getattr(a.problem, name)
        if section is not None:
            yield from section.findings(a)


@rule
def synthetic_smaller_than_real(a: Analysis) -> Iterable[Finding]:
    if a.n_synthetic >= a.data.n_train:
        yield Finding(
            "SYNTHETIC_NOT_SMALLER", "synthetic",
            f"the synthetic set ({a.n_synthetic}) is not smaller than the real training set ({a.data.n_train})",
            "distillation needs fewer synthetic samples than real ones: lower synthetic.per_class or synthetic.total",
        )


@rule
def classes_have_enough_samples(a: Analysis) -> Iterable[Finding]:
    empty = [c for c, n in enumerate(a.data.class_counts) if n == 0]
    if empty:
        yield Finding("EMPTY_CLASS", "data", f"classes {empty} have no training samples",
                      "relabel the data so that labels are 0..K-1 with every class present")
    over = [(c, want, have) for c, (want, have) in enumerate(zip(a.synthetic_counts, a.data.class_counts))
            if 0 < have < want]
    if over:
        c, want, have = min(over, key=lambda t: t[2])
        field = "synthetic.per_class" if a.problem.synthetic.per_class is not None else "synthetic.total"
        yield Finding(
            "CLASS_TOO_SMALL", field,
            f"{want} synthetic samples asked for class {c}, which has only {have} real training samples",
            f"use at most {min(h for _, _, h in over)} per class",
        )


@rule
def models_accept_the_data(a: Analysis) -> Iterable[Finding]:
    shape = a.data.input_shape
    places = [("model", a.problem.model)]
    places += [(f"scenarios.models.{i}", m) for i, m in enumerate(a.problem.scenarios.models)]
    places += [(f"evaluate.models.{i}", m) for i, m in enumerate(a.problem.evaluate.models)]
    for path, model in places:
        reason = model.check_input(shape) if model is not None else None
        if reason:
            yield Finding(
                "MODEL_INPUT_MISMATCH", path, f"{reason} (data `{a.problem.data.kind}`)",
                "pick a model for this input shape (convnet: C×H×W, convnet1d: C×L, mlp/linear: any) or lower its depth",
            )


@rule
def objective_is_declared(a: Analysis) -> Iterable[Finding]:
    p = a.problem
    if a.has("optimize:selection") or a.has("optimize:exact"):  # selection / W_S = W carry their objective
        return
    if p.distance is None and p.task is None:
        yield Finding(
            "NO_OBJECTIVE", "distance", "the spec declares neither a task nor a distance, so there is nothing to optimize",
            f"add `distance: {{kind: feature_mean}}` (or one of: {', '.join(DISTANCES.kinds())}), "
            "or use `optimize: {kind: select}` for a coreset baseline",
        )
    elif p.distance is not None and a.has("distance:surrogate") and p.task is None:
        yield Finding(
            "SURROGATE_OBJECTIVE", "distance",
            f"`{p.distance.kind}` is a surrogate; it stands for: {type(p.distance).approximates}",
            "nothing to fix; declare `task` to make the exact objective explicit",
            severity="note",
        )


@rule
def labels_enter_the_objective(a: Analysis) -> Iterable[Finding]:
    p = a.problem
    if not p.synthetic.learn_labels:
        return
    if a.has("optimize:selection"):
        yield Finding("LABELS_NOT_LEARNABLE", "synthetic.learn_labels", "coreset selection keeps the real labels",
                      "set synthetic.learn_labels: false")
    elif p.distance is not None and a.has("distance:surrogate") and not a.has("distance:needs_network_training"):
        yield Finding(
            "LABELS_NOT_LEARNABLE", "synthetic.learn_labels",
            f"`{p.distance.kind}` compares class-wise embeddings, so labels receive no gradient",
            "set synthetic.learn_labels: false, or use distance: {kind: gradient_match}",
        )


@rule
def task_and_distance_agree(a: Analysis) -> Iterable[Finding]:
    p = a.problem
    task, distance = a.kind("task"), a.kind("distance")
    if distance == "kl" and task != "predictions":
        yield Finding("DISTANCE_NEEDS_TASK", "distance", "`kl` compares predictive distributions, which only "
                      f"task `predictions` produces (task is {task or 'unset'})", "set task: {kind: predictions}")
    if task == "predictions" and distance not in (None, "kl"):
        yield Finding("TASK_DISTANCE_MISMATCH", "distance", f"task `predictions` is compared with `kl`, not `{distance}`",
                      "set distance: {kind: kl}, or remove `distance`")
    if distance == "trajectory" and p.distance.max_start_epoch + p.distance.expert_span > p.distance.expert_epochs:
        d = p.distance
        yield Finding(
            "TRAJECTORY_SPAN", "distance.max_start_epoch",
            f"a student starting at epoch {d.max_start_epoch} needs expert epoch {d.max_start_epoch + d.expert_span}, "
            f"but experts train {d.expert_epochs} epochs",
            f"set distance.max_start_epoch <= {max(d.expert_epochs - d.expert_span, 0)} or raise distance.expert_epochs",
        )


@rule
def hypergradient_options_fit(a: Analysis) -> Iterable[Finding]:
    p = a.problem
    h = getattr(p.optimize, "hypergradient", None)
    learn_lr = getattr(p.train, "learn_lr", False)
    if h is not None and h.kind == "unrolled":
        if h.checkpoint_every is not None and h.engine == "higher":
            yield Finding("CHECKPOINT_NEEDS_TORCH_FUNC", "optimize.hypergradient.checkpoint_every",
                          "gradient checkpointing is implemented for the torch_func engine only",
                          "set optimize.hypergradient.engine: torch_func")
        steps = p.train.steps
        if h.truncate is not None and steps is not None and h.truncate >= steps:
            yield Finding("TRUNCATE_NOT_BELOW_STEPS", "optimize.hypergradient.truncate",
                          f"truncate {h.truncate} >= train.steps {steps} tracks every step (no truncation)",
                          f"use truncate < {steps}, or remove truncate")
    if h is not None and h.kind in ("implicit", "ridge_head"):
        why = {"implicit": "the implicit hypergradient differentiates the trained solution, which does not depend on "
                           "the inner lrs",
               "ridge_head": "the ridge-head hypergradient holds the trained body constant, so the inner lrs receive "
                             "no gradient"}[h.kind]
        if learn_lr:
            yield Finding("LR_NOT_LEARNABLE", "train.learn_lr", why, "set train.learn_lr: false, or use "
                          "optimize.hypergradient: {kind: unrolled}")
        if a.kind("distance") == "trajectory":
            yield Finding("TRAJECTORY_NEEDS_UNROLL", "optimize.hypergradient", "trajectory matching compares the "
                          "parameters after N differentiable steps", "use optimize.hypergradient: {kind: unrolled}")
    if learn_lr and a.has("distance:surrogate") and a.kind("distance") != "trajectory":
        yield Finding("LR_NOT_LEARNABLE", "train.learn_lr", f"`{p.distance.kind}` does not differentiate through "
                      "the inner steps, so their lrs receive no gradient", "set train.learn_lr: false")


@rule
def model_pool_fits(a: Analysis) -> Iterable[Finding]:
    """``scenarios.pool`` warm-starts the bilevel backend's inner training from models that keep training."""
    p = a.problem
    pool = p.scenarios.pool
    if pool is None:
        return
    if a.has("distance:surrogate") or p.task is None or not a.has("model:differentiable"):
        why = (f"`{p.distance.kind}` does not train scenario models on D̂ from θ_0" if a.has("distance:surrogate")
               else "only a task objective (test_error / predictions) through differentiable training uses it")
        yield Finding("POOL_UNUSED", "scenarios.pool", f"the model pool warm-starts the bilevel inner training; {why}",
                      "remove scenarios.pool (or declare task: test_error with a differentiable model)")
        return
    if p.scenarios.inits > pool.size:
        yield Finding("POOL_TOO_SMALL", "scenarios.pool.size",
                      f"each iteration unrolls scenarios.inits = {p.scenarios.inits} distinct pool models, but the pool "
                      f"holds {pool.size}", f"set scenarios.pool.size >= {p.scenarios.inits}")
    steps = getattr(p.train, "steps", None)
    if steps is not None and pool.max_steps <= steps:
        yield Finding("POOL_LIFETIME_TOO_SHORT", "scenarios.pool.max_steps",
                      f"max_steps {pool.max_steps} <= train.steps {steps}: every pool model would be re-initialised "
                      "after each use, which is the same as no pool", f"set scenarios.pool.max_steps > {steps} "
                      "(e.g. the evaluation's number of training steps), or remove scenarios.pool")


@rule
def kernel_ridge_is_distillable(a: Analysis) -> Iterable[Finding]:
    """Where the closed-form theory (Chen, Huang & Weng 2024) says no exact synthetic set exists."""
    p = a.problem
    if a.kind("model") != "kernel_ridge":
        return
    d = math.prod(a.data.input_shape)
    features = p.model.features
    k = a.data.num_classes
    if features.kind == "rff" and features.features > d:
        yield Finding(
            "KRR_NOT_SURJECTIVE", "model.features.features",
            f"random Fourier features with p = {features.features} > d = {d}: x ↦ Ax + b spans only a "
            f"{d}-dimensional subspace of R^p, so the features cannot reach the targets an exact set needs",
            f"use features <= {d}, or the linear feature map",
        )
    widths = [d, *getattr(features, "widths", [])]
    if features.kind == "leaky_relu_mlp" and any(b > a_ for a_, b in itertools.pairwise(widths)):
        yield Finding(
            "KRR_NOT_SURJECTIVE", "model.features.widths",
            f"widths {widths[1:]} after d = {d} increase somewhere: a layer R^a → R^b with b > a is not onto, "
            "so some feature vectors have no input (one point per class is then not enough in general)",
            f"use non-increasing widths starting at most at {d}",
        )
    if not a.has("optimize:exact"):
        return
    if a.n_synthetic < k:
        yield Finding(
            "KRR_TOO_FEW_POINTS", "synthetic.total",
            f"{a.n_synthetic} synthetic points for {k} classes: W_S = Y_S φ(X_S)⁺ has rank ≤ m < k, so it "
            "cannot equal the full-data W in general", f"use at least {k} points (one per class)",
        )
    if p.optimize.label_only and a.n_synthetic < features.dim(d):
        yield Finding(
            "KRR_LABEL_ONLY_TOO_FEW", "optimize.label_only",
            f"label-only distillation solves Y_S φ_λ(X_S)⁺ = W with X_S fixed, which needs m >= p features of "
            f"rank p; m = {a.n_synthetic} < p = {features.dim(d)}",
            f"use at least {features.dim(d)} synthetic points, or set optimize.label_only: false",
        )


@rule
def group_metrics_have_groups(a: Analysis) -> Iterable[Finding]:
    if any(m.kind == "worst_group" for m in a.problem.evaluate.metrics) and not a.has("data:groups"):
        kinds = [k for k in DATA.kinds() if "groups" in DATA[k].capabilities]
        yield Finding(
            "METRIC_NEEDS_GROUPS", "evaluate.metrics",
            f"`worst_group` needs group labels, which data `{a.problem.data.kind}` does not provide",
            f"use a data kind with groups ({', '.join(kinds)}), or drop worst_group from evaluate.metrics",
        )


@rule
def risk_groups_are_available(a: Analysis) -> Iterable[Finding]:
    """Risk ``group_cvar``: attribute groups need data with group labels; k-means needs k ≤ every class's size."""
    risk = a.problem.risk
    if risk is None or risk.kind != "group_cvar":
        return
    groups = risk.groups
    if groups.kind == "attribute" and not a.has("data:groups"):
        kinds = [k for k in DATA.kinds() if "groups" in DATA[k].capabilities]
        yield Finding(
            "RISK_NEEDS_GROUPS", "risk.groups",
            f"risk.groups `attribute` needs group labels, which data `{a.problem.data.kind}` does not provide",
            f"use a data kind with groups ({', '.join(kinds)}), or risk.groups: {{kind: nearest_synthetic}} "
            "or {kind: kmeans}",
        )
    smallest = min((n for n in a.data.class_counts if n > 0), default=0)
    if groups.kind == "kmeans" and groups.k > smallest:
        yield Finding(
            "KMEANS_TOO_MANY_CLUSTERS", "risk.groups.k",
            f"{groups.k} k-means clusters per class, but the smallest class has {smallest} training samples",
            f"use risk.groups.k <= {smallest}",
        )
