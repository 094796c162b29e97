"""The GPU rows of the MNIST-1D benchmarks: matching (DM) and bilevel (test error) at 10 per class, at the
examples' reference budgets, run with ``runtime.device=cuda`` — one table against the CPU rows of
benchmarks/results/bilevel.json (same specs, same protocol: final-epoch accuracy, mean ± std over 3 seeds).

    python3 benchmarks/device_runs.py          # on a GPU machine (benchmarks/device_check.sh runs it)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import ROOT, load_rows, markdown_table, pm, run_spec, save

ROWS = [("DM (matching)", "mnist1d_dm.yaml"), ("bilevel, test error", "mnist1d_bilevel.yaml")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="device_runs")
    parser.add_argument("--methods", nargs="+", metavar="TEXT", help="only the rows whose method contains TEXT")
    args = parser.parse_args()
    cpu = {(r["method"], r["spec"]): r for r in load_rows("bilevel") if r.get("table") == "accuracy" and r["ipc"] == 10
           and not r.get("overrides")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method, spec in ROWS:
            if args.methods and not any(m in method for m in args.methods):
                continue
            metrics, _ = run_spec(ROOT / "examples" / spec, ["runtime.device=cuda"], Path(tmp))
            rows.append({"method": method, "spec": spec, "accuracy": metrics["accuracy"],
                         "distill_seconds": metrics["distill_seconds"], "cpu": cpu.get((method, spec))})
    table = markdown_table(
        ["method", "spec", "accuracy (cuda)", "accuracy (cpu)", "distill s (cuda)", "distill s (cpu)", "speed-up"],
        [[r["method"], f"examples/{r['spec']}", pm(r["accuracy"]), pm(r["cpu"] and r["cpu"]["accuracy"]),
          f"{r['distill_seconds']:.1f}", "—" if r["cpu"] is None else f"{r['cpu']['distill_seconds']:.1f}",
          "—" if r["cpu"] is None else f"{r['cpu']['distill_seconds'] / r['distill_seconds']:.1f}x"] for r in rows],
    )
    print(table)
    notes = ("MNIST-1D, 10 per class, the examples' budgets and evaluation protocol (final epoch, mean ± sample std "
             "over 3 seeds; accuracy a fraction in [0, 1]). CPU columns: benchmarks/results/bilevel.json (one thread, "
             "measured on the date that file records). The two columns differ by float rounding on another device, "
             "not by the method.")
    save(args.name, "MNIST-1D on the GPU (matching and bilevel)", table, rows, notes)


if __name__ == "__main__":
    main()
