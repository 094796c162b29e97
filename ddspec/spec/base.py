"""Base class and shared field types of the spec."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis
    from ddspec.errors import Finding
    from ddspec.registry import Registry

#: Upper bounds that catch typos (an extra zero) without limiting real use.
MAX_COUNT = 1_000_000

PositiveInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegativeInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
PositiveFloat = Annotated[float, Field(gt=0, le=1e6)]
NonNegativeFloat = Annotated[float, Field(ge=0, le=1e6)]
Fraction = Annotated[float, Field(gt=0, le=1)]
LearningRate = Annotated[float, Field(gt=0, le=100)]
Momentum = Annotated[float, Field(ge=0, lt=1)]


class SpecModel(BaseModel):
    """Every spec section: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True)

    #: Nested sections whose kinds come from a registry (field name → registry, e.g. ``{"groups": GROUPS}``):
    #: the Problem model rebuilds these fields from the registry's current kinds.
    nested: ClassVar[dict[str, Registry]] = {}

    #: Its budgets at smoke size (:func:`ddspec.testing.shrink`): field → value. A number caps the field (a field
    #: left None, i.e. the backend's default budget, gets the number); a list field keeps its first n entries; any
    #: other value replaces the field. Fields not named here keep their values (the problem stays the same).
    smoke: ClassVar[dict[str, Any]] = {}

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """Well-posedness findings this kind knows about itself, given the whole problem's ``analysis``
        (the analysis pass calls it on every section; a section calls it on its nested sections). None by default."""
        return ()

    def shrunk(self) -> Self:
        """This section at smoke size: its nested sections (and lists of them) shrunk, then its :attr:`smoke`
        budgets applied; not validated (:func:`ddspec.testing.shrink` validates the whole problem). A kind whose
        budgets depend on one another overrides it."""
        changes: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SpecModel):
                changes[name] = value.shrunk()
            elif isinstance(value, list) and any(isinstance(v, SpecModel) for v in value):
                changes[name] = [v.shrunk() if isinstance(v, SpecModel) else v for v in value]
        for name, small in self.smoke.items():
            value = getattr(self, name)
            if isinstance(value, list):
                changes[name] = changes.get(name, value)[:small]
            elif isinstance(small, (int, float)) and not isinstance(small, bool):
                changes[name] = small if value is None else min(value, small)
            else:
                changes[name] = small
        return self.model_copy(update=changes)


class FileSpec(SpecModel):
    """A section that names files, in the fields listed in ``PATHS``. Paths are kept as written (so a saved
    spec does not tie a run folder to one machine); :meth:`resolved` resolves one when it is used: ``~``
    expanded, a relative path taken against the folder of the spec file it was loaded from (the ``base_dir``
    of the validation context, kept only while some path is relative), else against the current directory."""

    PATHS: ClassVar[tuple[str, ...]] = ()
    _base_dir: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _remember_base_dir(self, info: ValidationInfo) -> Self:
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        if base is not None and any(not Path(v).expanduser().is_absolute() for v in self._paths()):
            self._base_dir = Path(base)
        return self

    def _paths(self) -> list[str]:
        return [v for v in (getattr(self, name) for name in self.PATHS) if v is not None]

    @property
    def base_dir(self) -> Path | None:
        """The folder relative paths are resolved against (None: the current directory)."""
        return self._base_dir

    def resolved(self, value: str) -> str:
        """``value`` (one of this section's paths) as the file it names: see the class docstring."""
        path = Path(value).expanduser()
        if self._base_dir is not None and not path.is_absolute():
            path = self._base_dir / path
        return str(path)


def base_dir_of(model: BaseModel) -> Path | None:
    """The spec file's folder recorded by a :class:`FileSpec` inside ``model`` (e.g. a Problem), if any: pass it
    as ``base_dir`` when re-validating a dump of ``model``, so that its relative paths keep their meaning."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, FileSpec) and item.base_dir is not None:
                return item.base_dir
            if isinstance(item, BaseModel) and (found := base_dir_of(item)) is not None:
                return found
    return None
