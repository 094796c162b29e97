"""Survival case study (issue 16): distilled GBSG2 patient tables vs baselines at the same n̂, one table, one run.

Every distilled row is examples/gbsg2_survival.yaml with ``synthetic.total`` = n̂ (and ``optimize.iterations``),
run through ``ddspec run`` (the survival backend); its ``metrics.json`` carries the figures of the distilled table
and of the baselines at the same n̂ (``ddspec.evaluate.survival``): ``random_em`` / ``random_mice`` (median over 20
random n̂-patient draws of the sources, completed by EM imputation or MICE), ``em_full`` / ``mice_full`` (every
training patient, completed) and ``oracle`` (every training patient, all columns). Figures on the 206 held-out
test patients: Harrell's and Uno's C, integrated Brier score; KM distance (sup vs all training patients), Cox
coefficient error (L2 vs the oracle, standardized covariates), TV of the cross-source BN conditional vs the oracle.

Targets (n̂ = 50): KM distance and Cox error of the distilled table ≤ 0.5 x the random_em median; its test C-index
within 0.02 of the Cox model fitted on all training patients (the oracle row). PASS/FAIL with the figures.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/survival.py [--iterations N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import ROOT, markdown_table, run_spec, save

SIZES = (50, 100, 200)
FIGURES = ("c_index", "c_index_uno", "integrated_brier", "km_distance", "cox_error")


def row(name: str, n: int | str, f: dict) -> list[str]:
    cross = max(f["bn_tv"].items(), key=lambda kv: kv[0].count(","))[1] if f["bn_tv"] else float("nan")
    return [name, str(n), *[f"{f[k]:.3f}" for k in FIGURES], f"{cross:.3f}", f"{f.get('objective', float('nan')):.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    rows, table, full = [], [], None
    for n in SIZES:
        with tempfile.TemporaryDirectory(prefix="survival_bench_") as workdir:
            metrics, _ = run_spec(ROOT / "examples" / "gbsg2_survival.yaml",
                                  [f"synthetic.total={n}", f"optimize.iterations={args.iterations}"], Path(workdir))
        s = metrics["survival"]
        rows.append({"n": n, "distilled": s["distilled"], "baselines": s["baselines"],
                     "wall_seconds": metrics["wall_seconds"]})
        table.append(row("distilled", n, s["distilled"]))
        table += [row(name, n, s["baselines"][name]) for name in ("random_em", "random_mice")]
        full = s["baselines"]
    table += [row(name, "all", full[name]) for name in ("em_full", "mice_full", "oracle")]
    header = ["table", "n̂", "Harrell C", "Uno C", "IBS", "KM sup", "Cox L2 err", "BN TV (cross)", "objective"]
    first = rows[0]
    d, r, o = first["distilled"], first["baselines"]["random_em"], first["baselines"]["oracle"]
    checks = [
        ("KM distance ≤ 0.5 x random median", d["km_distance"], 0.5 * r["km_distance"], d["km_distance"] <= 0.5 * r["km_distance"]),
        ("Cox error ≤ 0.5 x random median", d["cox_error"], 0.5 * r["cox_error"], d["cox_error"] <= 0.5 * r["cox_error"]),
        ("|C − C_all| ≤ 0.02", abs(d["c_index"] - o["c_index"]), 0.02, abs(d["c_index"] - o["c_index"]) <= 0.02),
    ]
    notes = "Targets at n̂ = 50:\n\n" + "\n".join(
        f"- {name}: {value:.4f} vs {bound:.4f} — {'PASS' if ok else 'FAIL'}" for name, value, bound, ok in checks)
    save("survival", "Survival case study: GBSG2 sources A and B, distilled tables vs baselines",
         markdown_table(header, table), rows, notes)
    print(markdown_table(header, table))
    print(notes)


if __name__ == "__main__":
    main()
