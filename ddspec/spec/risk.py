"""``risk``: the risk measure R_ω aggregating the distance over scenarios (and groups)."""

from __future__ import annotations

from typing import Literal

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
