"""``report.html`` of a run folder: sample plots, loss curve, metrics tables, plan and spec (docs/concepts.md#artifacts).

Figures are drawn with matplotlib's Agg renderer on :class:`matplotlib.figure.Figure` objects (no
pyplot state), written next to the report as PNGs and embedded in it as base64 data URIs, so the
HTML is self-contained. Fractions (metrics whose kind declares the capability ``fraction``) are stored
as fractions and only *shown* as percentages. The baselines of ``metrics.json`` are shown beside the
distilled figures: a table column and a chart bar each.

A metric's nested figures whose keys are numbers (``adversarial``: ``{"linf": {"0.1": stats, ...}, "clean":
stats}``) are *curves*: value vs that number, one line per group, the metric's ``clean`` figure at 0
(``adversarial.png``: robust accuracy vs ε, error bars = std over the runs), and one table row each. A
metric whose per-run details hold ``square_beats_pgd`` flags gets a warning line for every (norm, ε) where
the black-box attack broke samples that PGD did not (a sign of gradient masking).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ddspec.errors import SpecError
from ddspec.registry import load_plugins
from ddspec.runtime.artifacts import (
    ADVERSARIAL_PNG,
    DISTILLED,
    FIELD_ERRORS_PNG,
    FIGURES,
    HISTORY,
    KM_CURVES_PNG,
    LOSS_PNG,
    METRICS,
    PLAN,
    REPORT,
    ROBUSTNESS_PNG,
    SAMPLES_PNG,
    SPEC,
    WORST_FIELD_PNG,
    atomic_write_bytes,
    atomic_write_text,
    load_distilled,
    read_json,
)
from ddspec.runtime.report_fields import field_errors_figure, points_figure, worst_field_figure
from ddspec.runtime.report_survival import km_curves_figure
from ddspec.spec.evaluate import is_fraction

MAX_CLASSES = 20
PER_CLASS = 10
STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}img{max-width:100%}"
)


def write_report(out_dir: Path) -> Path:
    """Write ``samples.png``, ``loss.png`` (when there is a history), ``robustness.png`` (when there are
    corruptions or baselines), ``adversarial.png`` (when a metric has curves) and ``report.html`` into the run folder ``out_dir``, deleting a figure of an
    earlier report that this one does not draw; return the report's path."""
    out_dir = Path(out_dir)
    if not (out_dir / DISTILLED).is_file():
        raise SpecError.one(
            "REPORT_NO_RUN", "", f"{out_dir} has no {DISTILLED}", "pass the --out folder of a finished `ddspec run`"
        )
    tensors = load_distilled(out_dir / DISTILLED)
    metrics = _read(out_dir / METRICS, {})
    spec_text = (out_dir / SPEC).read_text(encoding="utf-8") if (out_dir / SPEC).is_file() else ""
    spec = _spec(spec_text)
    figures = {
        SAMPLES_PNG: samples_png(tensors["x"].float().numpy(), tensors["y"].numpy(), spec),
        LOSS_PNG: loss_png(history_rows(_read(out_dir / HISTORY, []))),
        ROBUSTNESS_PNG: robustness_png(metrics),
        ADVERSARIAL_PNG: curves_png(metrics),
        FIELD_ERRORS_PNG: _optional_png(field_errors_figure(metrics, spec)),
        WORST_FIELD_PNG: _optional_png(worst_field_figure(metrics, spec)),
        KM_CURVES_PNG: _optional_png(km_curves_figure(metrics)),
    }
    figures = {name: png for name, png in figures.items() if png is not None}
    for name, png in figures.items():
        atomic_write_bytes(out_dir / name, png)
    for name in FIGURES:
        if name not in figures:
            (out_dir / name).unlink(missing_ok=True)
    page = render_html(_run_name(spec_text, out_dir), metrics, _read(out_dir / PLAN, {}), spec_text, figures)
    atomic_write_text(out_dir / REPORT, page)
    return out_dir / REPORT


