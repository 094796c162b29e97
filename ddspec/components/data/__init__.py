"""Data sources: each builder takes its spec and returns a :class:`~ddspec.components.data.base.Dataset`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ddspec.registry import DATA

if TYPE_CHECKING:
    from ddspec.components.data.base import Dataset


def load_dataset(spec: Any) -> Dataset:
    """The Dataset of a ``data`` spec, from the builder registered for its ``kind``, checked by
    :func:`~ddspec.components.data.checks.validate_dataset`; errors name the spec path of each array
    (:meth:`~ddspec.spec.data.DataBase.array_path`: e.g. ``data.path``, else ``data``)."""
    from ddspec.components.data.checks import ARRAYS, validate_dataset

    return validate_dataset(DATA.build(spec), {key: spec.array_path(key) for key in ARRAYS})
