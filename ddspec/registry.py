"""Registries: one per axis of the formulation (data, model, train, task, distance, risk, ...).

An entry is a ``kind`` tag, the pydantic spec class that declares it, a builder named as
``"package.module:function"`` (imported on first use, so that validating a spec never imports
torch), capability tags read by the analysis pass, and a one-line summary. The tagged unions of
:mod:`ddspec.spec.problem` are built from these registries, so the JSON Schema lists every choice.

Backends live in their own registry (:data:`BACKENDS`); each module of :mod:`ddspec.backends`
registers itself on import and :func:`load_backends` imports them all.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, get_args

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ddspec.backends.base import Backend

S = TypeVar("S", bound="type[BaseModel]")


@dataclass(frozen=True)
class Entry:
    """One registered kind."""

    kind: str
    spec: type
    builder: str | None
    capabilities: frozenset[str]
    summary: str


def import_object(ref: str) -> Any:
    """Import ``"package.module:attr"``."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry:
    """Kinds of one axis, in registration order."""

    def __init__(self, axis: str) -> None:
        self.axis = axis
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        *,
        builder: str | None = None,
        capabilities: tuple[str, ...] = (),
        summary: str = "",
    ) -> Callable[[S], S]:
        """Class decorator: register a spec class whose ``kind`` field is ``Literal[tag]``."""

        def decorate(spec_cls: S) -> S:
            kind = _literal_kind(spec_cls)
            if kind in self._entries:
                raise ValueError(f"{self.axis} kind {kind!r} is registered twice")
            doc = (spec_cls.__doc__ or "").strip().splitlines()
            self._entries[kind] = Entry(
                kind, spec_cls, builder, frozenset(capabilities), summary or (doc[0] if doc else "")
            )
            return spec_cls

        return decorate

    def __getitem__(self, kind: str) -> Entry:
        try:
            return self._entries[kind]
        except KeyError:
            raise KeyError(f"unknown {self.axis} kind {kind!r}; known: {', '.join(self.kinds())}") from None

    def __contains__(self, kind: str) -> bool:
        return kind in self._entries

    def kinds(self) -> list[str]:
        return list(self._entries)

    def specs(self) -> list[type]:
        return [e.spec for e in self._entries.values()]

    def has(self, spec: Any, capability: str) -> bool:
        """Whether the kind of ``spec`` declares ``capability``."""
        return capability in self[spec.kind].capabilities

    def build(self, spec: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the builder registered for ``spec.kind`` with ``spec`` and the extra arguments."""
        entry = self[spec.kind]
        if entry.builder is None:
            raise TypeError(f"{self.axis} kind {spec.kind!r} has no builder")
        return import_object(entry.builder)(spec, *args, **kwargs)


def _literal_kind(spec_cls: type) -> str:
    field = spec_cls.model_fields.get("kind")  # type: ignore[attr-defined]
    args = get_args(field.annotation) if field is not None else ()
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeError(f"{spec_cls.__name__} needs a field `kind: Literal['<tag>']`")
    return args[0]


DATA = Registry("data")
MODELS = Registry("model")
TRAIN = Registry("train")
TASKS = Registry("task")
DISTANCES = Registry("distance")
RISKS = Registry("risk")
OPTIMIZERS = Registry("optimize")
METRICS = Registry("metric")
CORRUPTIONS = Registry("corruption")

BACKENDS: dict[str, Backend] = {}


def register_backend(backend_cls: type[Backend]) -> type[Backend]:
    """Class decorator for :class:`ddspec.backends.base.Backend` subclasses."""
    instance = backend_cls()
    if instance.name in BACKENDS:
        raise ValueError(f"backend {instance.name!r} is registered twice")
    BACKENDS[instance.name] = instance
    return backend_cls


def load_backends() -> dict[str, Backend]:
    """Import every module of :mod:`ddspec.backends` (each registers itself); return the registry."""
    import ddspec.backends as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{package.__name__}.{info.name}")
    return BACKENDS
