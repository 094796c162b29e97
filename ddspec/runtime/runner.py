"""Run a plan end to end: distill → save → evaluate → report, resumable at every stage.

Stages leave files behind (DESIGN §5), so a run killed at any point continues with
``resume=True``: during distillation from ``checkpoint.pt``; after it from ``distilled.safetensors``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddspec.errors import SpecError
from ddspec.registry import load_backends
from ddspec.runtime import artifacts as art

if TYPE_CHECKING:
    import torch

    from ddspec.compiler.plan import Plan


@dataclass
class Result:
    """A finished run: the output folder, the distilled tensors and the metrics."""

    out: Path
    x: torch.Tensor
    y: torch.Tensor
    metrics: dict[str, Any]


def prepare_out(plan: Plan, out: Path, resume: bool) -> None:
    """Refuse to overwrite a run; on resume, refuse a different spec."""
    started = (out / art.CHECKPOINT).exists() or (out / art.DISTILLED).exists()
    if started and not resume:
        raise SpecError.one("RUN_EXISTS", "--out", f"{out} already holds a run",
                            "continue it with --resume, or choose another --out")
    if resume and not started:
        raise SpecError.one("NOTHING_TO_RESUME", "--out", f"{out} holds no checkpoint or distilled data",
                            "drop --resume to start the run")
    if resume and (out / art.SPEC).exists():
        from ddspec.spec.loading import load

        if load(out / art.SPEC) != plan.problem:
            raise SpecError.one("RESUME_SPEC_CHANGED", "--resume", f"the spec differs from the one saved in {out}",
                                "resume with the same spec and --set values, or start a new --out")
    art.atomic_write_text(out / art.SPEC, plan.problem.to_yaml())
    art.atomic_write_json(out / art.PLAN, plan.to_json())


def run_plan(plan: Plan, out: Path, resume: bool = False) -> Result:
    """Distill with the plan's backend, write artifacts, evaluate, write the report."""
    from ddspec.runtime.context import RunContext
    from ddspec.runtime.device import seed_everything, select_device

    out.mkdir(parents=True, exist_ok=True)
    prepare_out(plan, out, resume)
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
    from ddspec.registry import DATA

    return DATA.build(problem.data).to(device)


def reevaluate(out: Path, overrides: list[str]) -> dict[str, Any]:
    """``ddspec evaluate DIR``: re-run the evaluation of a finished run (``--set evaluate...`` allowed)."""
    from ddspec.runtime.device import seed_everything, select_device
    from ddspec.spec.loading import load

    if not (out / art.DISTILLED).exists():
        raise SpecError.one("NO_ARTIFACT", "DIR", f"{out} has no {art.DISTILLED}", "give the --out folder of a finished run")
    bad = [o for o in overrides if not o.startswith(("evaluate.", "evaluate=", "runtime."))]
    if bad:
        raise SpecError.one("BAD_OVERRIDE", bad[0].partition("=")[0], "only evaluate.* and runtime.* can change here",
                            "distill again with `ddspec run` to change anything else")
    problem = load(out / art.SPEC, overrides)
    art.atomic_write_text(out / art.SPEC, problem.to_yaml())
    device = select_device(problem.runtime.device)
    seed_everything(problem.runtime.seed, problem.runtime.threads)
    tensors = art.load_distilled(out / art.DISTILLED)
    history = out / art.HISTORY
    seconds = art.read_json(history)["distill_seconds"] if history.exists() else 0.0
    backend = art.read_json(out / art.PLAN)["backend"]
    return evaluate_into(out, backend, problem, tensors["x"], tensors["y"], _load_data(problem, device), device, seconds)
