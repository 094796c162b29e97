"""Wall time of `ddspec validate` and `ddspec explain` on every example (target: < 0.5 s each).

    .venv/bin/python benchmarks/cli_latency.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from _common import ROOT, markdown_table, save

DDSPEC = [sys.executable, "-m", "ddspec.cli"]


def wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([*DDSPEC, *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        rel = str(example.relative_to(ROOT))
        times = {cmd: [wall([cmd, rel]) for _ in range(args.repeats)] for cmd in ("validate", "explain")}
        rows.append({"example": rel, **{f"{c}_median_s": statistics.median(t) for c, t in times.items()},
                     **{f"{c}_max_s": max(t) for c, t in times.items()}})
    table = markdown_table(
        ["example", "validate median s", "validate max s", "explain median s", "explain max s"],
        [[r["example"], f"{r['validate_median_s']:.3f}", f"{r['validate_max_s']:.3f}",
          f"{r['explain_median_s']:.3f}", f"{r['explain_max_s']:.3f}"] for r in rows],
    )
    print(table)
    worst = max(max(r["validate_max_s"], r["explain_max_s"]) for r in rows)
    verdict = "meets" if worst < 0.5 else "MISSES"
    save("cli_latency", "CLI latency: validate and explain", table, rows,
         f"Target < 0.5 s per call: worst call {worst:.3f} s ({verdict} the target). Each figure is a whole "
         f"process (interpreter start included), {args.repeats} repeats.")


if __name__ == "__main__":
    main()
