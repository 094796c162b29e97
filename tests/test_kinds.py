"""Generic checks every registered kind must pass, whatever its axis (scikit-learn's ``check_estimator`` in
spirit): its builder imports, its spec class is documented, round-trips and is in the JSON Schema and the
reference, and its capability tags agree with what it does."""

from __future__ import annotations

import json
import re
import typing
from functools import cache
from typing import Any

import pytest
from pydantic import BaseModel

from ddspec.registry import DATA, DISTANCES, MODELS, REGISTRIES, Entry
from ddspec.spec.problem import problem_model

problem_model()  # imports the built-in spec modules and loads the plugins, so every kind is registered

KINDS = [(axis, kind) for axis, registry in REGISTRIES.items() for kind in registry.kinds()]
IDS = [f"{axis}:{kind}" for axis, kind in KINDS]

#: The reference section under which each axis's kinds are listed (nested axes: their enclosing section).
SECTION = {"metric": "evaluate", "corruption": "evaluate", "hypergradient": "optimize", "groups": "risk",
           "features": "model", "regularizer": "train"}

#: Per-sample input shapes tried, in order, for a model kind; the first one it accepts is used.
SHAPES = ((1, 8, 8), (3, 8, 8), (1, 32), (12,))


def _entry(axis: str, kind: str) -> Entry:
    return REGISTRIES[axis][kind]


def _example_value(annotation: Any) -> Any:
    """A valid value for a required field of a plain type (a file name for strings)."""
    for arg in (annotation, *typing.get_args(annotation)):
        if arg is str:
            return "data.bin"
        if arg in (int, float):
            return arg(1)
        if typing.get_origin(arg) is list:
            return []
    raise TypeError(f"no example value for {annotation}")


def _instance(spec_cls: type[BaseModel]) -> BaseModel:
    """The kind with its defaults (required fields filled with example values)."""
    required = {name: _example_value(f.annotation) for name, f in spec_cls.model_fields.items() if f.is_required()}
    return spec_cls(**required)


@cache
def _schema() -> dict[str, Any]:
    from ddspec.cli import schema_json

    return json.loads(schema_json())


@cache
def _reference() -> str:
    from ddspec.spec.reference import reference_markdown

    return reference_markdown()


