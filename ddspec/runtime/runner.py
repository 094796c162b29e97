"""Run a plan end to end: distill → save → evaluate → report, resumable at every stage.

Stages leave files behind, so a run killed at any point continues with ``resume=True``: during
distillation from ``checkpoint.pt``; after it from ``distilled.safetensors``. Every failure inside a run
is a :class:`~ddspec.errors.DDSpecError` (:func:`run_errors`); files are written atomically, so a failed
run leaves whole files only.

Under torchrun every rank runs this (:mod:`ddspec.runtime.distributed`): rank 0 alone prepares the folder and
writes the artifacts, each write once every rank has agreed that the work before it succeeded; the other ranks
read what it wrote (a checkpoint to resume from) only after that agreement.
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

from ddspec.components.training.experts import EXPERTS, TEACHER
from ddspec.errors import DDSpecError, RunError, SpecError, internal_error
from ddspec.registry import load_backends
from ddspec.runtime import artifacts as art

if TYPE_CHECKING:
    import torch

    from ddspec.compiler.plan import Plan
    from ddspec.runtime.distributed import Ranks

#: The files a run writes into its folder: what ``overwrite`` deletes, and what a new run deletes when an
#: earlier one stopped before its first checkpoint (the teacher and expert caches of
#: :mod:`ddspec.components.training.experts` and the report's figures included, so none is reused).
ARTIFACTS = (art.CHECKPOINT, art.DISTILLED, art.HISTORY, art.METRICS, art.REPORT, *art.FIGURES, art.PLAN, art.SPEC,
             *art.BACKEND_FILES, TEACHER, EXPERTS)


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
    refuse a different spec. A new run deletes what an earlier one left before its first checkpoint (the
    :data:`ARTIFACTS`: a teacher or expert cache of another spec must not be reused). Write ``spec.yaml``
    (paths as written) and ``plan.json`` with ``base_dir``: the folder relative data paths are resolved
    against, relative to the run folder."""
    if resume and overwrite:
        raise SpecError.one("BAD_ARGUMENTS", "--overwrite", "--resume continues a run, --overwrite replaces it",
                            "give one of them")
    if overwrite:
        _remove_artifacts(out)
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
    if not resume:
        _remove_artifacts(out)  # leftovers of a run that stopped before its first checkpoint
    if resume and (out / art.SPEC).exists():
        from ddspec.spec.loading import load

        if load(out / art.SPEC).model_dump(mode="json") != plan.problem.model_dump(mode="json"):
            raise SpecError.one("RESUME_SPEC_CHANGED", "--resume", f"the spec differs from the one saved in {out}",
                                "resume with the same spec and --set values, or start a new --out")
    from ddspec.spec.base import base_dir_of

    base = base_dir_of(plan.problem) or Path.cwd()
    art.atomic_write_text(out / art.SPEC, plan.problem.to_yaml())
    art.atomic_write_json(out / art.PLAN, {**plan.to_json(), "base_dir": os.path.relpath(base, out.resolve())})


def _remove_artifacts(out: Path) -> None:
    for name in ARTIFACTS:
        (out / name).unlink(missing_ok=True)


def make_out(out: Path) -> None:
    """Create the run folder ``out`` (and its parents); SpecError ``OUT_NOT_A_FOLDER`` when it, or a folder
    above it, is a file."""
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise SpecError.one("OUT_NOT_A_FOLDER", "--out", f"{folder} is a file, not a folder",
                                "give --out a folder: a new one, or the folder of an earlier run")
    out.mkdir(parents=True, exist_ok=True)


def run_plan(plan: Plan, out: Path, resume: bool = False, overwrite: bool = False) -> Result:
    """Distill with the plan's backend, write artifacts, evaluate, write the report (see :func:`prepare_out`
    for ``resume`` and ``overwrite``; failures as in :func:`run_errors`). Under torchrun: the ranks join first
    (refused when the backend's units would leave one idle), and rank 0 prepares the folder."""
    from ddspec.runtime import distributed

    with run_errors():
        ranks = distributed.start(plan.problem.runtime.distributed, plan.problem.runtime.device)
        try:
            ranks.check_units(load_backends()[plan.backend].parallel(plan.analysis))
            ranks.agree(lambda: _prepare(plan, out, resume, overwrite) if ranks.writer else None, "preparing --out")
            return _run(plan, out, resume, ranks)
        finally:
            ranks.close()


def _prepare(plan: Plan, out: Path, resume: bool, overwrite: bool) -> None:
    make_out(out)
    prepare_out(plan, out, resume, overwrite)


def _run(plan: Plan, out: Path, resume: bool, ranks: Ranks) -> Result:
    from ddspec.runtime.context import RunContext

    problem = plan.problem
    ctx = RunContext.start(problem, plan.analysis, out, resume=resume, ranks=ranks)
    data, device = ctx.data, ctx.device
    if (out / art.DISTILLED).exists():
        tensors = art.load_distilled(out / art.DISTILLED)
        x, y = tensors["x"], tensors["y"]
        seconds = art.read_json(out / art.HISTORY)["distill_seconds"]
    else:
        start = time.perf_counter()
        distilled = load_backends()[plan.backend].run(ctx)
        looped = sum(loop.elapsed for loop in ctx.loops) + ctx.prepare_seconds
        seconds = looped if ctx.loops else time.perf_counter() - start
        x, y = distilled.x.detach().cpu(), distilled.y.detach().cpu()
        history = [row for loop in ctx.loops for row in loop.history]

        def save() -> None:
            art.atomic_write_json(out / art.HISTORY, {"distill_seconds": seconds,
                                                      "prepare_seconds": ctx.prepare_seconds, "rows": history})
            art.save_distilled(out / art.DISTILLED, x, y, distilled.extras)
            (out / art.CHECKPOINT).unlink(missing_ok=True)
        ranks.agree(lambda: save() if ranks.writer else None, "saving the distilled data")
    metrics = evaluate_into(out, plan.backend, problem, x, y, data, device, seconds, ranks=ranks)
    return Result(out, x, y, metrics)


