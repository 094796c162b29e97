"""``ddspec validate | explain | run | evaluate | report | schema``.

Exit codes: 0 success; 2 invalid spec or arguments (the message names the spec path and a fix,
no traceback); 1 the run failed (divergence, I/O, interrupted — resumable with ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ddspec.errors import DDSpecError, SpecError


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
    print(json.dumps(plan.to_json(), indent=2) if args.json else plan.explain())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    plan = _plan(args)
    result = plan.run(out=args.out, resume=args.resume)
    _print_metrics(result.metrics)
    print(f"artifacts: {result.out}  (report: {result.out / 'report.html'})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ddspec.runtime.runner import reevaluate

    _print_metrics(reevaluate(Path(args.dir), args.overrides))
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
    """The JSON Schema of the spec (what ``schemas/ddspec.schema.json`` holds)."""
    from ddspec.spec.problem import Problem

    schema = Problem.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ddspec problem"
    return json.dumps(schema, indent=2, ensure_ascii=False)


def _print_metrics(metrics: dict[str, Any]) -> None:
    def show(name: str, m: dict[str, Any]) -> None:
        print(f"{name:<22} {m['mean']:.4f} ± {m['std']:.4f}  (n={len(m['values'])})")

    for key in ("accuracy", "cluster_min", "worst_group"):
        if key in metrics:
            show(key, metrics[key])
    for name, m in metrics.get("corruptions", {}).items():
        show(f"corruptions.{name}", m)
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
        if name == "run":
            p.add_argument("--out", required=True, help="output folder for the artifacts")
            p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
        if name in ("evaluate", "report"):
            p.add_argument("dir", help="a run folder (the --out of `ddspec run`)")
        if name == "evaluate":
            p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                           help="override evaluate.* or runtime.* fields")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except SpecError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except DDSpecError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ddspec: interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