def _read(path: Path, default: Any) -> Any:
    return read_json(path) if path.is_file() else default


def history_rows(history: Any) -> list[dict[str, float]]:
    """The rows of ``history.json``: a bare list, or ``{"rows": [...], ...}`` as the runner writes it."""
    return list(history.get("rows", [])) if isinstance(history, dict) else list(history)


def _spec(spec_text: str) -> dict[str, Any]:
    """``spec.yaml`` as a dict (empty when missing or not a mapping)."""
    import yaml

    spec = yaml.safe_load(spec_text) if spec_text else None
    return spec if isinstance(spec, dict) else {}


def _run_name(spec_text: str, out_dir: Path) -> str:
    return str(_spec(spec_text).get("name", out_dir.name))


# -- figures -----------------------------------------------------------------------------------
def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _optional_png(fig: Any | None) -> bytes | None:
    return None if fig is None else _png(fig)


Label = Callable[[int], str]


def strata_of(y: np.ndarray) -> tuple[np.ndarray, Label]:
    """Stratum per sample and its caption: the class for integer labels, argmax_k y_k for soft labels
    (N x K); one stratum for real-valued targets (float N)."""
    if y.ndim == 2:
        return y.argmax(1), "class {}".format
    if np.issubdtype(y.dtype, np.floating):
        return np.zeros(len(y), dtype=np.int64), lambda _: "all rows, by target (low to high)"
    return y.astype(np.int64), "class {}".format


def samples_png(x: np.ndarray, y: np.ndarray, spec: dict[str, Any] | None = None) -> bytes:
    """N x C x H x W: image grid (a row per class); N x C x L: a line panel per class; else a heatmap.
    Rows with real-valued targets (float N) are shown in order of their target; label-free points (targets with
    no columns: PDE collocation points) as points (:func:`ddspec.runtime.report_fields.points_figure`)."""
    if y.ndim == 2 and y.shape[1] == 0:
        return _png(points_figure(x, spec or {}))
    classes, label = strata_of(y)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.floating):
        x = x[np.argsort(y, kind="stable")]
    if x.ndim == 4:
        return _png(_image_grid(x, classes, label))
    if x.ndim == 3:
        return _png(_line_panels(x, classes, label))
    return _png(_heatmap(x.reshape(len(x), -1), classes, label))


def _shown_classes(classes: np.ndarray) -> list[int]:
    return sorted(set(classes.tolist()))[:MAX_CLASSES]


