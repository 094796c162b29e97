"""``scenarios``: the random scenarios ω the distilled data must serve (initialisations, architectures)."""

from __future__ import annotations

from pydantic import Field

from ddspec.spec.base import PositiveInt, SpecModel


class ScenariosSpec(SpecModel):
    """Draw ``inits`` fresh random initialisations per outer iteration, cycling through ``models``."""

    inits: PositiveInt = Field(1, le=64, description="Fresh random initialisations drawn per outer iteration.")
    models: list = Field(  # list[ModelUnion]; the element type is set in ddspec.spec.problem
        default_factory=list,
        description="Architectures to cycle through; empty means the problem's model only.",
    )
