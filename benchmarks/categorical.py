"""Categorical case study (issue 17): tables distilled by integer programming vs random tables, one table, one run.

Every row is examples/asia_milp.yaml with overrides, run through ``ddspec run`` (the milp backend): the 1- and 2-way
marginals of the table kept by m records (distance tv: the objective is their mean total variation).

- Asia (8 binary attributes, label dysp), n = 20 000 training / 5 000 test records, m in {8, 16, 32, 64}: route
  ``exact`` (the 256-cell joint domain; HiGHS warm-started by the heuristic, node limit 10 000).
- A larger network where the exact program cannot run: a seeded random network of 12 attributes with 3-5 levels
  (28.8 million joint cells; up to 2 parents; Dirichlet(0.5) tables; label x11), n = 20 000 / 5 000, m = 64: route
  ``candidates`` (its ~15 000 distinct real records), the heuristic, then HiGHS with a node limit of 1 and a time
  limit of 30 s (machine-dependent: HiGHS's root node alone takes minutes here) — the best of the three is returned.
- Asia, m = 64, with the 3-way marginals optimized too (``task.ways=[1, 2, 3]``; its held-out marginals are then the
  4-way ones): what preserving the label's interactions (dysp depends on bronc and either jointly) does downstream.

Columns: the route; the objective (mean TV over the optimized marginals) and the solver's relative gap
(objective − proven bound)/objective; held-out marginals (every marginal one order above the optimized ones, 3-way
for the 1- and 2-way rows, never optimized): mean and
max TV for the distilled table, a random subsample of m real records and a table of m records with independently
drawn attributes (each from its real 1-way marginal) — both the median over 20 draws (numpy seeds 0..19) — and the
ratios of their mean TV to the distilled one's; train-on-synthetic test-on-real accuracy (fraction) of naive Bayes
(α = 1), one-hot logistic regression and a decision tree on the distilled table (mean over seeds 0, 1, 2; only the
tree depends on the seed), minus the same fitted to all real training records (mean over the same seeds); the
random-subsample accuracy (median over 20 draws) for context; solve seconds (the backend's distill time).

Targets (Asia, m = 64): held-out 3-way mean TV ≥ 3x lower than the random subsample's and than the independent
table's; each classifier's accuracy within 1 point (0.01) of the same classifier on all real records.

    .venv/bin/python benchmarks/categorical.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _common import ROOT, markdown_table, run_spec, save

import ddspec
from ddspec.components.categorical.sampling import random_subsample
from ddspec.components.data import load_dataset
from ddspec.evaluate.protocol import Protocol
from ddspec.runtime.artifacts import SOLVE

SPEC = ROOT / "examples" / "asia_milp.yaml"
MODELS = ("naive_bayes", "logistic_onehot", "decision_tree")
LARGE = [("data={kind: bayes_net, network: random, attributes: 12, levels: [3, 5], max_parents: 2, "
          "concentration: 0.5, network_seed: 0, n_train: 20000, n_test: 5000, seed: 0}"),
         "optimize.route=candidates", "optimize.max_nodes=1", "optimize.time_limit=30"]
ROWS = {**{f"asia/{m}": [f"synthetic.total={m}"] for m in (8, 16, 32, 64)},
        "asia/64, ways 1-3": ["synthetic.total=64", "task.ways=[1, 2, 3]"],
        "random12/64": ["synthetic.total=64", *LARGE]}
DRAWS = 20


def per_model(runs: list[Any], index: int) -> list[float]:
    """The accuracies of model ``index`` over the runs."""
    return [r.metrics["accuracy"] for r in runs if r.model == index]


def reference_accuracies(overrides: list[str]) -> dict[str, dict[str, float]]:
    """Per model: accuracy fitted to all real records (mean over seeds 0, 1, 2) and to random subsamples of m
    (median over DRAWS draws, draw s with seed s), by the spec's evaluation protocol."""
    problem = ddspec.load(SPEC, [*overrides, f"evaluate.seeds={list(range(DRAWS))}", "runtime.progress=false"])
    data = load_dataset(problem.data)
    m, real = problem.synthetic.total, data.train_records()
    protocol = Protocol(problem, data, "cpu", progress=False)
    subsampled = protocol.measure(lambda seed: data.split(random_subsample(real, m, seed)), "random")
    full_problem = problem.model_copy(update={"evaluate": problem.evaluate.model_copy(update={"seeds": [0, 1, 2]})})
    full = Protocol(full_problem, data, "cpu", progress=False).measure(lambda seed: (data.x_train, data.y_train),
                                                                        "full")
    return {kind: {"full": statistics.fmean(per_model(full, i)),
                   "random": statistics.median(per_model(subsampled, i))} for i, kind in enumerate(MODELS)}


