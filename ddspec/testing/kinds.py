"""``check_kind``: the generic checks every kind must pass, whatever its axis — scikit-learn's ``check_estimator``
for ddspec kinds, usable on a plugin's class.

Checks: the class is registered; it has a docstring (and its entry a summary); its builder imports; it is in the
JSON Schema (``ddspec schema``) and, in its axis's section, the generated reference with all its fields; it
round-trips through ``model_dump`` and JSON; and what its builder builds behaves as its capabilities say, run on
small random inputs (:data:`BEHAVIOUR`):

- a ``surrogate`` distance names what it approximates; an ``embedding`` distance, called on random real and
  synthetic embeddings (a ``needs_network_training`` one: on random per-layer gradients), gives a finite scalar
  whose gradient reaches the synthetic side (finite, not zero);
- a metric scores random outputs of each of its targets (``targets:classes``, ``targets:real``; a ``needs_model``
  metric: a random linear model) on a small random dataset: a finite value, in [0, 1] for a ``fraction``;
- a risk's ``over_scenarios`` of random scenario losses is a finite scalar whose weights (its gradient) are finite;
- a ``targets_loss`` task gives finite per-sample losses, differentiable in the outputs; an ``estimator`` train
  kind fits a small random dataset and gives finite outputs;
- a ``differentiable`` model builds an ``nn.Module`` with the parameter count its ``cost`` states whose outputs
  have a gradient with respect to the inputs;
- a data kind without required fields describes (without loading) what its builder loads, with test inputs of
  the training inputs' shape, one target per input, and targets of the width it states.

Distance and task builders take ``(spec, ctx)``: here ``ctx`` is a :class:`~ddspec.runtime.context.RunContext`
holding the small random dataset, without a problem (``ctx.problem`` is None). Kinds whose built object needs a
whole run (trajectory matching's experts, a teacher, a PDE's fields) are built by their backends: check them with
:func:`~ddspec.testing.run_smoke`.
"""

from __future__ import annotations

import json
import re
import tempfile
import typing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from ddspec.testing.errors import KindCheckFailed

#: The reference section that lists a nested axis's kinds (any other axis: the section named like it).
SECTION = {"metric": "evaluate", "corruption": "evaluate", "hypergradient": "optimize", "groups": "risk",
           "features": "model", "regularizer": "train", "pde_problem": "data", "survival_analysis": "task"}
#: Per-sample input shapes tried, in order, for a model kind; the first one it accepts is used.
SHAPES = ((1, 8, 8), (3, 8, 8), (1, 32), (12,))
#: The checks, in the order they run.
CHECKS = ("docstring", "builder", "schema", "reference", "round_trip", "capabilities")


def check_kind(kind_class: type, axis: str | None = None, checks: Iterable[str] = CHECKS) -> None:
    """Run the generic ``checks`` (default: all of :data:`CHECKS`) on the registered kind ``kind_class`` (on
    ``axis``; None: the axis it is registered on). Fails with :class:`KindCheckFailed` listing every failed check
    and what is wrong."""
    from ddspec.spec.problem import problem_model

    problem_model()  # loads the plugins, so that their kinds are registered
    entry, axis = _entry(kind_class, axis)
    failures: list[tuple[str, str]] = []
    for name in checks:
        if name not in CHECKS:
            raise ValueError(f"unknown check {name!r}; known: {', '.join(CHECKS)}")
        try:
            problem = CHECKERS[name](entry, axis)
        except Exception as exc:  # noqa: BLE001  (a check that crashes has found a problem too: report it)
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            failures.append((name, problem))
    if failures:
        raise KindCheckFailed(f"{axis} kind `{entry.kind}` ({kind_class.__module__}.{kind_class.__qualname__}) fails "
                              f"{len(failures)} check(s):\n" + "\n".join(f"  - {c}: {p}" for c, p in failures),
                              failures)


def _entry(kind_class: type, axis: str | None) -> tuple[Any, str]:
    from ddspec.registry import REGISTRIES

    axes = [axis] if axis is not None else list(REGISTRIES)
    for name in axes:
        if name not in REGISTRIES:
            raise ValueError(f"unknown axis {name!r}; known: {', '.join(REGISTRIES)}")
        found = [e for e in REGISTRIES[name].entries() if e.spec is kind_class]
        if found:
            return found[0], name
    where = f"on axis `{axis}`" if axis else "on any axis"
    raise KindCheckFailed(f"{kind_class.__qualname__} is not registered {where}: register it with "
                          "ddspec.register(axis, cls, builder=..., capabilities=(...))", [("registered", where)])


