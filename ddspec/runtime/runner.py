"""Run a plan end to end: distill → save → evaluate → report, resumable at every stage.

Stages leave files behind, so a run killed at any point continues with ``resume=True``: during
distillation from ``checkpoint.pt``; after it from ``distilled.safetensors``. Every failure inside a run
is a :class:`~ddspec.errors.DDSpecError` (:func:`run_errors`); files are written atomically, so a failed
run leaves whole files only.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddspec.errors import DDSpecError, RunError, SpecError, internal_error
from ddspec.registry import load_backends
from ddspec.runtime import artifacts as art

if TYPE_CHECKING:
    import torch

    from ddspec.compiler.plan import Plan

#: The files a run writes into its folder (what ``overwrite`` deletes).
ARTIFACTS = (art.CHECKPOINT, art.DISTILLED, art.HISTORY, art.METRICS, art.REPORT, art.PLAN, art.SPEC)


@dataclass
class Result:
    """A finished run: the output folder, the distilled tensors and the metrics."""

    out: Path
    x: torch.Tensor
    y: torch.Tensor
    metrics: dict[str, Any]


def default_out(problem: Any, root: Path = Path("runs")) -> Path:
    """``runs/<name>``: the run folder of a spec without ``--out`` (characters other than letters, digits,
    ``.``, ``_`` and ``-`` in ``name`` become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", problem.name).strip(".") or "_"
    return root / name


@contextmanager
def run_errors() -> Iterator[None]:
    """Turn every exception inside a run into a DDSpecError: SpecError and RunError (with the components'
    :class:`~ddspec.errors.RunFailure` subclasses) pass; running out of memory → RunError ``OUT_OF_MEMORY``,
    an OSError → ``IO_FAILED``, anything else → ``INTERNAL``; each raised from the original exception,
    whose traceback ``ddspec --debug`` prints."""
    try:
        yield
    except DDSpecError:
        raise
    except Exception as exc:
        raise _as_run_error(exc) from exc


def _as_run_error(exc: Exception) -> RunError:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return RunError.one("OUT_OF_MEMORY", "runtime.device", f"out of memory ({type(exc).__name__}: {exc})",
                            "lower synthetic.per_class or the batch sizes (`ddspec explain` shows the estimated "
                            "peak), or use a device with more memory")
    if isinstance(exc, OSError):
        return RunError.one("IO_FAILED", "", f"{type(exc).__name__}: {exc}",
                            "check that the run folder is writable, the disk has space and the data files are readable")
    return internal_error(exc)


def prepare_out(plan: Plan, out: Path, resume: bool, overwrite: bool = False) -> None:
    """Refuse to overwrite a run unless ``overwrite`` (which deletes its :data:`ARTIFACTS` first); on resume,
    refuse a different spec. Write ``spec.yaml`` (paths as written) and ``plan.json`` with ``base_dir``: the
    folder relative data paths are resolved against, relative to the run folder."""
    if resume and overwrite:
        raise SpecError.one("BAD_ARGUMENTS", "--overwrite", "--resume continues a run, --overwrite replaces it",
                            "give one of them")
    if overwrite:
        for name in ARTIFACTS:
            (out / name).unlink(missing_ok=True)
    started = (out / art.CHECKPOINT).exists() or (out / art.DISTILLED).exists()
    if started and not resume:
        if (out / art.METRICS).exists():
            raise SpecError.one("RUN_EXISTS", "--out", f"{out} already holds a finished run",
                                "choose another --out, or add --overwrite to replace it (its artifacts are deleted)")
        raise SpecError.one("RUN_INTERRUPTED", "--out", f"{out} holds an unfinished run",
                            "continue it with --resume, or add --overwrite to start it again")
    if resume and not started:
        raise SpecError.one("NOTHING_TO_RESUME", "--out", f"{out} holds no checkpoint or distilled data",
                            "drop --resume to start the run")
    if resume and (out / art.SPEC).exists():
        from ddspec.spec.loading import load

        if load(out / art.SPEC).model_dump(mode="json") != plan.problem.model_dump(mode="json"):
            raise SpecError.one("RESUME_SPEC_CHANGED", "--resume", f"the spec differs from the one saved in {out}",
                                "resume with the same spec and --set values, or start a new --out")
    from ddspec.spec.base import base_dir_of

    base = base_dir_of(plan.problem) or Path.cwd()
    art.atomic_write_text(out / art.SPEC, plan.problem.to_yaml())
    art.atomic_write_json(out / art.PLAN, {**plan.to_json(), "base_dir": os.path.relpath(base, out.resolve())})


def run_plan(plan: Plan, out: Path, resume: bool = False, overwrite: bool = False) -> Result:
    """Distill with the plan's backend, write artifacts, evaluate, write the report (see :func:`prepare_out`
    for ``resume`` and ``overwrite``; failures as in :func:`run_errors`)."""
    out.mkdir(parents=True, exist_ok=True)
    prepare_out(plan, out, resume, overwrite)
    with run_errors():
        return _run(plan, out, resume)


def _run(plan: Plan, out: Path, resume: bool) -> Result:
    from ddspec.runtime.context import RunContext
    from ddspec.runtime.device import seed_everything, select_device

    problem = plan.problem
    device = select_device(problem.runtime.device)
    generator = seed_everything(problem.runtime.seed, problem.runtime.threads)
    data = _load_data(problem, device)
    if (out / art.DISTILLED).exists():
        tensors = art.load_distilled(out / art.DISTILLED)
        x, y = tensors["x"], tensors["y"]
        seconds = art.read_json(out / art.HISTORY)["distill_seconds"]
    else:
        ctx = RunContext(problem, plan.analysis, data, device, out, resume=resume, generator=generator)
        start = time.perf_counter()
        distilled = load_backends()[plan.backend].run(ctx)
        looped = sum(loop.elapsed for loop in ctx.loops) + ctx.prepare_seconds
        seconds = looped if ctx.loops else time.perf_counter() - start
        x, y = distilled.x.detach().cpu(), distilled.y.detach().cpu()
        history = [row for loop in ctx.loops for row in loop.history]
        art.atomic_write_json(out / art.HISTORY, {"distill_seconds": seconds, "prepare_seconds": ctx.prepare_seconds,
                                                  "rows": history})
        art.save_distilled(out / art.DISTILLED, x, y, distilled.extras)
        (out / art.CHECKPOINT).unlink(missing_ok=True)
    metrics = evaluate_into(out, plan.backend, problem, x, y, data, device, seconds)
    return Result(out, x, y, metrics)


def evaluate_into(out: Path, backend: str, problem: Any, x: Any, y: Any, data: Any, device: Any, seconds: float
                  ) -> dict[str, Any]:
    """Evaluate the distilled data (the protocol, then the backend's extra figures), write ``metrics.json``
    and the report; return the metrics."""
    from ddspec.evaluate.protocol import evaluate_distilled
    from ddspec.runtime.report import write_report

    metrics = evaluate_distilled(x.to(device), y.to(device), data, problem, device, progress=problem.runtime.progress)
    metrics.update(load_backends()[backend].extra_metrics(problem, data, x, y))
    metrics["distill_seconds"] = seconds
    art.atomic_write_json(out / art.METRICS, metrics)
    write_report(out)
    return metrics


def _load_data(problem: Any, device: Any) -> Any:
    """The problem's Dataset, checked when loaded (:func:`~ddspec.components.data.load_dataset`), on ``device``."""
    from ddspec.components.data import load_dataset

    return load_dataset(problem.data).to(device)


def reevaluate(out: Path, overrides: list[str]) -> dict[str, Any]:
    """``ddspec evaluate DIR``: re-run the evaluation of a finished run (``--set evaluate...`` allowed). Relative
    data paths of the saved spec are resolved against the ``base_dir`` recorded in ``plan.json``."""
    from ddspec.runtime.device import seed_everything, select_device
    from ddspec.spec.loading import load

    if not (out / art.DISTILLED).exists():
        raise SpecError.one("NO_ARTIFACT", "DIR", f"{out} has no {art.DISTILLED}",
                            "give the --out folder of a finished run")
    bad = [o for o in overrides if not o.startswith(("evaluate.", "evaluate=", "runtime."))]
    if bad:
        raise SpecError.one("BAD_OVERRIDE", bad[0].partition("=")[0], "only evaluate.* and runtime.* can change here",
                            "distill again with `ddspec run` to change anything else")
    saved = art.read_json(out / art.PLAN)
    base = saved.get("base_dir")
    problem = load(out / art.SPEC, overrides, base_dir=None if base is None else (out / base).resolve())
    with run_errors():
        data = _load_data(problem, device := select_device(problem.runtime.device))
        art.atomic_write_text(out / art.SPEC, problem.to_yaml())
        seed_everything(problem.runtime.seed, problem.runtime.threads)
        tensors = art.load_distilled(out / art.DISTILLED)
        history = out / art.HISTORY
        seconds = art.read_json(history)["distill_seconds"] if history.exists() else 0.0
        return evaluate_into(out, saved["backend"], problem, tensors["x"], tensors["y"], data, device, seconds)
