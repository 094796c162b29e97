"""Artifacts of a run (DESIGN §5), written atomically: to a temporary file, then renamed."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

DISTILLED = "distilled.safetensors"
SPEC = "spec.yaml"
PLAN = "plan.json"
METRICS = "metrics.json"
HISTORY = "history.json"
REPORT = "report.html"
CHECKPOINT = "checkpoint.pt"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.
    The file gets the usual permissions (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_distilled(path: Path, x: Any, y: Any, extras: dict[str, Any] | None = None) -> None:
    """Save ``x``, ``y`` and extra tensors as safetensors (contiguous CPU copies)."""
    from safetensors.torch import save

    tensors = {"x": x, "y": y, **(extras or {})}
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def load_distilled(path: Path) -> dict[str, Any]:
    """Load the tensors of ``distilled.safetensors`` (a dict with at least ``x`` and ``y``)."""
    from safetensors.torch import load_file

    return load_file(str(path))