def _docstring(entry: Any, axis: str) -> str:
    if not (entry.spec.__dict__.get("__doc__") or "").strip():
        return f"{entry.spec.__name__} has no docstring of its own (state the math it declares)"
    return "" if entry.summary.strip() else "its registry entry has no summary"


def _builder(entry: Any, axis: str) -> str:
    if entry.builder is None:
        return ""  # its backend implements it
    return "" if callable(entry.load_builder()) else f"the builder {entry.builder!r} is not callable"


def _schema_check(entry: Any, axis: str) -> str:
    """A discriminated union of ``ddspec schema`` maps the tag to a definition with this class's fields (the only
    kind of a registry: a definition with that ``kind``)."""
    from ddspec.registry import REGISTRIES, signature

    schema = _schema(signature())
    fields = set(entry.spec.model_json_schema()["properties"])
    hits = _tagged_defs(schema, schema["$defs"]).get(entry.kind, [])
    if len(REGISTRIES[axis].kinds()) == 1:
        hits += [d for d in schema["$defs"].values() if d.get("properties", {}).get("kind", {}).get("const") == entry.kind]
    if any(set(d["properties"]) == fields and d["properties"]["kind"].get("const") == entry.kind for d in hits):
        return ""
    return f"`ddspec schema` has no definition of kind `{entry.kind}` with the fields {sorted(fields)}"


def _reference_check(entry: Any, axis: str) -> str:
    """The generated reference lists the kind, with a table of all its fields, in its section."""
    from ddspec.registry import signature

    text = _reference(signature())
    section = SECTION.get(axis, axis)
    match = re.search(rf"^## `{section}`\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    if match is None:
        return (f"the generated reference has no section `## {section}` for axis `{axis}` (a nested axis is listed in "
                "its enclosing section: add it to ddspec.testing.kinds.SECTION)")
    block = match.group(1)
    for heading in re.finditer(rf"^#+ `kind: {re.escape(entry.kind)}`.*$", block, flags=re.MULTILINE):
        table = block[heading.end():].split("\n#", 1)[0]
        if all(f"| `{name}` |" in table for name in entry.spec.model_fields):
            return ""
    return f"the generated reference (python -m ddspec.spec.reference) has no `kind: {entry.kind}` with all its fields"


def _round_trip(entry: Any, axis: str) -> str:
    spec = instance(entry.spec)
    if spec.kind != entry.kind:
        return f"an instance has kind {spec.kind!r}, not {entry.kind!r}"
    if entry.spec.model_validate(spec.model_dump()) != spec:
        return "model_validate(model_dump()) gives another value"
    if entry.spec.model_validate(json.loads(spec.model_dump_json())) != spec:
        return "validating its JSON dump gives another value"
    return ""


def _capabilities(entry: Any, axis: str) -> str:
    """Every check of :data:`BEHAVIOUR` that applies to the kind; one that raises reports the exception."""
    problems = []
    for (a, capability), check in BEHAVIOUR.items():
        if a != axis or (capability is not None and capability not in entry.capabilities):
            continue
        try:
            found = check(entry)
        except Exception as exc:  # noqa: BLE001  (a builder or a built object that crashes has a problem too)
            found = f"{check.__name__.strip('_').replace('_', ' ')}: {type(exc).__name__}: {exc}"
        if found:
            problems.append(found)
    return "; ".join(problems)


def _names_what_it_approximates(entry: Any) -> str:
    from ddspec.spec.distance import DistanceBase

    if issubclass(entry.spec, DistanceBase) and entry.spec.approximates.strip():
        return ""
    return ("a `surrogate` distance names the exact objective it stands for in the ClassVar `approximates` (of "
            "ddspec.spec.distance.DistanceBase, which it subclasses, e.g. through MatchingDistance)")


def _embedding_distance(entry: Any) -> str:
    """d(real embeddings, synthetic embeddings): a finite scalar whose gradient reaches the synthetic side."""
    import torch

    gen = torch.Generator().manual_seed(0)
    real = torch.randn(8, 6, generator=gen)
    syn = torch.randn(4, 6, generator=gen).requires_grad_(True)
    with _context() as ctx:
        distance = _build_distance(entry, ctx)
        return _reaches(distance(real, syn), [syn], "d(real embeddings (8 x 6), synthetic embeddings (4 x 6))")


def _gradient_distance(entry: Any) -> str:
    """d(real per-layer gradients, synthetic per-layer gradients): a finite scalar whose gradient reaches the
    synthetic gradients."""
    import torch

    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 6), (5,), (3, 5)]
    real = [torch.randn(s, generator=gen) for s in shapes]
    syn = [torch.randn(s, generator=gen).requires_grad_(True) for s in shapes]
    with _context() as ctx:
        distance = _build_distance(entry, ctx)
        return _reaches(distance(real, syn), syn, f"d(real gradients, synthetic gradients) of shapes {shapes}")


