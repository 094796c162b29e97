"""``risk``: the risk measure R_ω aggregating the distance over scenarios (and groups)."""

from __future__ import annotations

from typing import Literal

from ddspec.registry import RISKS
from ddspec.spec.base import SpecModel


@RISKS.register()
class MeanRisk(SpecModel):
    """Expectation over scenarios: the plain average."""

    kind: Literal["mean"] = "mean"
