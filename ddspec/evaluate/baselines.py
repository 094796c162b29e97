"""Baselines: the evaluation protocol on real training data instead of D̂, for context beside its figures.

- ``random``: for each seed s, a generator seeded with s draws, without replacement, as many training rows
  of every stratum (class, or all rows for real targets) as D̂ has (``synthetic.counts``); each seed trains
  on its own subset.
- ``full``: the whole real training set. It does not depend on D̂, so its figures are cached in
  :func:`cache_dir` under the SHA-256 of the canonical JSON of the data spec, the protocol (metrics,
  corruptions, models and their closed-form λ), the device type and the ddspec version; a cache file that
  cannot be read or whose key differs is recomputed (and rewritten atomically).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ddspec.io import atomic_write_json

if TYPE_CHECKING:
    from ddspec.components.data.base import Dataset
    from ddspec.evaluate.protocol import Protocol


def measure_baseline(name: str, protocol: Protocol) -> dict[str, Any]:
    """The figures ``{metric: {mean, std, values}, "corruptions": {...}}`` of baseline ``name``."""
    return BASELINES[name](protocol)


def random_rows(data: Dataset, counts: list[int], seed: int) -> torch.Tensor:
    """Training-row indices: ``counts[s]`` rows of stratum s drawn without replacement (``torch.randperm``
    with a CPU generator seeded with ``seed``, strata in order)."""
    generator = torch.Generator().manual_seed(seed)
    strata = [rows.cpu() for rows in data.strata()]
    return torch.cat([rows[torch.randperm(len(rows), generator=generator)[:n]] for rows, n in zip(strata, counts)])


def random_baseline(protocol: Protocol) -> dict[str, Any]:
    """Random real rows, as many per stratum as D̂ has, a new draw per seed."""
    data = protocol.data
    counts = protocol.problem.synthetic.counts(len(data.strata()))

    def subset(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = random_rows(data, counts, seed).to(data.x_train.device)
        return data.x_train[rows], data.y_train[rows]

    return protocol.summary(protocol.measure(subset, "baseline random"))


def full_baseline(protocol: Protocol) -> dict[str, Any]:
    """All real training rows; read from the cache when it holds this key, else measured and cached."""
    from ddspec import __version__
    from ddspec.evaluate.protocol import ridge
    from ddspec.registry import MODELS

    problem = protocol.problem
    key = {
        "data": problem.data.model_dump(mode="json"),
        "protocol": {k: v for k, v in protocol.record().items() if k != "baselines"},
        "ridge": [ridge(m, problem) if "closed_form" in MODELS[m.kind].capabilities else None
                  for m in protocol.models],
        "device": torch.device(protocol.device).type,
        "ddspec": __version__,
    }
    return cached(key, lambda: protocol.summary(
        protocol.measure(lambda seed: (protocol.data.x_train, protocol.data.y_train), "baseline full")))


def cache_dir() -> Path:
    """``$DDSPEC_CACHE/baselines``, else ``~/.cache/ddspec/baselines``."""
    root = os.environ.get("DDSPEC_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "ddspec") / "baselines"


def cached(key: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The figures stored under ``key`` (``<sha256 of its canonical JSON>.json`` in :func:`cache_dir`),
    or ``compute()``, stored there atomically."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    path = cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()}.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored["key"] == json.loads(text):
            return stored["figures"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    figures = compute()
    try:
        atomic_write_json(path, {"key": key, "figures": figures})
    except OSError:  # an unwritable cache only costs the recomputation next time
        pass
    return figures


BASELINES: dict[str, Callable[[Protocol], dict[str, Any]]] = {"random": random_baseline, "full": full_baseline}
