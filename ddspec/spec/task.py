"""``task``: the inference task I applied to a trained model (what the distilled data must preserve)."""

from __future__ import annotations

from typing import Literal

from ddspec.registry import TASKS
from ddspec.spec.base import SpecModel


@TASKS.register()
class TestErrorTask(SpecModel):
    """Classification error on the real data's distribution (cross-entropy on real samples)."""

    __test__ = False  # not a pytest class
    kind: Literal["test_error"] = "test_error"
