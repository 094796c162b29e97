"""Base class and shared field types of the spec."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis
    from ddspec.errors import Finding

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

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """Well-posedness findings this kind knows about itself, given the whole problem's ``analysis``
        (the analysis pass calls it on every section; a section calls it on its nested sections). None by default."""
        return ()


def resolve_path(value: str | None, info: ValidationInfo) -> str | None:
    """Resolve a relative path against the directory of the spec file being loaded (if any)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    base = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path)

