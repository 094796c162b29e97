"""The report's figure for survival tables (data ``survival``): ``km_curves.png``, the Kaplan–Meier curve of all
training patients, of the distilled table and of random subsets of the same size (``metrics.json``'s ``survival``
entry, written by :func:`ddspec.evaluate.survival.survival_report`)."""

from __future__ import annotations

from typing import Any

import numpy as np


def km_curves_figure(metrics: dict[str, Any]) -> Any | None:
    """Step plots of the curves on the shared time grid; None without a ``survival`` entry."""
    entry = metrics.get("survival")
    if not isinstance(entry, dict) or "km_curves" not in entry:
        return None
    from matplotlib.figure import Figure

    grid, curves = np.asarray(entry["km_grid"], float), entry["km_curves"]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for i, curve in enumerate(curves.get("random", [])):
        ax.step(grid, curve, where="post", color="0.7", lw=1, label="random subsets" if i == 0 else None)
    ax.step(grid, curves["real"], where="post", color="k", lw=2, label="all training patients")
    ax.step(grid, curves["distilled"], where="post", color="C3", lw=2, label=f"distilled ({entry['patients']})")
    ax.set_xlabel("time")
    ax.set_ylabel("Kaplan–Meier S(t)")
    ax.set_ylim(0, 1.02)
    ax.legend()
    return fig
