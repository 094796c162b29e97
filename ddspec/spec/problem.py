"""The top-level :class:`Problem`: one field per axis of the formulation (DESIGN §1).

The tagged unions (``kind`` discriminators) are built from the registries, so a kind registered
anywhere appears in the JSON Schema and in validation without editing this module; call
:func:`build_problem_model` again after registering kinds at run time.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, create_model, model_validator

from ddspec.registry import (
    BACKENDS,
    CORRUPTIONS,
    DATA,
    DISTANCES,
    METRICS,
    MODELS,
    OPTIMIZERS,
    RISKS,
    TASKS,
    TRAIN,
    Registry,
    load_backends,
)
from ddspec.spec import data, distance, kernel, model, optimize, risk, task, train  # noqa: F401  (register kinds)
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


#: Sections whose ``kind`` may be left out: it then defaults to this kind (as before the section had several).
DEFAULT_KINDS = {"train": "gradient", "risk": "mean"}


class ProblemBase(SpecModel):
    """A dataset-distillation problem (see DESIGN §1 for the formulation each section declares)."""

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
    """Create the Problem class from the current registries."""
    load_backends()
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
    backend_names = ("auto", *sorted(BACKENDS))

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
        backend=(Literal[backend_names], Field("auto", description="auto: let the compiler choose.")),
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


Problem = build_problem_model()
