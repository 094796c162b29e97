"""Survival case study, illustrations (issue 16): sources from two different studies that share only some covariates,
one table, one run. No patient has every column, so there is no oracle and no target: the figures show whether
the distilled table reproduces each study's own analyses.

Every distilled row is an example run through ``ddspec run`` (the survival backend): veterans' ↔ NCCTG lung
(examples/veteran_lung_survival.yaml) and ACTG 320 ↔ ACTG 175 (examples/actg_survival.yaml). Its ``metrics.json``
carries the figures of the distilled table and of the baselines at the same n̂ (``ddspec.evaluate.survival``):
``random_em`` / ``random_mice`` (median over 20 random n̂-patient draws of the stacked studies, completed by EM
imputation or MICE), ``em_full`` / ``mice_full`` (every training patient, completed), ``sources`` (each study's
own Cox fit on its own patients). Figures on each study's held-out patients: Harrell's C within each study, Uno's C
(mean over the studies), integrated Brier score (mean over the studies), KM distance (sup vs all training
patients), and per study the C of the Cox model on that study's columns fitted on the table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/survival_studies.py [--iterations N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import ROOT, markdown_table, run_spec, save

EXAMPLES = ("veteran_lung_survival", "actg_survival")
FIGURES = ("c_index", "c_index_uno", "integrated_brier", "km_distance")
BASELINES = ("random_em", "random_mice", "em_full", "mice_full")


def row(example: str, name: str, n: int | str, f: dict, studies: list[str]) -> list[str]:
    own = [f"{f['source_c_index'][s]:.3f}" for s in studies]
    figures = [f"{f[k]:.3f}" if k in f else "—" for k in FIGURES]
    return [example, name, str(n), *figures, " / ".join(own), f"{f['objective']:.3f}" if "objective" in f else "—"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    rows, table = [], []
    for example in EXAMPLES:
        with tempfile.TemporaryDirectory(prefix="survival_studies_") as workdir:
            metrics, _ = run_spec(ROOT / "examples" / f"{example}.yaml", [f"optimize.iterations={args.iterations}"],
                                  Path(workdir))
        s = metrics["survival"]
        studies = list(s["baselines"]["sources"]["source_c_index"])
        rows.append({"example": example, "n": s["patients"], "distilled": s["distilled"],
                     "baselines": s["baselines"], "wall_seconds": metrics["wall_seconds"]})
        table.append(row(example, "distilled", s["patients"], s["distilled"], studies))
        table += [row(example, name, s["patients"] if name.startswith("random") else "all", s["baselines"][name],
                      studies) for name in BASELINES]
        table.append(row(example, "each study's own fit", "all", s["baselines"]["sources"], studies))
    header = ["example", "table", "n̂", "Harrell C (within studies)", "Uno C", "IBS", "KM sup",
              "C per study (its columns)", "objective"]
    notes = ("Illustration only: the studies never record their unshared columns together, so there is no ground "
             "truth for the joint and no target. 'C per study' lists the studies in the order of the spec's sources "
             "(veterans / NCCTG; ACTG 320 / ACTG 175).")
    save("survival_studies", "Survival case study, two studies sharing some covariates: distilled vs baselines",
         markdown_table(header, table), rows, notes)
    print(markdown_table(header, table))


if __name__ == "__main__":
    main()
