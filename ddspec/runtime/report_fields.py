"""The report's figures for label-free collocation points and solution-field metrics (data ``pde``).

- ``samples.png`` for points: the coordinates (first two columns) coloured by the last BC term, and the last two
  BC terms against each other (the part of BC space the points cover).
- ``field_errors.png``: relL2 of every test BC against ‖a‖∞, mean over the runs, A_in and A_out apart (metric
  ``relative_l2``'s details).
- ``worst_field.png``: the error u_θ − u on the test grid for the worst test BC of the first run.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def problem_of(spec: dict[str, Any]) -> Any | None:
    """The ``data.problem`` section of a ``pde`` spec as its spec class (None for other data)."""
    from ddspec.registry import PDE_PROBLEMS

    section = (spec.get("data") or {}).get("problem") or {}
    kind = section.get("kind")
    return PDE_PROBLEMS[kind].spec.model_validate(section) if kind in PDE_PROBLEMS else None


def coordinate_names(spec: dict[str, Any]) -> tuple[str, ...]:
    """The coordinates of a ``pde`` spec's problem; ("z1", "z2") otherwise."""
    problem = problem_of(spec)
    return problem.coordinates if problem is not None else ("z1", "z2")


def points_figure(x: np.ndarray, spec: dict[str, Any]) -> Any:
    """Two panels: coordinates coloured by the last BC term; the last two BC terms."""
    from matplotlib.figure import Figure

    names = coordinate_names(spec)
    c, k = len(names), x.shape[1] - len(names)
    fig = Figure(figsize=(9, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    shown = left.scatter(x[:, 0], x[:, 1], c=x[:, -1], s=12, cmap="coolwarm")
    left.set_xlabel(names[0])
    left.set_ylabel(names[1])
    left.set_title(f"{len(x)} points")
    fig.colorbar(shown, ax=left, label=f"a{k}")
    if k >= 2:
        right.scatter(x[:, c + k - 2], x[:, c + k - 1], s=12)
        right.set_xlabel(f"a{k - 1}")
        right.set_ylabel(f"a{k}")
        right.set_title("BC terms of the points")
    else:
        right.hist(x[:, -1], bins=20)
        right.set_xlabel("a1")
    return fig


def field_errors_figure(metrics: dict[str, Any], spec: dict[str, Any]) -> Any | None:
    """relL2 vs ‖a‖∞ per test BC (mean over runs); None without ``relative_l2`` details."""
    entry = metrics.get("relative_l2")
    if not isinstance(entry, dict) or not entry.get("per_bc"):
        return None
    from matplotlib.figure import Figure

    values = np.asarray(entry["per_bc"], dtype=float).mean(0)
    bcs = np.asarray(entry["bcs"][0], dtype=float)
    held_out = np.arange(len(values)) >= int((spec.get("data") or {}).get("test_bcs", len(values) // 2))
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    sup = np.abs(bcs).max(1)
    for mask, label in ((~held_out, "A_in"), (held_out, "A_out")):
        ax.scatter(sup[mask], values[mask], s=14, label=label)
    ax.set_xlabel("‖a‖∞ of the test BC")
    ax.set_ylabel("relL2 (mean over runs)")
    ax.set_yscale("log")
    ax.legend()
    return fig


def worst_field_figure(metrics: dict[str, Any], spec: dict[str, Any]) -> Any | None:
    """|u_θ − u| on the test grid for the first run's worst BC; None without it."""
    entry = metrics.get("relative_l2")
    if not isinstance(entry, dict) or not entry.get("worst_error"):
        return None
    from matplotlib.figure import Figure

    problem = problem_of(spec)
    error = np.asarray(entry["worst_error"][0], dtype=float)
    n = round(len(error) ** 0.5)
    if problem is None or len(problem.coordinates) != 2 or n ** 2 != len(error):
        return None
    names, ((x0, x1), (y0, y1)) = problem.coordinates, problem.domain()
    bc = entry["bcs"][0][entry["worst_bc"][0]]
    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(error.reshape(n, n).T, origin="lower", extent=(x0, x1, y0, y1), aspect="auto", cmap="coolwarm")
    fig.colorbar(shown, ax=ax, label="u_θ − u")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title("worst BC a = (" + ", ".join(f"{v:.2f}" for v in bc) + ")")
    return fig