def evaluate_into(out: Path, backend: str, problem: Any, x: Any, y: Any, data: Any, device: Any, seconds: float,
                  spec: bool = False, ranks: Ranks | None = None) -> dict[str, Any]:
    """Evaluate the distilled data (the protocol, its runs split across ``ranks``, then the backend's extra
    figures); only then write ``spec.yaml`` (with ``spec``: the problem evaluated), ``metrics.json`` and the report
    (rank 0). Return the metrics."""
    from ddspec.evaluate.protocol import evaluate_distilled
    from ddspec.runtime.distributed import Ranks
    from ddspec.runtime.report import write_report

    ranks = ranks or Ranks()
    metrics = evaluate_distilled(x.to(device), y.to(device), data, problem, device,
                                 progress=problem.runtime.progress and ranks.writer, ranks=ranks)
    metrics.update(load_backends()[backend].extra_metrics(problem, data, x, y))
    metrics["distill_seconds"] = seconds

    def write() -> None:
        if spec:
            art.atomic_write_text(out / art.SPEC, problem.to_yaml())
        art.atomic_write_json(out / art.METRICS, metrics)
        write_report(out)
    ranks.agree(lambda: write() if ranks.writer else None, "writing the metrics and the report")
    return metrics


def _load_data(problem: Any, device: Any) -> Any:
    """The problem's Dataset, checked when loaded (:func:`~ddspec.components.data.load_dataset`), on ``device``."""
    from ddspec.components.data import load_dataset

    return load_dataset(problem.data).to(device)


#: The sections ``ddspec evaluate DIR --set`` may change (whole, or a field of them).
REEVALUATE_SECTIONS = ("evaluate", "runtime")


def reevaluate(out: Path, overrides: list[str]) -> dict[str, Any]:
    """``ddspec evaluate DIR``: re-run the evaluation of a finished run. ``--set`` may change ``evaluate.*`` and
    ``runtime.*`` (device, threads, progress), not ``runtime.seed``: it drove the distillation that made the
    saved data. ``spec.yaml`` is rewritten with the changes once the evaluation has succeeded. Relative data
    paths of the saved spec are resolved against the ``base_dir`` recorded in ``plan.json``. Under torchrun the
    (model, seed) runs are split across the ranks as in ``ddspec run``, and rank 0 writes."""
    from ddspec.runtime import distributed
    from ddspec.runtime.device import seed_everything, select_device
    from ddspec.spec.loading import load

    for name in (art.DISTILLED, art.PLAN, art.SPEC):
        if not (out / name).is_file():
            raise SpecError.one("NO_ARTIFACT", "DIR", f"{out} has no {name}", "give the --out folder of a finished run")
    sections = tuple(f"{s}{sep}" for s in REEVALUATE_SECTIONS for sep in ".=")
    bad = [o for o in overrides if not o.strip().startswith(sections)]
    if bad:
        raise SpecError.one("BAD_OVERRIDE", bad[0].partition("=")[0], "only evaluate.* and runtime.* can change here",
                            "distill again with `ddspec run` to change anything else")
    with run_errors():
        saved = _read_plan(out)
        before = load(out / art.SPEC)
        problem = load(out / art.SPEC, overrides)
        if problem.runtime.seed != before.runtime.seed:
            raise SpecError.one("BAD_OVERRIDE", "runtime.seed",
                                "runtime.seed drove the distillation that made the saved data; it cannot change here",
                                "keep runtime.seed, or distill again with `ddspec run --set runtime.seed=...`")
        if load_backends()[saved["backend"]].device_findings(problem):
            problem = problem.model_copy(update={"runtime": problem.runtime.model_copy(update={"device": "cpu"})})
        ranks = distributed.start(problem.runtime.distributed, problem.runtime.device)
        try:
            data = _load_data(problem, device := ranks.device(select_device(problem.runtime.device)))
            seed_everything(problem.runtime.seed, problem.runtime.threads)
            tensors = art.load_distilled(out / art.DISTILLED)
            history = out / art.HISTORY
            seconds = art.read_json(history)["distill_seconds"] if history.exists() else 0.0
            return evaluate_into(out, saved["backend"], problem, tensors["x"], tensors["y"], data, device, seconds,
                                 spec=True, ranks=ranks)
        finally:
            ranks.close()


def _read_plan(out: Path) -> dict[str, Any]:
    """``plan.json`` of the run folder ``out``; SpecError ``ARTIFACT_INVALID`` when it is not a plan."""
    try:
        saved = art.read_json(out / art.PLAN)
    except ValueError as exc:
        saved = exc
    if not isinstance(saved, dict) or not isinstance(saved.get("backend"), str):
        raise SpecError.one("ARTIFACT_INVALID", "DIR", f"{out / art.PLAN} is not a plan written by `ddspec run`",
                            "run the spec again into this folder with `ddspec run --overwrite`")
    return saved