def measure(name: str, overrides: list[str], workdir: Path) -> dict[str, Any]:
    metrics, result = run_spec(SPEC, overrides, workdir)
    solve = json.loads((result.out / SOLVE).read_text())
    marginals = metrics["marginals"]
    accuracy = {kind: metrics["per_model"][f"{i}:{kind}"]["accuracy"]["mean"] for i, kind in enumerate(MODELS)}
    return {"row": name, "overrides": overrides, "route": solve["route"], "m": solve["m"],
            "objective": solve["objective"], "gap": solve["gap"], "returned": solve["returned"],
            "candidates": solve["candidates"], "cells": solve.get("cells"), "status": solve.get("status"),
            "optimized": marginals["optimized"], "held_out": marginals["held_out"], "accuracy": accuracy,
            "reference": reference_accuracies(overrides), "solve_seconds": metrics["distill_seconds"]}


def verdict(row: dict[str, Any]) -> tuple[float, float, bool, bool]:
    """(random/distilled, independent/distilled held-out mean TV ratios, TV target met, accuracy target met)."""
    held = row["held_out"]
    d = held["distilled"]["mean_tv"]
    ratio_random, ratio_independent = held["random"]["mean_tv"] / d, held["independent"]["mean_tv"] / d
    close = all(abs(row["accuracy"][k] - row["reference"][k]["full"]) <= 0.01 for k in MODELS)
    return ratio_random, ratio_independent, ratio_random >= 3 and ratio_independent >= 3, close


def table(rows: list[dict[str, Any]]) -> str:
    header = ["network / m", "route (returned)", "objective", "gap", "held-out TV mean / max: distilled",
              "random", "independent", "random ÷ dist.", "indep. ÷ dist.",
              "accuracy NB / LR / tree (Δ vs all real)", "random-subsample accuracy NB / LR / tree", "solve s"]
    out = []
    for row in rows:
        held, ref = row["held_out"], row["reference"]
        r_rand, r_ind, _, _ = verdict(row)
        gap = "—" if row["gap"] is None else f"{row['gap']:.1%}"
        out.append([
            row["row"], f"{row['route']} ({row['returned']})", f"{row['objective']:.4f}", gap,
            f"{held['distilled']['mean_tv']:.4f} / {held['distilled']['max_tv']:.3f}",
            f"{held['random']['mean_tv']:.4f} / {held['random']['max_tv']:.3f}",
            f"{held['independent']['mean_tv']:.4f} / {held['independent']['max_tv']:.3f}",
            f"{r_rand:.1f}x", f"{r_ind:.1f}x",
            " / ".join(f"{row['accuracy'][k]:.3f} ({row['accuracy'][k] - ref[k]['full']:+.3f})" for k in MODELS),
            " / ".join(f"{ref[k]['random']:.3f}" for k in MODELS), f"{row['solve_seconds']:.1f}"])
    return markdown_table(header, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="Folder for the run folders (default: a temp dir).")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ddspec-categorical-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [measure(name, overrides, workdir) for name, overrides in ROWS.items()]
    asia = next(r for r in rows if r["row"] == "asia/64")
    r_rand, r_ind, tv_ok, acc_ok = verdict(asia)
    deltas = ", ".join(f"{k} {asia['accuracy'][k] - asia['reference'][k]['full']:+.3f}" for k in MODELS)
    three = next(r for r in rows if r["row"] == "asia/64, ways 1-3")
    deltas3 = ", ".join(f"{k} {three['accuracy'][k] - three['reference'][k]['full']:+.3f}" for k in MODELS)
    notes = (f"Targets at Asia m = 64: held-out 3-way mean TV ≥ 3x lower than the random subsample ({r_rand:.1f}x) "
             f"and than independent marginals ({r_ind:.1f}x): **{'PASS' if tv_ok else 'FAIL'}**; every classifier "
             f"within 0.01 of the same classifier on all real records ({deltas}): **{'PASS' if acc_ok else 'FAIL'}**. "
             f"With the 3-way marginals optimized too (row `asia/64, ways 1-3`): {deltas3} "
             f"({'all' if verdict(three)[3] else 'not all'} within 0.01).\n\n"
             "TV is measured against the real training table; accuracies are fractions of the 5 000 real test records. "
             "The large network's solve is bounded by a 30 s time limit (its rows depend on the machine); every other "
             "row is bounded by node counts only.")
    save("categorical", "Categorical data distilled by integer programming (cvxpy/HiGHS): Asia and a 12-attribute "
         "network", table(rows), rows, notes)
    print(table(rows))
    print(notes)


if __name__ == "__main__":
    main()