def _image_grid(x: np.ndarray, classes: np.ndarray, label: Label) -> Any:
    """Up to PER_CLASS images per class; all scaled by the set's (min, max); RGB when C = 3, else channel 0."""
    from matplotlib.figure import Figure

    low, high = float(x.min()), float(x.max())
    images = (x - low) / (high - low if high > low else 1.0)
    images = images.transpose(0, 2, 3, 1) if x.shape[1] == 3 else images[:, 0]
    shown = _shown_classes(classes)
    cols = min(PER_CLASS, max(int((classes == c).sum()) for c in shown))
    fig = Figure(figsize=(0.8 * cols, 0.8 * len(shown) + 0.3))
    axes = fig.subplots(len(shown), cols, squeeze=False)
    for row, c in zip(axes, shown):
        members = np.flatnonzero(classes == c)[:cols]
        for j, ax in enumerate(row):
            ax.set_axis_off()
            if j < len(members):
                ax.imshow(images[members[j]], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        row[0].set_title(label(c), fontsize=7, loc="left")
    return fig


def _line_panels(x: np.ndarray, classes: np.ndarray, label: Label) -> Any:
    """One panel per class; every channel of every synthetic sample of the class is a line."""
    from matplotlib.figure import Figure

    shown = _shown_classes(classes)
    cols = min(5, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(3 * cols, 2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, c in zip(axes, shown):
        ax.plot(x[classes == c].reshape(-1, x.shape[-1]).T, linewidth=0.8, alpha=0.7)
        ax.set_title(label(c), fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    return fig


def _heatmap(x: np.ndarray, classes: np.ndarray, label: Label) -> Any:
    """The N x D matrix, rows sorted by class, class boundaries drawn as lines."""
    from matplotlib.figure import Figure

    order = np.argsort(classes, kind="stable")
    sorted_classes = classes[order]
    fig = Figure(figsize=(8, min(8.0, 1 + 0.15 * len(x))), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(x[order], aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax)
    values, starts, counts = np.unique(sorted_classes, return_index=True, return_counts=True)
    for start in starts[1:]:
        ax.axhline(start - 0.5, color="white", linewidth=1)
    ax.set_yticks(starts + (counts - 1) / 2, [label(v) for v in values], fontsize=7)
    ax.set_xlabel("feature")
    return fig


def loss_png(history: list[dict[str, float]]) -> bytes | None:
    """Loss vs iteration (log y when every loss is positive); None without history."""
    rows = [r for r in history if "loss" in r]
    if not rows:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    losses = [r["loss"] for r in rows]
    ax.plot([r["iteration"] for r in rows], losses)
    if min(losses) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    return _png(fig)


def primary_of(metrics: dict[str, Any]) -> str | None:
    """The metric measured on the corrupted test sets (recorded per corruption; accuracy in files written
    before it was), else the first metric; None without metrics."""
    corruptions = metrics.get("corruptions") or {}
    if corruptions:
        return next(iter(corruptions.values())).get("metric", "accuracy")
    return next((k for k, v in metrics.items() if is_stats(v)), None)


def robustness_png(metrics: dict[str, Any]) -> bytes | None:
    """Bars (mean ± std) of the primary metric on the clean and on each corrupted test set, one bar per
    set of figures (D̂, then each baseline); percentages for fractions. None without corruptions or baselines."""
    corruptions = metrics.get("corruptions") or {}
    baselines = metrics.get("baselines") or {}
    primary = primary_of(metrics)
    if not (corruptions or baselines) or primary is None:
        return None
    from matplotlib.figure import Figure

    series = {"distilled": metrics, **baselines}
    groups = (["clean"] if is_stats(metrics.get(primary)) else []) + list(corruptions)
    scale = 100.0 if is_fraction(primary) else 1.0
    fig = Figure(figsize=(1.0 * len(groups) * len(series) + 2, 3), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(series)
    for j, (name, figures) in enumerate(series.items()):
        entries = [figures.get(primary) if g == "clean" else (figures.get("corruptions") or {}).get(g) for g in groups]
        positions = [i + (j - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(positions, [scale * e["mean"] if e else math.nan for e in entries], width,
               yerr=[scale * e["std"] if e else 0.0 for e in entries], label=name)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(f"{primary} (%)" if scale == 100.0 else primary)
    if scale == 100.0:
        ax.set_ylim(0, 100)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return _png(fig)


def _number(key: str) -> float | None:
    try:
        return float(key)
    except ValueError:
        return None


def curves(entry: Any) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """The curves of a metric's entry: per nested group whose keys are all numbers, (x, stats) sorted by x,
    starting with (0, the entry's ``clean`` stats) when it has them and 0 is not a key. Empty for others."""
    if not isinstance(entry, dict):
        return {}
    out = {}
    for group, block in entry.items():
        if isinstance(block, dict) and block and all(_number(k) is not None and is_stats(v) for k, v in block.items()):
            points = sorted((_number(k), v) for k, v in block.items())
            if is_stats(entry.get("clean")) and points[0][0] != 0:
                points.insert(0, (0.0, entry["clean"]))
            out[group] = points
    return out


def curves_png(metrics: dict[str, Any]) -> bytes | None:
    """One panel per metric with curves, one line per group (norm) with error bars (std over the runs),
    dashed lines for the baselines; percentages for fractions. None without curves."""
    shown = {name: curves(entry) for name, entry in metrics.items() if curves(entry)}
    if not shown:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(shown), 3.5), layout="constrained")
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    baselines = metrics.get("baselines") or {}
    for ax, (name, groups) in zip(axes, shown.items()):
        scale = 100.0 if is_fraction(name) else 1.0
        series = {"": groups, **{f" ({b})": curves(figures.get(name)) for b, figures in baselines.items()}}
        for suffix, lines in series.items():
            for group, points in lines.items():
                ax.errorbar([p for p, _ in points], [scale * s["mean"] for _, s in points],
                            yerr=[scale * s["std"] for _, s in points], marker="o", capsize=3,
                            linestyle="--" if suffix else "-", label=f"{group}{suffix}")
        ax.set_xlabel("ε (units of the training inputs' std)")
        ax.set_ylabel(f"{name} (%)" if scale == 100.0 else name)
        if scale == 100.0:
            ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    return _png(fig)


def masking_flags(entry: Any) -> list[str]:
    """``"<norm> ε = <eps> (k of n runs)"`` for every (norm, ε) where some run's ``square_beats_pgd`` is true."""
    runs = entry.get("square_beats_pgd") if isinstance(entry, dict) else None
    if not runs:
        return []
    flagged = {}
    for run in runs:
        for norm, block in run.items():
            for eps, flag in block.items():
                flagged[(norm, eps)] = flagged.get((norm, eps), 0) + bool(flag)
    return [f"{norm} ε = {eps} ({k} of {len(runs)} runs)" for (norm, eps), k in flagged.items() if k]


def _curves_section(metrics: dict[str, Any]) -> str:
    """Per metric with curves: a table row per (group, x) and the gradient-masking warnings."""
    parts = []
    for name, entry in metrics.items():
        groups = curves(entry)
        if not groups:
            continue
        rows = [[group, f"{x:g}", format_stats(s, is_fraction(name)), str(len(s["values"]))]
                for group, points in groups.items() for x, s in points]
        parts += [f"<h2>{html.escape(name)} per ε</h2>", _table(["norm", "ε", "mean ± std", "n"], rows)]
        flags = masking_flags(entry)
        parts += [f'<p class="flag"><b>Gradient masking?</b> the black-box attack broke samples that PGD did not '
                  f"at {html.escape(flag)}.</p>" for flag in flags]
        if not flags and "square_beats_pgd" in entry:
            parts.append("<p>The black-box attack broke no sample that PGD did not, at any ε.</p>")
    return "\n".join(parts)


# -- HTML --------------------------------------------------------------------------------------
def is_stats(value: Any) -> bool:
    """Whether ``value`` is a figure summarized over runs ({mean, std, values})."""
    return isinstance(value, dict) and {"mean", "std", "values"} <= set(value)


def format_stats(entry: dict[str, Any], fraction: bool) -> str:
    """``mean ± std`` — percentages with one decimal for fractions."""
    if fraction:
        return f"{100 * entry['mean']:.1f}% ± {100 * entry['std']:.1f}"
    return f"{entry['mean']:.4g} ± {entry['std']:.2g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table; every cell is escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _params_text(entry: dict[str, Any]) -> str:
    shown = {k: v for k, v in entry.items()
             if k not in ("mean", "std", "values", "metric") and not isinstance(v, (list, dict))}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def _figure_rows(figures: dict[str, dict[str, Any]], beside: dict[str, dict[str, Any]],
                 fraction: Callable[[str], bool]) -> list[list[str]]:
    """One row per stats entry: name, mean ± std, each baseline's mean ± std ("–" where it has none), n,
    parameters; ``fraction(name)`` says whether the entry is shown as a percentage."""
    return [
        [name, format_stats(e, fraction(name)),
         *(format_stats(b[name], fraction(name)) if is_stats(b.get(name)) else "–" for b in beside.values()),
         str(len(e["values"])), _params_text(e)]
        for name, e in figures.items() if is_stats(e)
    ]


def _cluster_table(entry: dict[str, Any]) -> str:
    """Per-cluster size and accuracy (mean over runs) of cluster_min."""
    runs = entry.get("cluster_accuracies") or []
    if not runs:
        return ""
    sizes = entry["cluster_sizes"][0]
    means = np.mean(np.asarray(runs, dtype=float), axis=0)
    rows = [[str(g), str(n), f"{100 * a:.1f}%"] for g, (n, a) in enumerate(zip(sizes, means))]
    return "<h3>Per-cluster accuracy (mean over runs)</h3>" + _table(["cluster", "test samples", "accuracy"], rows)


def _metrics_section(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "<h2>Metrics</h2><p>No evaluation recorded (no metrics.json).</p>"
    load_plugins()  # plugin metrics declare their own capabilities
    baselines = metrics.get("baselines") or {}
    header = ["metric", "mean ± std", *(f"baseline {b}" for b in baselines), "n", "parameters"]
    parts = ["<h2>Metrics</h2>", _table(header, _figure_rows(metrics, baselines, is_fraction))]
    corruptions = metrics.get("corruptions") or {}
    if corruptions:
        primary = primary_of(metrics) or "accuracy"
        beside = {b: figures.get("corruptions") or {} for b, figures in baselines.items()}
        rows = _figure_rows(corruptions, beside, lambda _: is_fraction(primary))
        parts += [f"<h2>Corruptions ({html.escape(primary)})</h2>", _table(["corruption", *header[1:]], rows)]
    if is_stats(metrics.get("cluster_min")):
        parts.append(_cluster_table(metrics["cluster_min"]))
    parts.append(_curves_section(metrics))
    per_model = metrics.get("per_model") or {}
    if per_model:
        names = [k for k, v in next(iter(per_model.values())).items() if is_stats(v)]
        rows = [[key, *(format_stats(block[n], is_fraction(n)) for n in names)] for key, block in per_model.items()]
        parts += ["<h2>Per model</h2>", _table(["model", *names], rows)]
    other = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and k != "std_ddof"}
    if other:
        parts += ["<h2>Other figures</h2>", _table(["name", "value"], [[k, str(v)] for k, v in other.items()])]
    parts.append("<p>std: sample standard deviation (ddof = 1) over the runs; 0 for a single run. "
                 "Runs are ordered model-major, then seed. Baselines: the same protocol trained on random real "
                 "samples (as many per class as the distilled set) or on the full real training set.</p>")
    protocol = {"protocol": metrics.get("protocol"), "seeds": metrics.get("seeds")}
    parts += ["<h2>Evaluation protocol</h2>", _pre(json.dumps(protocol, indent=2))]
    return "\n".join(parts)


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    caption = html.escape(name)
    image = f'<img alt="{caption}" src="data:image/png;base64,{data}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def render_html(
    name: str, metrics: dict[str, Any], plan: dict[str, Any], spec_text: str, figures: dict[str, bytes]
) -> str:
    """The self-contained report page."""
    plan_text = f"backend: {plan.get('backend', '?')}\n\n{plan.get('explain', '')}".rstrip()
    body = [
        f"<h1>ddspec run: {html.escape(name)}</h1>",
        "<h2>Distilled data</h2>" + _img(SAMPLES_PNG, figures[SAMPLES_PNG]),
        _metrics_section(metrics),
        *(f"<h2>{title}</h2>" + _img(key, figures[key]) for key, title in
          ((ROBUSTNESS_PNG, "Clean and corrupted test sets"), (ADVERSARIAL_PNG, "Robust accuracy vs ε"),
           (FIELD_ERRORS_PNG, "relL2 per held-out boundary condition"),
           (WORST_FIELD_PNG, "Error field of the worst boundary condition"),
           (KM_CURVES_PNG, "Kaplan–Meier curves: real, distilled, random subsets"), (LOSS_PNG, "Loss")) if key in figures),
        "<h2>Plan</h2>" + _pre(plan_text),
        "<h2>Resolved spec</h2>" + _pre(spec_text or "(no spec.yaml)"),
    ]
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(name)} — ddspec report</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