def _build_distance(entry: Any, ctx: Any) -> Any:
    from ddspec.registry import DISTANCES

    return DISTANCES.build(instance(entry.spec), ctx)


def _reaches(value: Any, inputs: list[Any], call: str) -> str:
    """"" when ``value`` is a finite scalar tensor with a finite, non-zero gradient with respect to ``inputs`` (some
    of which it may ignore, e.g. gradient matching's biases)."""
    import torch

    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        return f"{call} gives {type(value).__name__} {getattr(value, 'shape', '')}, not a scalar tensor"
    if not bool(torch.isfinite(value).all()):
        return f"{call} is not finite ({float(value)})"
    if not value.requires_grad:
        return f"{call} carries no gradient to the synthetic side (it does not depend on it, or is detached)"
    grads = [g for g in torch.autograd.grad(value.sum(), inputs, allow_unused=True) if g is not None]
    if not grads or not all(bool(torch.isfinite(g).all()) for g in grads):
        return f"the gradient of {call} with respect to the synthetic side is missing or not finite"
    if all(float(g.abs().sum()) == 0 for g in grads):
        return f"the gradient of {call} with respect to the synthetic side is zero"
    return ""


def _scores_random_outputs(entry: Any) -> str:
    """For each targets the metric declares: its figure of random outputs (or of a random linear model, for a
    ``needs_model`` metric) on a small random dataset is finite, and in [0, 1] for a ``fraction``."""
    import math

    import torch

    from ddspec.registry import METRICS

    problems = []
    spec = instance(entry.spec).shrunk()
    for targets in ("classes", "real"):
        if f"targets:{targets}" not in entry.capabilities:
            continue
        data = random_dataset(targets)
        metric = METRICS.build(spec)
        k = data.targets.num_outputs
        gen = torch.Generator().manual_seed(1)
        if "needs_model" in entry.capabilities:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(data.input_shape), k))
            scored = metric.of_model(model, data, "cpu")
        else:
            scored = metric.scored(torch.randn(len(data.x_test), k, generator=gen), data)
        value = float(scored.value)
        leaves = [value, *_leaves(scored.figures)]
        if not all(math.isfinite(v) for v in leaves):
            problems.append(f"on random {targets} outputs its value (or a nested figure) is not finite: {leaves[:5]}")
        elif "fraction" in entry.capabilities and not all(0.0 <= v <= 1.0 for v in leaves):
            problems.append(f"capability `fraction`, but on random {targets} outputs it gives {leaves[:5]}")
    return "; ".join(problems)


def _leaves(figures: Any) -> list[float]:
    if isinstance(figures, dict):
        return [v for f in figures.values() for v in _leaves(f)]
    return [float(figures)]


def _weighs_scenarios(entry: Any) -> str:
    """``over_scenarios`` of random per-scenario losses: a finite scalar with finite weights ∂R/∂ℓ."""
    import torch

    from ddspec.registry import RISKS

    risk = RISKS.build(instance(entry.spec))
    losses = torch.tensor([0.3, 1.2, 0.7, 2.0, 0.1, 0.9], dtype=torch.float64, requires_grad=True)
    value = risk.over_scenarios(losses)
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not bool(torch.isfinite(value).all()):
        return f"over_scenarios of 6 scenario losses gives {value!r}, not a finite scalar tensor"
    if not value.requires_grad:
        return "over_scenarios carries no gradient to the scenario losses (the backends take it as their weights)"
    (weights,) = torch.autograd.grad(value.sum(), losses, allow_unused=True)
    if weights is None or not bool(torch.isfinite(weights).all()):
        return f"the scenario weights ∂R/∂ℓ of over_scenarios are missing or not finite: {weights}"
    return ""


