"""Well-posedness rules. Each rule reads an :class:`Analysis` and yields findings (errors block
compilation; notes are shown by ``explain``). :func:`check` runs all rules and reports every
problem at once. Register a new rule with :func:`rule`."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ddspec.analysis.facts import Analysis
from ddspec.errors import Finding
from ddspec.registry import DISTANCES

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
    elif a.has("distance:embedding"):
        yield Finding(
            "LABELS_NOT_LEARNABLE", "synthetic.learn_labels",
            f"`{p.distance.kind}` compares class-wise embeddings, so labels receive no gradient",
            "set synthetic.learn_labels: false, or use distance: {kind: gradient_match}",
        )


@rule
def gradient_needs_differentiable_parts(a: Analysis) -> Iterable[Finding]:
    """A gradient optimizer differentiates the objective through every part; a kind with the capability
    ``not_differentiable`` (on any axis: e.g. a scikit-learn estimator as ``train``) has no gradient."""
    if not a.has("optimize:gradient"):
        return
    for axis in sorted(fact.partition(":")[0] for fact in a.facts if fact.endswith(":not_differentiable")):
        yield Finding(
            "NOT_DIFFERENTIABLE", axis, f"`{a.kind(axis)}` has no gradient: a gradient optimizer cannot "
            "differentiate through it", "use optimize: {kind: zero_order} (Gaussian smoothing: it needs objective "
            "values only)",
        )
