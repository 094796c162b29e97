"""PDE case study (issue 15): distilled collocation points vs collocation samplers, one table per problem, one run.

Every row is examples/laplace_square_collocation.yaml (or examples/heat_1d_collocation.yaml) with overrides, run
through ``ddspec run`` (the collocation backend) and evaluated by the same protocol: fresh MLP PINNs (width 32,
depth 3, Adam lr 1e-3, 3000 full-batch steps, lr x 0.1 at half; seeds 0, 1, 2) trained on the M points by the PDE
residual, relL2 per held-out BC over 50 BCs of A_in and 50 of A_out (mean and 90th percentile over BCs; mean ± std
over the seeds).

Rows, for M in {64, 256}:
- ``distilled``: the spec as is (150 iterations of Adam on the points through the closed-form random-feature PINN;
  scenarios: the 32 data BCs and 16 physics-only BCs per iteration from the box [-1.5, 1.5]³), starting from Sobol
  points in the box; ``distilled-tangent``: the same with ``train.inner: tangent`` (ridge 1e-6);
- ``uniform``, ``lhs``, ``sobol``, ``halton`` (``optimize: {kind: select, method: ...}``, seed 0) with the BC terms
  in the whole box (``box``, the BCs the user cares about, what the distilled points may cover) and in the data's
  box A_in (``data``); ``rad`` (a PINN trained while resampling the points every 1000 steps from 8192 uniform
  candidates in the box, p ∝ |r|/mean|r| + 1; its final points are evaluated like the others);
- how the best sampler scales with M: Sobol in the box at M = 1024 and 2048 (seed 0 only), and the reference:
  8192 uniform points in the box (seed 0 only: ~7 min per seed on this machine).

Target (per M): the distilled points' 90th-percentile relL2 on A_out ≤ 0.5 x the best baseline's (the lowest over
every sampler row at the same M, both boxes), at no loss on A_in (distilled mean relL2 on A_in ≤ the lowest A_in
mean over the same rows). PASS/FAIL per M.

Rows are cached as JSON in ``--workdir`` (default benchmarks/.pinn_runs), so an interrupted benchmark resumes and
``--only`` can split the rows over processes; the table is written once every row is there (with ``--partial``,
from the rows that have run, naming the others).

    .venv/bin/python benchmarks/pinn.py [--only ROW ...] [--workdir DIR] [--partial]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _common import ROOT, markdown_table, run_spec, save

from ddspec.io import atomic_write_json

LAPLACE = ROOT / "examples" / "laplace_square_collocation.yaml"
HEAT = ROOT / "examples" / "heat_1d_collocation.yaml"
SAMPLERS = ("uniform", "lhs", "sobol", "halton")
FIGURES = (("in", "mean"), ("in", "q90"), ("out", "mean"), ("out", "q90"))
#: The tangent inner model (the evaluated MLP PINN linearized at a fresh initialisation each iteration).
TANGENT = ["train={kind: residual, inner: tangent, ridge: 1.0e-6}"]


def rows() -> dict[str, tuple[Path, list[str]]]:
    """Row name → (spec, overrides)."""
    out: dict[str, tuple[Path, list[str]]] = {}
    for m in (64, 256):
        size = f"synthetic.total={m}"
        out[f"laplace/{m}/distilled"] = (LAPLACE, [size])
        out[f"laplace/{m}/distilled-tangent"] = (LAPLACE, [size, *TANGENT])
        for method in SAMPLERS:
            for box in ("box", "data"):
                out[f"laplace/{m}/{method}/{box}"] = (LAPLACE, [size, f"data.points={box}",
                                                               f"optimize={{kind: select, method: {method}}}"])
        out[f"laplace/{m}/rad/box"] = (LAPLACE, [size, "optimize={kind: select, method: rad}"])
    for m in (1024, 2048):
        out[f"laplace/{m}/sobol/box"] = (LAPLACE, [f"synthetic.total={m}", "optimize={kind: select, method: sobol}",
                                                  "evaluate.seeds=[0]"])
    out["laplace/8192/uniform/box"] = (LAPLACE, ["synthetic.total=8192", "optimize={kind: select, method: uniform}",
                                                 "evaluate.seeds=[0]"])
    out["heat/256/distilled"] = (HEAT, [])
    out["heat/256/distilled-tangent"] = (HEAT, TANGENT)
    for box in ("box", "data"):
        out[f"heat/256/sobol/{box}"] = (HEAT, [f"data.points={box}", "optimize={kind: select, method: sobol}"])
    return out


def measure(name: str, spec: Path, overrides: list[str], workdir: Path) -> dict[str, Any]:
    """Run one row (or read its cached result)."""
    cached = workdir / (name.replace("/", "_") + ".json")
    if cached.exists():
        return json.loads(cached.read_text())
    metrics, _ = run_spec(spec, overrides, workdir)
    entry = metrics["relative_l2"]
    row = {"row": name, "overrides": overrides, "seeds": metrics["seeds"],
           "distill_seconds": metrics["distill_seconds"], "wall_seconds": metrics["wall_seconds"],
           **{f"{split}_{stat}": {"mean": entry[split][stat]["mean"], "std": entry[split][stat]["std"]}
              for split, stat in FIGURES}}
    atomic_write_json(cached, row)
    return row


def fmt(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def verdicts(results: dict[str, dict[str, Any]], problem: str, sizes: tuple[int, ...]) -> list[str]:
    """The target per M and distilled row, PASS/FAIL with the figures."""
    lines = []
    for m in sizes:
        rows_m = {k.split("/", 2)[2]: v for k, v in results.items() if k.startswith(f"{problem}/{m}/")}
        base = {k: v for k, v in rows_m.items() if not k.startswith("distilled")}
        best_out = min(base.items(), key=lambda kv: kv[1]["out_q90"]["mean"])
        best_in = min(v["in_mean"]["mean"] for v in base.values())
        for name, mine in ((k, v) for k, v in rows_m.items() if k.startswith("distilled")):
            ratio = mine["out_q90"]["mean"] / best_out[1]["out_q90"]["mean"]
            ok = ratio <= 0.5 and mine["in_mean"]["mean"] <= best_in
            lines.append(f"- {problem}, M = {m}: {name} A_out q90 {mine['out_q90']['mean']:.3f} = {ratio:.2f} x the "
                         f"best baseline's ({best_out[0]}: {best_out[1]['out_q90']['mean']:.3f}; target ≤ 0.5 x); "
                         f"A_in mean {mine['in_mean']['mean']:.3f} vs the lowest baseline A_in mean {best_in:.3f} — "
                         f"**{'PASS' if ok else 'FAIL'}**")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only these rows (names as in the table)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".pinn_runs")
    parser.add_argument("--partial", action="store_true", help="write the table from the rows that have run")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    table = rows()
    todo = [n for n in table if not args.only or n in args.only]
    results = {}
    for name in todo:
        spec, overrides = table[name]
        results[name] = measure(name, spec, overrides, args.workdir)
        print(name, *(fmt(results[name][f"{s}_{t}"]) for s, t in FIGURES), flush=True)
    missing = [n for n in table if not (args.workdir / (n.replace("/", "_") + ".json")).exists()]
    if missing and not args.partial:
        print(f"{len(missing)} rows still to run: {', '.join(missing)}")
        return
    results = {n: measure(n, *table[n], args.workdir) for n in table if n not in missing}
    header = ["problem / M / points / BC box", "A_in relL2 mean", "A_in q90", "A_out relL2 mean", "A_out q90",
              "distill s", "wall s", "seeds"]
    body = [[n, *(fmt(r[f"{s}_{t}"]) for s, t in FIGURES), f"{r['distill_seconds']:.0f}", f"{r['wall_seconds']:.0f}",
             str(len(r["seeds"]))] for n, r in results.items()]
    sizes = {p: tuple(m for m in (64, 256) if f"{p}/{m}/distilled" in results) for p in ("laplace", "heat")}
    notes = "\n".join(["Targets:", *verdicts(results, "laplace", sizes["laplace"]),
                       *verdicts(results, "heat", sizes["heat"]),
                       *([f"Not run (out of time in this session): {', '.join(missing)}."] if missing else [])])
    save("pinn", "PDE case study: distilled collocation points vs samplers (relL2 of fresh MLP PINNs)",
         markdown_table(header, body), list(results.values()), notes)
    print(notes)


if __name__ == "__main__":
    main()