def _per_sample_losses(entry: Any) -> str:
    """A ``targets_loss`` task: per-sample losses of random outputs on a real batch, finite, one per sample,
    differentiable in the outputs."""
    import torch

    from ddspec.registry import TASKS

    problems = []
    for targets in ("classes", "real"):
        data = random_dataset(targets)
        with _context(data) as ctx:
            task = TASKS.build(instance(entry.spec), ctx)
        x, y = data.x_train[:10], data.y_train[:10]
        outputs = torch.randn(10, data.targets.num_outputs, generator=torch.Generator().manual_seed(2),
                              requires_grad=True)
        losses = task.per_sample(x, y)(outputs)
        if tuple(losses.shape) != (10,) or not bool(torch.isfinite(losses).all()):
            problems.append(f"per_sample on 10 {targets} rows gives {tuple(losses.shape)} values "
                            f"(finite: {bool(torch.isfinite(losses).all())}), not 10 finite losses")
            continue
        problems.append(_reaches(losses.sum(), [outputs], f"the sum of its per-sample losses ({targets})")
                        .replace("synthetic side", "outputs"))
    return "; ".join(p for p in problems if p)


def _fits_an_estimator(entry: Any) -> str:
    """An ``estimator`` train kind fits a small random dataset of the targets it takes: finite outputs, one row
    of the targets' width per test input."""
    import torch

    from ddspec.registry import TRAIN

    problems = []
    spec = instance(entry.spec)
    for targets in ("classes", "real"):
        data = random_dataset(targets)
        if spec.estimator_class(targets) is None:
            continue
        model = TRAIN.build(spec, data.targets).fit(data.x_train, data.y_train, 0)
        out = model(data.x_test)
        k = data.targets.num_outputs
        if tuple(out.shape) != (len(data.x_test), k) or not bool(torch.isfinite(out).all()):
            problems.append(f"fitted on {targets} targets it gives outputs of shape {tuple(out.shape)} (finite: "
                            f"{bool(torch.isfinite(out).all())}), not {len(data.x_test)} x {k} finite values")
    return "; ".join(problems)


