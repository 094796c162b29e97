"""The top-level Problem model: one field per axis of the formulation.

The tagged unions (``kind`` discriminators) are built from the registries. :func:`problem_model`
returns the model for the registries as they are now: it loads the plugins once, and builds one model
per :func:`ddspec.registry.signature` (the registered spec classes), so a kind registered at run time
validates and appears in the JSON Schema, and removing it again gives back the earlier model. ``Problem`` (this module's attribute, and
``ddspec.Problem``) is :func:`problem_model` read at access time; do not keep it across registrations.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Optional, Union

from pydantic import Field, create_model, model_validator

from ddspec.registry import (
    CORRUPTIONS,
    DATA,
    DISTANCES,
    METRICS,
    MODELS,
    OPTIMIZERS,
    REGISTRIES,
    RISKS,
    TASKS,
    TRAIN,
    Registry,
    load_plugins,
    on_change,
    signature,
)
from ddspec.spec import (  # noqa: F401  (register kinds)
    categorical,
    data,
    distance,
    kernel,
    model,
    optimize,
    pde,
    regularizer,
    risk,
    survival,
    survival_categorical,
    task,
    train,
)
from ddspec.spec.base import SpecModel
from ddspec.spec.evaluate import EvaluateSpec
from ddspec.spec.runtime import RuntimeSpec
from ddspec.spec.scenarios import ScenariosSpec
from ddspec.spec.synthetic import SyntheticSpec


def tagged_union(registry: Registry) -> Any:
    """``Annotated[Union[...], Field(discriminator="kind")]`` over the registry (or its only class)."""
    specs = registry.specs()
    if len(specs) == 1:
        return specs[0]
    return Annotated[Union[tuple(specs)], Field(discriminator="kind")]  # noqa: UP007


def refresh_nested(spec: type[SpecModel], done: set[type] | None = None) -> None:
    """Point the fields that ``spec.nested`` names (field → registry, e.g. a risk's ``groups``) at the union of
    their registry's current kinds, in place (``model_rebuild``), after doing the same for those kinds — so a
    kind registered at run time on a nested axis validates, and spec objects built from the public classes stay
    valid. A field keeps its default and description; None stays allowed where it was, and a list field (e.g.
    ``train.regularizers``) becomes a list of the union."""
    done = set() if done is None else done
    if spec in done or not spec.nested:
        return
    done.add(spec)
    for name, registry in spec.nested.items():
        for inner in registry.specs():
            refresh_nested(inner, done)
        info = spec.model_fields[name]
        union = tagged_union(registry)
        if typing.get_origin(info.annotation) is list:
            info.annotation = list[union]
        else:
            info.annotation = Optional[union] if type(None) in typing.get_args(info.annotation) else union  # noqa: UP045
    spec.model_rebuild(force=True)


#: Sections whose ``kind`` may be left out: it then defaults to this kind (as before the section had several).
DEFAULT_KINDS = {"train": "gradient", "risk": "mean"}


class ProblemBase(SpecModel):
    """A dataset-distillation problem: minimize over D̂ the risk R_ω of dist(I(M_θ̂(ω)), I(M_θ(ω))), where
    θ̂(ω) = O(M, D̂, ω) and θ(ω) = O(M, D, ω); each section declares one symbol (docs/concepts.md)."""

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, values: Any) -> Any:
        """``train: {steps: 5}`` means ``train: {kind: gradient, steps: 5}`` (see :data:`DEFAULT_KINDS`)."""
        if isinstance(values, dict):
            for section, kind in DEFAULT_KINDS.items():
                if isinstance(values.get(section), dict) and "kind" not in values[section]:
                    values = {**values, section: {"kind": kind, **values[section]}}
        return values

    def to_yaml(self) -> str:
        """The spec as YAML (all defaults filled); ``ddspec.load`` of it gives an equal problem."""
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def build_problem_model() -> type[ProblemBase]:
    """Create a Problem class from the registries as they are (:func:`problem_model` caches it)."""
    models = tagged_union(MODELS)
    scenarios = create_model(
        "Scenarios", __base__=ScenariosSpec, __doc__=ScenariosSpec.__doc__,
        models=(list[models], ScenariosSpec.model_fields["models"]),
    )
    evaluate = create_model(
        "Evaluate", __base__=EvaluateSpec, __doc__=EvaluateSpec.__doc__,
        models=(list[models], EvaluateSpec.model_fields["models"]),
        metrics=(list[tagged_union(METRICS)], EvaluateSpec.model_fields["metrics"]),
        corruptions=(list[tagged_union(CORRUPTIONS)], EvaluateSpec.model_fields["corruptions"]),
    )

    def section(registry: Registry, default: str | None, description: str) -> tuple[Any, Any]:
        union = tagged_union(registry)
        if default is None:
            return Optional[union], Field(None, description=description)  # noqa: UP045
        return union, Field(default_factory=registry[default].spec, description=description)

    return create_model(
        "Problem",
        __base__=ProblemBase,
        __doc__=ProblemBase.__doc__,
        name=(str, Field("ddspec", min_length=1, max_length=200, description="A name for the run.")),
        backend=(str, Field("auto", min_length=1, description=(
            "auto: let the compiler choose; or the name of a registered backend (checked when compiled)."))),
        data=(tagged_union(DATA), Field(description="The real dataset D.")),
        synthetic=(SyntheticSpec, Field(default_factory=SyntheticSpec, description="The synthetic set D̂.")),
        model=section(MODELS, None, "The model family M; None picks one from the data's shape."),
        train=section(TRAIN, "gradient", "The inner training procedure O."),
        scenarios=(scenarios, Field(default_factory=scenarios, description="The scenarios ω.")),
        task=section(TASKS, None, "The inference task I; None is allowed with a surrogate distance."),
        distance=section(DISTANCES, None, "The distance D between task outputs (or a matching surrogate)."),
        risk=section(RISKS, "mean", "The risk measure R_ω over scenarios."),
        optimize=section(OPTIMIZERS, "gradient", "The outer optimizer over D̂."),
        evaluate=(evaluate, Field(default_factory=evaluate, description="The evaluation protocol and metrics.")),
        runtime=(RuntimeSpec, Field(default_factory=RuntimeSpec, description="Device, seed, checkpoints.")),
    )


#: The signature the nested fields were last refreshed for.
_refreshed: tuple[tuple[type, ...], ...] = ()
_built: dict[tuple[tuple[type, ...], ...], type[ProblemBase]] = {}


@on_change
def refresh_all() -> None:
    """:func:`refresh_nested` for every registered spec class: run after every registry change, so a nested kind
    registered late validates in its parent class at once (``KernelRidgeSpec(features=...)`` included)."""
    global _refreshed
    done: set[type] = set()
    for registry in REGISTRIES.values():
        for spec in registry.specs():
            refresh_nested(spec, done)
    _refreshed = signature()


def problem_model() -> type[ProblemBase]:
    """The Problem class for the registries as they are now (plugins loaded); built once per signature."""
    load_plugins()
    key = signature()
    if key != _refreshed:
        refresh_all()
    if key not in _built:
        _built[key] = build_problem_model()
    return _built[key]


def __getattr__(name: str) -> Any:
    """``Problem`` is :func:`problem_model` at access time (PEP 562)."""
    if name == "Problem":
        return problem_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
