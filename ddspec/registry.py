"""Registries: one per axis of the formulation (data, model, train, task, distance, risk, ...).

An entry is a ``kind`` tag, the pydantic spec class that declares it, a builder (a
``"package.module:function"`` string, imported on first use so that validating a spec never
imports torch, or a callable), capability tags read by the analysis pass, and a one-line summary.
The tagged unions of :mod:`ddspec.spec.problem` are built from these registries;
:func:`ddspec.spec.problem.problem_model` builds the Problem model for each :func:`signature` (the
registered spec classes), so a kind registered at run time validates and appears in the JSON Schema
and the reference.

Backends live in their own registry (:data:`BACKENDS`). The built-in ones are the modules named in
:data:`BUILTIN_BACKENDS` (each registers itself on import); plugins add theirs with
:func:`register_backend`. Plugins are the entry points of the group :data:`PLUGIN_GROUP`, each a
module (registering kinds on import) or a callable (called once); :func:`load_plugins` loads them
once, before the Problem model is first built and before the backends are first read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, Union, get_args, overload

from ddspec.errors import InternalError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ddspec.backends.base import Backend

S = TypeVar("S", bound="type[BaseModel]")
B = TypeVar("B", bound="type[Backend]")

#: A builder: ``"package.module:function"`` (imported on first use) or the function itself.
Builder = Union[str, Callable[..., Any]]  # noqa: UP007

#: The import paths of the built-in backends' declaration modules (light: no torch at import).
BUILTIN_BACKENDS = (
    "ddspec.backends.krr",
    "ddspec.backends.convex",
    "ddspec.backends.bilevel",
    "ddspec.backends.matching",
    "ddspec.backends.coreset",
    "ddspec.backends.zero_order",
    "ddspec.backends.collocation",
    "ddspec.backends.milp",
    "ddspec.backends.survival",
)

#: The entry-point group read for plugins (``[project.entry-points."ddspec.plugins"]``).
PLUGIN_GROUP = "ddspec.plugins"

@dataclass(frozen=True)
class Entry:
    """One registered kind."""

    kind: str
    spec: type
    builder: Builder | None
    capabilities: frozenset[str]
    summary: str

    def load_builder(self) -> Callable[..., Any] | None:
        """The builder as a callable (imported if it is given by name), or None."""
        return import_object(self.builder) if isinstance(self.builder, str) else self.builder


def import_object(ref: str) -> Any:
    """Import ``"package.module:attr"``."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry:
    """Kinds of one axis, in registration order."""

    def __init__(self, axis: str) -> None:
        self.axis = axis
        self._entries: dict[str, Entry] = {}
        #: The class every kind of this axis subclasses, where the axis has one (it supplies the light methods
        #: the analysis and the backends call, e.g. a model's ``cost``); set by the axis's spec module.
        self.base: type | None = None

    @overload
    def register(
        self, spec_cls: None = None, *, builder: Builder | None = ..., capabilities: tuple[str, ...] = ...,
        summary: str = ...,
    ) -> Callable[[S], S]: ...

    @overload
    def register(
        self, spec_cls: S, *, builder: Builder | None = ..., capabilities: tuple[str, ...] = ..., summary: str = ...,
    ) -> S: ...

    def register(
        self,
        spec_cls: S | None = None,
        *,
        builder: Builder | None = None,
        capabilities: tuple[str, ...] = (),
        summary: str = "",
    ) -> S | Callable[[S], S]:
        """Register ``spec_cls`` (a pydantic class whose ``kind`` field is ``Literal[tag]``) and return it;
        without ``spec_cls``, return a class decorator that does so. The summary defaults to the
        first line of the class docstring."""
        if spec_cls is None:
            return lambda cls: self.register(cls, builder=builder, capabilities=capabilities, summary=summary)
        kind = _literal_kind(spec_cls)
        if self.base is not None and not issubclass(spec_cls, self.base):
            raise TypeError(f"{self.axis} kinds subclass {self.base.__module__}.{self.base.__qualname__}, which supplies "
                            f"what ddspec calls on them; {spec_cls.__name__} does not")
        if kind in self._entries:
            raise ValueError(f"{self.axis} kind {kind!r} is registered twice")
        doc = (spec_cls.__doc__ or "").strip().splitlines()
        self._entries[kind] = Entry(kind, spec_cls, builder, frozenset(capabilities), summary or (doc[0] if doc else ""))
        _changed()
        return spec_cls

    def unregister(self, kind: str) -> Entry:
        """Remove ``kind`` (e.g. a kind a test registered); return its entry."""
        entry = self._entries.pop(self[kind].kind)
        _changed()
        return entry

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

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def has(self, spec: Any, capability: str) -> bool:
        """Whether the kind of ``spec`` declares ``capability``."""
        return capability in self[spec.kind].capabilities

    def build(self, spec: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the builder registered for ``spec.kind`` with ``spec`` and the extra arguments."""
        builder = self[spec.kind].load_builder()
        if builder is None:
            raise TypeError(f"{self.axis} kind {spec.kind!r} has no builder")
        return builder(spec, *args, **kwargs)


#: Called after every registration or removal of a kind (the spec layer refreshes its nested unions).
_LISTENERS: list[Callable[[], None]] = []


def on_change(listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener()`` after every change of any registry; returns it (usable as a decorator)."""
    _LISTENERS.append(listener)
    return listener


def _changed() -> None:
    for listener in _LISTENERS:
        listener()


def _literal_kind(spec_cls: type) -> str:
    field = getattr(spec_cls, "model_fields", {}).get("kind")
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
#: How the bilevel backend differentiates through training (``optimize.hypergradient``).
HYPERGRADIENTS = Registry("hypergradient")
#: How ``risk.groups`` splits the real data into groups (nested in risk ``group_cvar``).
GROUPS = Registry("groups")
#: The feature map φ of a kernel model (nested in model ``kernel_ridge`` as ``model.features``).
FEATURES = Registry("features")
#: Penalties added to the per-sample training loss (``train.regularizers``, a list in train ``gradient``).
REGULARIZERS = Registry("regularizer")
#: The PDE of data ``pde`` with its boundary-condition family (nested in data ``pde`` as ``data.problem``).
PDE_PROBLEMS = Registry("pde_problem")
#: The analyses of a survival table D̂ must reproduce (nested in task ``survival_analyses`` as ``task.analyses``).
SURVIVAL_ANALYSES = Registry("survival_analysis")

#: Every kind registry by axis name (backends are in :data:`BACKENDS`).
REGISTRIES: dict[str, Registry] = {
    r.axis: r for r in (
        DATA, MODELS, TRAIN, TASKS, DISTANCES, RISKS, OPTIMIZERS, METRICS, CORRUPTIONS, HYPERGRADIENTS, GROUPS, FEATURES,
        REGULARIZERS, PDE_PROBLEMS, SURVIVAL_ANALYSES,
    )
}

BACKENDS: dict[str, Backend] = {}


def signature() -> tuple[tuple[type, ...], ...]:
    """The registered spec classes of every axis, in order: what the Problem model is built from (backends are
    checked when a problem is compiled, so they are not part of it)."""
    return tuple(tuple(r.specs()) for r in REGISTRIES.values())


def register(
    axis: str,
    spec_cls: Any = None,
    *,
    builder: Builder | None = None,
    capabilities: tuple[str, ...] = (),
    summary: str = "",
) -> Any:
    """Register a kind on ``axis`` (one of :data:`REGISTRIES`, or ``"backend"`` for a
    :class:`~ddspec.backends.base.Backend` subclass); without ``spec_cls``, a class decorator.
    E.g. ``register("model", MyNetSpec, builder=build_my_net, capabilities=("differentiable",))``."""
    if axis == "backend":
        if builder is not None or capabilities or summary:
            raise TypeError("a backend declares its name, summary and preference as class attributes")
        return register_backend if spec_cls is None else register_backend(spec_cls)
    if axis not in REGISTRIES:
        raise ValueError(f"unknown axis {axis!r}; known: {', '.join([*REGISTRIES, 'backend'])}")
    return REGISTRIES[axis].register(spec_cls, builder=builder, capabilities=capabilities, summary=summary)


def register_backend(backend_cls: B) -> B:
    """Register a :class:`~ddspec.backends.base.Backend` subclass (usable as a class decorator)."""
    instance = backend_cls()
    if not instance.name or instance.name == "auto":
        raise TypeError(f"{backend_cls.__name__} needs a class attribute `name` (other than `auto`)")
    if instance.name in BACKENDS:
        raise ValueError(f"backend {instance.name!r} is registered twice")
    BACKENDS[instance.name] = instance
    return backend_cls


def unregister_backend(name: str) -> Backend:
    """Remove the backend ``name`` (e.g. one a test registered); return it."""
    return BACKENDS.pop(name)


def load_backends() -> dict[str, Backend]:
    """Import the built-in backend declarations and the plugins (once); return the backend registry."""
    for module in BUILTIN_BACKENDS:
        importlib.import_module(module)
    load_plugins()
    return BACKENDS


_plugins_loaded = False
_plugin_error: InternalError | None = None


def load_plugins() -> None:
    """Load every entry point of :data:`PLUGIN_GROUP` once: import the module it names, or call the
    callable it names. A plugin that fails raises :class:`~ddspec.errors.InternalError` ``PLUGIN_FAILED``
    (exit code 1) naming it and the exception (again on every later call, so it is never silently skipped)."""
    global _plugins_loaded, _plugin_error
    if _plugins_loaded:
        if _plugin_error is not None:
            raise _plugin_error
        return
    _plugins_loaded = True  # before loading: a plugin reads the registries it extends
    for point in entry_points(group=PLUGIN_GROUP):
        try:
            loaded = point.load()
            if callable(loaded) and not isinstance(loaded, ModuleType):
                loaded()
        except Exception as exc:  # any failure of third-party code is reported the same way
            _plugin_error = _plugin_failed(point, exc)
            raise _plugin_error from exc


def _plugin_failed(point: EntryPoint, exc: Exception) -> InternalError:
    dist = getattr(point.dist, "name", None)
    source = f" (from the distribution `{dist}`)" if dist else ""
    return InternalError.one(
        "PLUGIN_FAILED", "",
        f"the ddspec plugin `{point.name} = {point.value}`{source} failed to load: {type(exc).__name__}: {exc}",
        f"fix the plugin, or uninstall it{f' (pip uninstall {dist})' if dist else ''}",
    )
