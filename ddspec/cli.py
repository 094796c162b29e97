"""``ddspec validate | explain | run | evaluate | report | schema``.

Exit codes: 0 success; 2 invalid spec, data or arguments (the message names the spec path and a fix,
no traceback); 1 the run failed (divergence, a solver, I/O, interrupted — resumable with ``--resume``;
an unexpected exception is reported as ``INTERNAL``), or a plugin failed to load (``PLUGIN_FAILED``, any
command). ``--debug`` adds the traceback.

Under torchrun (docs/distributed.md) rank 0 prints the results and the errors; another rank prints an error of
its own, prefixed ``[rank r]``, but not a spec error (every rank finds the same one) nor ``RANK_FAILED`` (its
failure already reported to rank 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ddspec.errors import DDSpecError, RankFailed, SpecError, format_traceback, internal_error
from ddspec.spec.distributed import launched_rank


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its usage line
        self.print_usage(sys.stderr)
        self.exit(2, f"ddspec: invalid arguments: {message}\n")


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="path to a spec YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a field, e.g. --set optimize.iterations=200 (repeatable; value parsed as YAML)")


def _plan(args: argparse.Namespace) -> Any:
    from ddspec.compiler.plan import compile
    from ddspec.spec.loading import load

    return compile(load(args.spec, args.overrides))


def cmd_validate(args: argparse.Namespace) -> int:
    plan = _plan(args)
    for note in plan.notes:
        print(f"note: [{note.code}] {note.path}: {note.message}")
    print(f"ok: {args.spec} is valid and well posed (backend: {plan.backend})")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    plan = _plan(args)
    plan.ranks = args.ranks
    print(json.dumps(plan.to_json(), indent=2) if args.json else plan.explain())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ddspec.runtime.runner import default_out, run_plan

    plan = _plan(args)
    out = Path(args.out) if args.out is not None else default_out(plan.problem)
    result = run_plan(plan, out, resume=args.resume, overwrite=args.overwrite)
    if launched_rank() == 0:
        _print_metrics(result.metrics)
        print(f"artifacts: {result.out}  (report: {result.out / 'report.html'})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ddspec.runtime.runner import reevaluate

    metrics = reevaluate(Path(args.dir), args.overrides)
    if launched_rank() == 0:
        _print_metrics(metrics)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ddspec.runtime.artifacts import METRICS
    from ddspec.runtime.report import write_report

    out = Path(args.dir)
    if not (out / METRICS).exists():
        raise SpecError.one("NO_ARTIFACT", "DIR", f"{out} has no {METRICS}", "give the --out folder of a finished run")
    print(f"report: {write_report(out)}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(schema_json())
    return 0


def schema_json() -> str:
    """The JSON Schema of the spec (what ``schemas/ddspec.schema.json`` holds): the Problem model of the
    registries with the plugins loaded; the registered backends' names as examples of ``backend``."""
    from ddspec.registry import load_backends
    from ddspec.spec.problem import problem_model

    schema = problem_model().model_json_schema()
    schema["properties"]["backend"]["examples"] = ["auto", *sorted(load_backends())]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ddspec problem"
    return json.dumps(schema, indent=2, ensure_ascii=False)


def _print_metrics(metrics: dict[str, Any]) -> None:
    """Every figure as mean ± std (n runs), each baseline's figure beside it; then the backend's figures."""
    from ddspec.runtime.report import is_stats
    baselines = metrics.get("baselines", {})

    def show(name: str, m: dict[str, Any], beside: dict[str, Any]) -> None:
        line = f"{name:<22} {m['mean']:.4f} ± {m['std']:.4f}  (n={len(m['values'])})"
        for baseline, b in beside.items():
            line += f"   {baseline} {b['mean']:.4f} ± {b['std']:.4f}"
        print(line)

    for key, m in metrics.items():  # the metrics, in the order evaluated
        if isinstance(m, dict) and "mean" in m and "values" in m:
            show(key, m, {b: figures[key] for b, figures in baselines.items() if key in figures})
            for name, grid in m.items():  # per-setting figures of a metric, e.g. adversarial.linf.<eps>
                if isinstance(grid, dict) and grid and all(is_stats(v) for v in grid.values()):
                    for setting, stats in grid.items():
                        show(f"  {key}.{name}.{setting}", stats, {})
    for name, m in metrics.get("corruptions", {}).items():
        show(f"corruptions.{name}", m,
             {b: figures["corruptions"][name] for b, figures in baselines.items() if name in figures["corruptions"]})
    for name, value in metrics.items():  # backend figures (e.g. w_rel_error, agreement)
        if isinstance(value, float) and name != "distill_seconds":
            print(f"{name:<22} {value:.4g}")
    if "distill_seconds" in metrics:
        print(f"{'distill_seconds':<22} {metrics['distill_seconds']:.1f}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ddspec", description="Dataset distillation from first principles.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
        "validate": (cmd_validate, "check a spec (schema and well-posedness)"),
        "explain": (cmd_explain, "print the compiled plan without running"),
        "run": (cmd_run, "distill, evaluate and write artifacts"),
        "evaluate": (cmd_evaluate, "re-evaluate the artifact in a run folder"),
        "report": (cmd_report, "rebuild report.html of a run folder"),
        "schema": (cmd_schema, "print the JSON Schema of the spec"),
    }
    for name, (fn, text) in commands.items():
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(fn=fn)
        if name in ("validate", "explain", "run"):
            _spec_args(p)
        if name == "explain":
            p.add_argument("--json", action="store_true", help="print the plan as JSON")
            p.add_argument("--ranks", type=int, default=None, metavar="N",
                           help="show the split across N torchrun ranks (default: WORLD_SIZE, else 1)")
        if name == "run":
            p.add_argument("--out", help="output folder for the artifacts (default: runs/<name of the spec>)")
            p.add_argument("--resume", action="store_true", help="continue an interrupted run in the output folder")
            p.add_argument("--overwrite", action="store_true",
                           help="replace a run already in the output folder (its artifacts are deleted first)")
        if name in ("evaluate", "report"):
            p.add_argument("dir", help="a run folder (the --out of `ddspec run`)")
        if name == "evaluate":
            p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                           help="override evaluate.* or runtime.* fields (not runtime.seed, which made the data)")
        p.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; an error prints its findings (and with ``--debug`` its traceback), never a bare traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("ddspec: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the boundary: every error becomes findings with a code and a fix
        error = exc if isinstance(exc, DDSpecError) else internal_error(exc)
        rank = launched_rank()
        if rank == 0 or not isinstance(error, (SpecError, RankFailed)):
            if args.debug:
                print(format_traceback(exc), file=sys.stderr)
            print(("" if rank == 0 else f"[rank {rank}] ") + error.render(), file=sys.stderr)
        return 2 if isinstance(error, SpecError) else 1


if __name__ == "__main__":
    sys.exit(main())
