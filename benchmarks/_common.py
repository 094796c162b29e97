"""Shared helpers for the benchmark scripts: run a spec, format rows, write results atomically."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ddspec
from ddspec.runtime.artifacts import atomic_write_json, atomic_write_text


def run_spec(spec: Path, overrides: list[str], workdir: Path) -> tuple[dict[str, Any], Any]:
    """Compile and run ``spec`` with ``overrides`` in a fresh folder under ``workdir``;
    return (metrics with ``wall_seconds``, the plan's ``estimate_seconds`` and ``backend`` added, the run's Result)."""
    plan = ddspec.compile(ddspec.load(spec, [*overrides, "runtime.progress=false"]))
    out = Path(tempfile.mkdtemp(dir=workdir))
    start = time.perf_counter()
    result = plan.run(out=out)
    metrics = dict(result.metrics)
    metrics["wall_seconds"] = time.perf_counter() - start
    metrics["estimate_seconds"] = plan.estimate.seconds
    metrics["backend"] = plan.backend
    return metrics, result


def pm(stat: dict[str, Any] | None) -> str:
    """'mean ± std' of a {mean, std} fraction, as a fraction with 3 decimals."""
    return "—" if stat is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def environment() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def load_rows(name: str) -> list[dict[str, Any]]:
    """The rows of ``benchmarks/results/<name>.json``."""
    return json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())["rows"]


def save(name: str, title: str, table: str, rows: list[dict[str, Any]], notes: str = "") -> None:
    """Write ``benchmarks/results/<name>.md`` and ``.json``."""
    env = environment()
    md = f"# {title}\n\n{table}\n\n{notes}\n\nMeasured {env['date']} on {env['cores']} cores ({env['machine']}), " \
         f"torch {env['torch']}.\nReproduce: `{env['command']}`\n"
    atomic_write_text(ROOT / "benchmarks" / "results" / f"{name}.md", md)
    atomic_write_json(ROOT / "benchmarks" / "results" / f"{name}.json", {"environment": env, "rows": rows})