def _tagged_defs(node: Any, defs: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """kind → the schema definitions that the schema's discriminated unions map that kind to."""
    found: dict[str, list[dict[str, Any]]] = {}
    if isinstance(node, dict):
        mapping = node.get("discriminator", {}).get("mapping", {})
        for tag, ref in mapping.items():
            found.setdefault(tag, []).append(defs[ref.rpartition("/")[2]])
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return found
    for child in children:
        for tag, hits in _tagged_defs(child, defs).items():
            found.setdefault(tag, []).extend(hits)
    return found


@pytest.mark.parametrize(("axis", "kind"), KINDS, ids=IDS)
def test_builder_imports(axis: str, kind: str) -> None:
    entry = _entry(axis, kind)
    if entry.builder is None:
        pytest.skip(f"{axis}:{kind} has no builder (its backend implements it)")
    assert callable(entry.load_builder())


@pytest.mark.parametrize(("axis", "kind"), KINDS, ids=IDS)
def test_spec_class_is_documented(axis: str, kind: str) -> None:
    entry = _entry(axis, kind)
    assert (entry.spec.__dict__.get("__doc__") or "").strip(), f"{entry.spec.__name__} has no docstring"
    assert entry.summary.strip()


@pytest.mark.parametrize(("axis", "kind"), KINDS, ids=IDS)
def test_kind_is_in_the_json_schema(axis: str, kind: str) -> None:
    """A discriminated union of ``ddspec schema`` maps the tag to a definition with this class's fields (the
    only kind of a registry: a definition with that ``kind``)."""
    schema = _schema()
    fields = set(_entry(axis, kind).spec.model_json_schema()["properties"])
    hits = _tagged_defs(schema, schema["$defs"]).get(kind, [])
    if len(REGISTRIES[axis].kinds()) == 1:  # a registry of one kind: its fields name the class itself (no union)
        hits += [d for d in schema["$defs"].values() if d.get("properties", {}).get("kind", {}).get("const") == kind]
    assert any(set(d["properties"]) == fields and d["properties"]["kind"].get("const") == kind for d in hits)


@pytest.mark.parametrize(("axis", "kind"), KINDS, ids=IDS)
def test_kind_is_in_the_reference(axis: str, kind: str) -> None:
    """The generated reference lists the kind, with its fields, in its section."""
    section = SECTION.get(axis, axis)
    match = re.search(rf"^## `{section}`\n(.*?)(?=^## |\Z)", _reference(), flags=re.MULTILINE | re.DOTALL)
    assert match is not None, f"no section `{section}`"
    block = match.group(1)
    heading = re.search(rf"^#+ `kind: {kind}`.*$", block, flags=re.MULTILINE)
    assert heading is not None
    table = block[heading.end():].split("\n#", 1)[0]
    for name in _entry(axis, kind).spec.model_fields:
        assert f"| `{name}` |" in table


@pytest.mark.parametrize(("axis", "kind"), KINDS, ids=IDS)
def test_spec_round_trips(axis: str, kind: str) -> None:
    spec_cls = _entry(axis, kind).spec
    spec = _instance(spec_cls)
    assert spec.kind == kind
    assert spec_cls.model_validate(spec.model_dump()) == spec
    assert spec_cls.model_validate(json.loads(spec.model_dump_json())) == spec


SURROGATES = [k for k in DISTANCES.kinds() if "surrogate" in DISTANCES[k].capabilities]


@pytest.mark.parametrize("kind", SURROGATES, ids=[f"distance:{k}" for k in SURROGATES])
def test_surrogate_names_what_it_approximates(kind: str) -> None:
    approximates = getattr(DISTANCES[kind].spec, "approximates", "")
    assert isinstance(approximates, str) and approximates.strip()


DIFFERENTIABLE = [k for k in MODELS.kinds() if "differentiable" in MODELS[k].capabilities]


@pytest.mark.parametrize("kind", DIFFERENTIABLE, ids=[f"model:{k}" for k in DIFFERENTIABLE])
def test_differentiable_model_builds_a_module(kind: str) -> None:
    """For the first small input shape the kind accepts: an nn.Module with ``spec.cost``'s parameter count,
    giving finite (N, classes) logits whose gradient reaches the inputs."""
    import torch

    spec = _instance(MODELS[kind].spec)
    shape = next((s for s in SHAPES if spec.check_input(s) is None), None)
    assert shape is not None, f"{kind} accepts none of {SHAPES}"
    classes = 3
    torch.manual_seed(0)
    model = MODELS.build(spec, shape, classes)
    assert isinstance(model, torch.nn.Module)
    assert sum(p.numel() for p in model.parameters()) == spec.cost(shape, classes)[0]
    x = torch.randn(4, *shape, requires_grad=True)
    out = model(x)
    assert out.shape == (4, classes)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


FILELESS = [k for k in DATA.kinds() if not any(f.is_required() for f in DATA[k].spec.model_fields.values())]


@pytest.mark.parametrize("kind", FILELESS, ids=[f"data:{k}" for k in FILELESS])
def test_data_description_matches_what_the_builder_loads(kind: str) -> None:
    """``describe()`` (no tensors) states the shapes and per-class counts (or target width) that loading gives."""
    import torch

    spec = DATA[kind].spec()
    info = spec.describe()
    data = DATA.build(spec)
    assert data.name == info.name
    assert data.input_shape == info.input_shape
    assert tuple(data.x_train.shape[1:]) == tuple(data.x_test.shape[1:])
    assert len(data.x_test) == len(data.y_test) == info.n_test
    assert len(data.x_train) == len(data.y_train) == info.n_train
    assert data.num_classes == info.num_classes
    if info.targets == "real":
        assert data.targets.dim == info.target_dim == (1 if data.y_train.dim() == 1 else data.y_train.shape[1])
    else:
        assert tuple(torch.bincount(data.y_train, minlength=info.num_classes).tolist()) == info.class_counts
