"""``risk``: the risk measure R_ω aggregating the distance over scenarios (and groups)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ddspec.registry import RISKS
from ddspec.spec.base import SpecModel


@RISKS.register(builder="ddspec.components.risks:mean")
class MeanRisk(SpecModel):
    """Expectation over scenarios: the plain average."""

    kind: Literal["mean"] = "mean"


@RISKS.register(builder="ddspec.components.risks:worst")
class MaxRisk(SpecModel):
    """The worst scenario: max over ω of the distance (its gradient is the worst scenario's)."""

    kind: Literal["max"] = "max"


@RISKS.register(builder="ddspec.components.risks:worst")
class WorstCaseRisk(SpecModel):
    """The worst case: max over ω of the distance (same measure as ``max``)."""

    kind: Literal["worst_case"] = "worst_case"


@RISKS.register(builder="ddspec.components.risks:cvar_risk")
class CVaRRisk(SpecModel):
    """CVaR_α: the mean of the worst α-fraction of the scenario losses (α = 1: mean; α → 0: max)."""

    kind: Literal["cvar"] = "cvar"
    alpha: float = Field(
        0.8,
        gt=0,
        le=1,
        description=(
            "Fraction of the largest losses kept: CVaR_α(ℓ) = min_η η + (1/(αn)) Σ_i (ℓ_i − η)₊, "
            "a fractional weight on the boundary loss when αn is not an integer."
        ),
    )
