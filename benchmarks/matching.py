"""Matching backends vs coreset baselines, one table.

MNIST-1D and digits × 1 and 10 samples per class × {random, herding, k-center, DM, DC, MMD}:
final-epoch accuracy (mean ± std over the evaluation seeds), cluster-min accuracy, distillation
seconds; plus the full-data model under the same protocol as the ceiling.

    .venv/bin/python benchmarks/matching.py                 # everything (CPU: about an hour)
    .venv/bin/python benchmarks/matching.py --datasets digits --ipc 1 --methods random DM
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import ROOT, markdown_table, pm, run_spec, save

EXAMPLES = ROOT / "examples"
DISTILL = {"DM": "dm", "DC": "dc", "MMD": "mmd"}
SELECT = {"random": "random", "herding": "herding", "k-center": "kcenter"}
METHODS = ["random", "herding", "k-center", "DM", "DC", "MMD"]


def spec_and_overrides(dataset: str, method: str, ipc: int) -> tuple[Path, list[str]]:
    """The example spec for ``method`` (coresets reuse the DM spec's data, model and evaluation)."""
    if method in DISTILL:
        return EXAMPLES / f"{dataset}_{DISTILL[method]}.yaml", [f"synthetic.per_class={ipc}"]
    return EXAMPLES / f"{dataset}_dm.yaml", [
        f"synthetic.per_class={ipc}", f"optimize={{kind: select, method: {SELECT[method]}}}", "distance=null",
    ]


def full_data_row(dataset: str) -> dict:
    """The model trained on all real training data with the same protocol (the ceiling)."""
    import ddspec
    from ddspec.evaluate.protocol import evaluate_distilled
    from ddspec.registry import DATA

    plan = ddspec.compile(ddspec.load(EXAMPLES / f"{dataset}_dm.yaml", ["runtime.progress=false"]))
    data = DATA.build(plan.problem.data)
    metrics = evaluate_distilled(data.x_train, data.y_train, data, plan.problem, "cpu", progress=False)
    return {"dataset": dataset, "ipc": "all", "method": "full data", **metrics, "distill_seconds": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mnist1d", "digits"])
    parser.add_argument("--ipc", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--no-full", action="store_true", help="skip the full-data reference rows")
    parser.add_argument("--name", default="matching", help="results file name under benchmarks/results/")
    args = parser.parse_args()

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            if not args.no_full:
                rows.append(full_data_row(dataset))
                print(f"{dataset} full data: {pm(rows[-1]['accuracy'])}", flush=True)
            for ipc in args.ipc:
                for method in args.methods:
                    spec, overrides = spec_and_overrides(dataset, method, ipc)
                    metrics = run_spec(spec, overrides, Path(tmp))
                    rows.append({"dataset": dataset, "ipc": ipc, "method": method, **metrics})
                    print(f"{dataset} ipc={ipc} {method}: acc {pm(metrics['accuracy'])}, "
                          f"{metrics['distill_seconds']:.1f} s", flush=True)
    header = ["dataset", "per class", "method", "accuracy", "cluster-min", "distill s"]
    table = markdown_table(header, [
        [r["dataset"], str(r["ipc"]), r["method"], pm(r["accuracy"]), pm(r.get("cluster_min")),
         f"{r['distill_seconds']:.1f}"] for r in rows
    ])
    print(table)
    notes = ("Accuracy and cluster-min are fractions in [0, 1]: final-epoch test accuracy of models trained from "
             "scratch on the distilled data (the examples' evaluation protocol), mean ± sample std over the "
             "evaluation seeds. Cluster-min: lowest accuracy over 10 k-means clusters of the raw test inputs.")
    keep = ("dataset", "ipc", "method", "accuracy", "cluster_min", "corruptions", "distill_seconds", "backend", "seeds")
    save(args.name, "Matching backends vs coreset baselines", table, [{k: r.get(k) for k in keep} for r in rows], notes)


if __name__ == "__main__":
    main()