def _builds_a_differentiable_module(entry: Any) -> str:
    """For the first small input shape the kind accepts: an nn.Module with ``cost``'s parameter count, giving
    finite (N, classes) outputs whose gradient reaches the inputs."""
    import torch

    from ddspec.registry import MODELS

    spec = instance(entry.spec)
    shape = next((s for s in SHAPES if spec.check_input(s) is None), None)
    if shape is None:
        return f"it accepts none of the input shapes {SHAPES}"
    classes = 3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MODELS.build(spec, shape, classes)
    if not isinstance(model, torch.nn.Module):
        return f"its builder returns {type(model).__name__}, not an nn.Module"
    params, declared = sum(p.numel() for p in model.parameters()), spec.cost(shape, classes)[0]
    problems = [] if params == declared else [f"cost() states {declared} parameters, the module has {params}"]
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = model(x)
    if tuple(out.shape) != (4, classes):
        return "; ".join([*problems, f"outputs of shape {tuple(out.shape)} for 4 inputs and {classes} classes"])
    if not bool(torch.isfinite(out).all()):
        problems.append("non-finite outputs")
    elif not out.requires_grad:
        problems.append("capability `differentiable`, but its outputs carry no gradient")
    else:
        (grad,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
        if grad is None or not bool(torch.isfinite(grad).all()) or float(grad.abs().sum()) == 0:
            problems.append("capability `differentiable`, but the gradient of its outputs with respect to the "
                            "inputs is missing, zero or not finite")
    return "; ".join(problems)


def _describes_what_it_loads(entry: Any) -> str:
    """``describe()`` (no tensors) states the shapes and per-class counts (or target width) that loading gives;
    test inputs have the training inputs' per-sample shape and every input one target."""
    import torch

    from ddspec.registry import DATA

    if any(f.is_required() for f in entry.spec.model_fields.values()):
        return ""  # it names files: checked when a spec uses it
    spec = entry.spec()
    info, data = spec.describe(), DATA.build(spec)
    facts = {
        "name": (data.name, info.name), "input shape": (data.input_shape, info.input_shape),
        "test size": (len(data.x_test), info.n_test), "train size": (len(data.x_train), info.n_train),
        "classes": (data.num_classes, info.num_classes),
    }
    shapes = {
        "test inputs": (tuple(data.x_test.shape[1:]), tuple(data.x_train.shape[1:]), "the training inputs' shape"),
        "training targets": (len(data.y_train), len(data.x_train), "one per training input"),
        "test targets": (len(data.y_test), len(data.x_test), "one per test input"),
    }
    if info.targets == "classes":
        counts = tuple(torch.bincount(data.y_train, minlength=info.num_classes).tolist())
        facts["class counts"] = (counts, info.class_counts)
    elif info.targets == "real":
        facts["target width"] = (data.targets.dim, info.target_dim)
        width = 1 if data.y_train.dim() == 1 else int(data.y_train.shape[1])
        shapes["y_train's width"] = (width, info.target_dim, "the target width describe() says")
    bad = [f"{k}: loads {got}, describe() says {said}" for k, (got, said) in facts.items() if got != said]
    bad += [f"{k}: {got}, not {want} ({what})" for k, (got, want, what) in shapes.items() if got != want]
    return "; ".join(bad)


def random_dataset(targets: str) -> Any:
    """A small random :class:`~ddspec.components.data.base.Dataset` for the behaviour checks: 60 training and 60
    test inputs of shape 1 x 8 x 8 in [0, 1] (seeded), with 3 classes and 4 subgroups (``targets`` "classes"),
    or one real target per input ("real")."""
    import torch

    from ddspec.components.data.base import Dataset

    gen = torch.Generator().manual_seed(0)
    x_train, x_test = torch.rand(60, 1, 8, 8, generator=gen), torch.rand(60, 1, 8, 8, generator=gen)
    groups_train, groups_test = torch.randint(4, (60,), generator=gen), torch.randint(4, (60,), generator=gen)
    if targets == "classes":
        y_train, y_test = torch.arange(60) % 3, torch.randperm(60, generator=gen) % 3
        return Dataset("random", x_train, y_train, x_test, y_test, 3, groups_train, groups_test)
    y_train, y_test = torch.randn(60, generator=gen), torch.randn(60, generator=gen)
    return Dataset("random", x_train, y_train, x_test, y_test, 0)


@contextmanager
def _context(data: Any = None) -> Iterator[Any]:
    """A RunContext without a problem, holding ``data`` (default: the random class dataset), on the CPU, its run
    folder a temporary one."""
    import torch

    from ddspec.runtime.context import RunContext

    with tempfile.TemporaryDirectory() as out:
        yield RunContext(None, None, data if data is not None else random_dataset("classes"), torch.device("cpu"),
                         Path(out))


#: (axis, capability or None for every kind of the axis) → a check of what the kind does; "" when it passes.
BEHAVIOUR: dict[tuple[str, str | None], Callable[[Any], str]] = {
    ("distance", "surrogate"): _names_what_it_approximates,
    ("distance", "embedding"): _embedding_distance,
    ("distance", "needs_network_training"): _gradient_distance,
    ("metric", None): _scores_random_outputs,
    ("risk", None): _weighs_scenarios,
    ("task", "targets_loss"): _per_sample_losses,
    ("train", "estimator"): _fits_an_estimator,
    ("model", "differentiable"): _builds_a_differentiable_module,
    ("data", None): _describes_what_it_loads,
}

CHECKERS: dict[str, Callable[[Any, str], str]] = {
    "docstring": _docstring, "builder": _builder, "schema": _schema_check, "reference": _reference_check,
    "round_trip": _round_trip, "capabilities": _capabilities,
}


def instance(spec_cls: type) -> Any:
    """The kind with its defaults (required fields filled with example values: a file name for strings)."""
    required = {name: _example_value(f.annotation) for name, f in spec_cls.model_fields.items() if f.is_required()}
    return spec_cls(**required)


def _example_value(annotation: Any) -> Any:
    for arg in (annotation, *typing.get_args(annotation)):
        if arg is str:
            return "data.bin"
        if arg in (int, float):
            return arg(1)
        if typing.get_origin(arg) is list:
            return []
    raise TypeError(f"no example value for a required field of type {annotation}")


@cache
def _schema(signature: Any) -> dict[str, Any]:
    from ddspec.cli import schema_json

    return json.loads(schema_json())


@cache
def _reference(signature: Any) -> str:
    from ddspec.spec.reference import reference_markdown

    return reference_markdown()


def _tagged_defs(node: Any, defs: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """kind → the schema definitions that the schema's discriminated unions map that kind to."""
    found: dict[str, list[dict[str, Any]]] = {}
    if isinstance(node, dict):
        for tag, ref in node.get("discriminator", {}).get("mapping", {}).items():
            found.setdefault(tag, []).append(defs[ref.rpartition("/")[2]])
        children: Iterable[Any] = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return found
    for child in children:
        for tag, hits in _tagged_defs(child, defs).items():
            found.setdefault(tag, []).extend(hits)
    return found


__all__ = ["BEHAVIOUR", "CHECKS", "check_kind", "instance", "random_dataset"]
