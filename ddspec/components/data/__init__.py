"""Data sources: each builder takes its spec and returns a :class:`~ddspec.components.data.base.Dataset`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ddspec.registry import DATA

if TYPE_CHECKING:
    from ddspec.components.data.base import Dataset


def load_dataset(spec: Any) -> Dataset:
    """The Dataset of a ``data`` spec, from the builder registered for its ``kind``."""
    return DATA.build(spec)
