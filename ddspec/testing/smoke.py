"""``run_smoke``: shrink a spec, run it, evaluate it, and check the artifact contract of its run folder
(docs/concepts.md#artifacts) with :func:`check_artifacts`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ddspec.errors import DDSpecError
from ddspec.testing.errors import ArtifactContractBroken, SmokeRunFailed, label
from ddspec.testing.shrink import shrink
from ddspec.testing.wellposed import Spec


def run_smoke(spec: Spec, out: str | Path) -> Any:
    """Shrink ``spec`` (:func:`~ddspec.testing.shrink`), run it into the folder ``out`` (e.g. pytest's
    ``tmp_path``), evaluate it, and check the artifact contract (:func:`check_artifacts`); return the run's
    :class:`~ddspec.runtime.runner.Result`. A ddspec error during the run fails with :class:`SmokeRunFailed`."""
    from ddspec.compiler.plan import compile

    plan = compile(shrink(spec))
    try:
        result = plan.run(out)
    except DDSpecError as err:
        raise SmokeRunFailed(f"the smoke run of {label(spec)} (backend {plan.backend}) failed:\n{err.render()}") from err
    check_artifacts(out, plan.problem)
    return result


def check_artifacts(out: str | Path, problem: Any = None) -> None:
    """Check the run folder ``out`` of a finished run against the artifact contract: the files are there and no
    checkpoint is left; ``spec.yaml`` validates, round-trips and (given the run's resolved ``problem``) equals it;
    the distilled tensors are finite, ``x`` of the data's input shape and ``y`` of its targets' shape, one row per
    synthetic sample; the history has one finite row per outer iteration; every requested metric (and corruption,
    and baseline) is present with one finite value per evaluated model and seed, fractions in [0, 1]. Fails with
    :class:`ArtifactContractBroken` listing every breach."""
    from ddspec.runtime import artifacts as art

    out = Path(out)
    problems: list[str] = []
    required = [art.DISTILLED, art.SPEC, art.PLAN, art.HISTORY, art.METRICS, art.REPORT]
    problems += [f"{name} is missing" for name in required if not (out / name).is_file()]
    if (out / art.CHECKPOINT).exists():
        problems.append(f"{art.CHECKPOINT} was left behind (a finished run deletes it)")
    if not problems:
        saved = _spec(out, problem, problems)
        if saved is not None:
            info = saved.data.describe()
            _tensors(art.load_distilled(out / art.DISTILLED), saved, info, problems)
            _history(art.read_json(out / art.HISTORY), saved, problems)
            _metrics(art.read_json(out / art.METRICS), saved, info, problems)
    if problems:
        raise ArtifactContractBroken(f"the run folder {out} breaks the artifact contract:\n" +
                                     "\n".join(f"  - {p}" for p in problems), problems)


def _spec(out: Path, problem: Any, problems: list[str]) -> Any:
    """The saved spec, if it validates, round-trips (dumping it gives the file back) and equals ``problem``."""
    from ddspec.runtime import artifacts as art
    from ddspec.spec.loading import load

    text = (out / art.SPEC).read_text(encoding="utf-8")
    try:
        saved = load(out / art.SPEC)
    except DDSpecError as err:
        problems.append(f"{art.SPEC} does not validate:\n{err.render()}")
        return None
    if saved.to_yaml() != text:
        problems.append(f"{art.SPEC} does not round-trip: loading and dumping it gives another text")
    if problem is not None and saved.model_dump(mode="json") != problem.model_dump(mode="json"):
        problems.append(f"{art.SPEC} is not the problem that ran")
    return saved


def _tensors(tensors: dict[str, Any], problem: Any, info: Any, problems: list[str]) -> None:
    """x: N x input shape; y: N class indices or N x K rows (classes), N or N x T values (real targets); all finite."""
    n = sum(problem.synthetic.counts(max(info.num_classes, 1)))
    x, y = tensors["x"], tensors["y"]
    if tuple(x.shape) != (n, *info.input_shape):
        problems.append(f"x has shape {tuple(x.shape)}, not {(n, *info.input_shape)} (synthetic samples x input shape)")
    if info.targets in ("classes", "real"):
        k = info.num_outputs
        shapes = [(n,), (n, k)]
        if tuple(y.shape) not in shapes:
            problems.append(f"y has shape {tuple(y.shape)}, not one of {shapes}")
        elif info.targets == "classes" and y.dim() == 1:
            if y.is_floating_point() or not bool(((y >= 0) & (y < k)).all()):
                problems.append(f"y holds {y.dtype} values outside the class indices 0..{k - 1}")
        elif not y.is_floating_point():
            problems.append(f"y is {y.dtype}, not float ({info.targets} targets as rows)")
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(t.isfinite().all()):
            bad = int((~t.isfinite()).sum())
            problems.append(f"distilled tensor `{name}` holds {bad} non-finite value(s) (NaN or inf)")


def _history(history: dict[str, Any], problem: Any, problems: list[str]) -> None:
    """One row per outer iteration, 0..T-1 (backends with iterations), every value finite."""
    rows = history.get("rows", [])
    iterations = problem.optimize.outer_iterations()
    if rows and [r["iteration"] for r in rows] != list(range(len(rows))):
        problems.append("history.json's rows are not iterations 0, 1, 2, ...")
    if rows and iterations is not None and len(rows) != iterations:
        problems.append(f"history.json has {len(rows)} rows for optimize.iterations = {iterations}")
    bad = [(r["iteration"], k) for r in rows for k, v in r.items() if not math.isfinite(v)]
    if bad:
        problems.append(f"history.json holds non-finite values (iteration, name): {bad[:5]}")


def _metrics(metrics: dict[str, Any], problem: Any, info: Any, problems: list[str]) -> None:
    """Every requested metric (or the targets' defaults), corruption and baseline, each with one finite value per
    (model, seed) run; fractions in [0, 1]."""
    from ddspec.spec.evaluate import is_fraction, primary_metric

    ev = problem.evaluate
    if metrics.get("seeds") != list(ev.seeds):
        problems.append(f"metrics.json's seeds {metrics.get('seeds')} are not evaluate.seeds {list(ev.seeds)}")
    runs = len(ev.seeds) * max(len(ev.models), 1)
    kinds = [m.kind for m in ev.metric_specs(info.targets)]
    primary = primary_metric(info.targets).kind if info.targets in ("classes", "real") else None
    corruptions = [c.kind for c in ev.corruptions]
    missing = sorted(set(ev.baselines) - set(metrics.get("baselines", {})))
    if missing:
        problems.append(f"metrics.json lacks the baselines {missing}")
    for where, figures in [("", metrics), *((f"baselines.{b}.", metrics["baselines"][b]) for b in ev.baselines
                                            if b not in missing)]:
        entries = [(f"{where}{k}", k, figures.get(k)) for k in kinds]
        entries += [(f"{where}corruptions.{c}", primary, figures.get("corruptions", {}).get(c)) for c in corruptions]
        for name, kind, entry in entries:
            if not isinstance(entry, dict) or "values" not in entry:
                problems.append(f"metrics.json lacks `{name}`")
                continue
            values = [entry.get("mean"), *entry["values"]]
            if len(entry["values"]) != runs:
                problems.append(f"`{name}` has {len(entry['values'])} values for {runs} (model, seed) runs")
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                problems.append(f"`{name}` holds a non-finite value: {values}")
            elif kind is not None and is_fraction(kind) and not all(0.0 <= v <= 1.0 for v in values):
                problems.append(f"`{name}` is a fraction but holds values outside [0, 1]: {values}")
