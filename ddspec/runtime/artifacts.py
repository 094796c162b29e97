"""Artifacts of a run: their file names, and the distilled tensors' safetensors file; every file is written
atomically (:mod:`ddspec.io`: to a temporary file, then renamed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddspec.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

__all__ = [
    "ADVERSARIAL_PNG", "BACKEND_FILES", "CHECKPOINT", "DISTILLED", "FIELD_ERRORS_PNG", "FIGURES", "HISTORY", "KM_CURVES_PNG", "LOSS_PNG", "METRICS", "PLAN", "RECORDS", "REPORT", "ROBUSTNESS_PNG",
    "SAMPLES_PNG", "SOLVE", "SPEC", "WORST_FIELD_PNG", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "load_distilled",
    "read_json", "save_distilled",
]

DISTILLED = "distilled.safetensors"
SPEC = "spec.yaml"
PLAN = "plan.json"
METRICS = "metrics.json"
HISTORY = "history.json"
REPORT = "report.html"
CHECKPOINT = "checkpoint.pt"
#: The report's figures, written next to ``report.html``.
SAMPLES_PNG = "samples.png"
LOSS_PNG = "loss.png"
ROBUSTNESS_PNG = "robustness.png"
ADVERSARIAL_PNG = "adversarial.png"
FIELD_ERRORS_PNG = "field_errors.png"
WORST_FIELD_PNG = "worst_field.png"
KM_CURVES_PNG = "km_curves.png"
FIGURES = (SAMPLES_PNG, LOSS_PNG, ROBUSTNESS_PNG, ADVERSARIAL_PNG, FIELD_ERRORS_PNG, WORST_FIELD_PNG, KM_CURVES_PNG)
#: Files a backend writes beside the distilled tensors: the milp backend's records with their category names, and
#: its solve report (route, candidates' objectives, the solver's bound and gap).
RECORDS = "records.csv"
SOLVE = "solve.json"
BACKEND_FILES = (RECORDS, SOLVE)


def save_distilled(path: Path, x: Any, y: Any, extras: dict[str, Any] | None = None) -> None:
    """Save ``x``, ``y`` and extra tensors as safetensors (contiguous CPU copies)."""
    from safetensors.torch import save

    tensors = {"x": x, "y": y, **(extras or {})}
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def load_distilled(path: Path) -> dict[str, Any]:
    """Load the tensors of ``distilled.safetensors`` (a dict with at least ``x`` and ``y``)."""
    from safetensors.torch import load_file

    return load_file(str(path))
