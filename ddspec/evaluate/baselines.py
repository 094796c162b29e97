"""Baselines: the evaluation protocol on real training data instead of D̂, for context beside its figures.

- ``random``: for each seed s, a generator seeded with s draws, without replacement, as many training rows
  of every stratum (class, or all rows for real targets) as D̂ has (``synthetic.counts``); each seed trains
  on its own subset.
- ``full``: the whole real training set. It does not depend on D̂, so its figures are cached in
  :func:`cache_dir` under the SHA-256 of the canonical JSON of its key: the loaded data's contents
  (:func:`data_digest`: not the data spec, whose relative paths name different files from different
  folders), the protocol (metrics, corruptions, models and their closed-form λ), the augmentation ops when
  ``evaluate.augment`` is on, the device type and :data:`CACHE_VERSION`; a cache file that cannot be read
  or whose key differs is recomputed (and rewritten atomically).
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


#: Part of the full baseline's cache key: raise it when a change to ddspec changes the figures the
#: protocol measures, so that no cached figure of the earlier code is read.
CACHE_VERSION = 2


def full_baseline(protocol: Protocol) -> dict[str, Any]:
    """All real training rows; read from the cache when it holds this key, else measured and cached."""
    problem = protocol.problem
    ops = problem.optimize.augmentation_ops() if protocol.ev.augment else None
    key = {
        "data": data_digest(protocol.data),
        "protocol": {k: v for k, v in protocol.record().items() if k != "baselines"},
        "ridge": protocol.ridges(),
        "augmentation": None if ops is None else ops.model_dump(mode="json", exclude={"enabled"}),
        "device": torch.device(protocol.device).type,
        "version": CACHE_VERSION,
    }
    return cached(key, lambda: protocol.summary(
        protocol.measure(lambda seed: (protocol.data.x_train, protocol.data.y_train), "baseline full")))


def data_digest(data: Dataset) -> str:
    """SHA-256 of the dataset's contents: the number of classes, then the dtype, shape and bytes of every
    tensor (training and test inputs, targets and groups)."""
    digest = hashlib.sha256(f"classes={data.num_classes}".encode())
    for name in ("x_train", "y_train", "x_test", "y_test", "groups_train", "groups_test"):
        tensor = getattr(data, name)
        if tensor is None:
            digest.update(f";{name}=none".encode())
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f";{name}={tensor.dtype}{tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_dir(kind: str = "baselines") -> Path:
    """``$DDSPEC_CACHE/<kind>``, else ``~/.cache/ddspec/<kind>`` (``baselines``; ``convex``: the convex backend's
    full-data solutions)."""
    root = os.environ.get("DDSPEC_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "ddspec") / kind


def cached(key: dict[str, Any], compute: Callable[[], dict[str, Any]], kind: str = "baselines") -> dict[str, Any]:
    """The figures (JSON-ready data) stored under ``key`` (``<sha256 of its canonical JSON>.json`` in
    :func:`cache_dir` of ``kind``), or ``compute()``, stored there atomically."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    path = cache_dir(kind) / f"{hashlib.sha256(text.encode()).hexdigest()}.json"
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
