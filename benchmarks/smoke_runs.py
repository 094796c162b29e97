"""``ddspec.testing.shrink`` + ``run_smoke`` on every example: the backend is kept, and the seconds per smoke run
(target: each under 10 s on 2 cores, the bound the issue of ``ddspec.testing`` names).

Each example runs in a fresh interpreter (imports not counted: the figure is ``run_smoke``'s wall time) twice:
``cold`` with an empty ``$DDSPEC_CACHE`` (the convex backend's full-data solve and the ``full`` baseline are
measured, then cached), ``warm`` with the cache the cold run left.

    .venv/bin/python benchmarks/smoke_runs.py [--only STEM ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, markdown_table, save

TIMED = """
import json, sys, time
import ddspec
from ddspec.testing import run_smoke, shrink
path, out = sys.argv[1], sys.argv[2]
full, small = ddspec.compile(ddspec.load(path)), ddspec.compile(shrink(path))
start = time.perf_counter()
run_smoke(path, out)
print(json.dumps({"seconds": time.perf_counter() - start, "backend": full.backend, "shrunk_backend": small.backend}))
"""


def smoke(example: Path, cache: Path) -> dict[str, object]:
    """Run ``example`` at smoke size in a fresh interpreter with ``$DDSPEC_CACHE`` = ``cache``."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DDSPEC_CACHE": str(cache)}
        done = subprocess.run([sys.executable, "-c", TIMED, str(example), str(Path(tmp) / "run")], cwd=ROOT, env=env,
                              check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="example stems to run")
    args = parser.parse_args()
    rows = []
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        if args.only and example.stem not in args.only:
            continue
        with tempfile.TemporaryDirectory() as cache:
            cold, warm = smoke(example, Path(cache)), smoke(example, Path(cache))
        rows.append({"example": example.stem, "backend": cold["backend"], "shrunk_backend": cold["shrunk_backend"],
                     "cold_seconds": cold["seconds"], "warm_seconds": warm["seconds"]})
        print(rows[-1], flush=True)
    table = markdown_table(["example", "backend", "shrunk keeps it", "cold s", "warm s"],
                           [[r["example"], r["backend"], "yes" if r["backend"] == r["shrunk_backend"] else "**NO**",
                             f"{r['cold_seconds']:.1f}", f"{r['warm_seconds']:.1f}"] for r in rows])
    over = [r for r in rows if r["cold_seconds"] >= 10 or r["warm_seconds"] >= 10]
    kept = all(r["backend"] == r["shrunk_backend"] for r in rows)
    notes = (f"Backend kept by shrink: {'every example' if kept else 'NOT every example'}. "
             f"Target: every smoke run under 10 s. Over it: "
             + (", ".join(f"{r['example']} (cold {r['cold_seconds']:.1f} s, warm {r['warm_seconds']:.1f} s)"
                          for r in over) if over else "none") + ".")
    save("smoke_runs", "ddspec.testing: smoke runs of every example (shrink + run_smoke)", table, rows, notes)
    print(table, notes, sep="\n")


if __name__ == "__main__":
    main()
