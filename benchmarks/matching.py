"""Matching backends vs coreset baselines, one table.

MNIST-1D and digits × 1 and 10 samples per class × {random, herding, k-center, DM, DC, MMD}:
final-epoch accuracy (mean ± std over the evaluation seeds) under the examples' protocol and again
with augmentation during evaluation training (as the DSA/DM papers evaluate), cluster-min accuracy,
distillation seconds; plus the full-data model under the same protocol as the ceiling.

    .venv/bin/python benchmarks/matching.py                 # everything in one process
    # or one process per dataset (each uses one thread), then one table:
    .venv/bin/python benchmarks/matching.py --datasets mnist1d --name matching_mnist1d &
    .venv/bin/python benchmarks/matching.py --datasets digits --name matching_digits; wait
    .venv/bin/python benchmarks/matching.py --collect matching_mnist1d matching_digits
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import ROOT, load_rows, markdown_table, pm, run_spec, save

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


def protocol(dataset: str, augment: bool) -> tuple:
    """(problem, data) of the dataset's DM example, whose evaluation protocol every row shares."""
    import ddspec
    from ddspec.registry import DATA

    flags = ["runtime.progress=false", f"evaluate.augment={str(augment).lower()}"]
    from ddspec.runtime.device import seed_everything

    problem = ddspec.compile(ddspec.load(EXAMPLES / f"{dataset}_dm.yaml", flags)).problem
    seed_everything(problem.runtime.seed, problem.runtime.threads)
    return problem, DATA.build(problem.data)


def evaluate_with_augment(dataset: str, x, y) -> dict:
    """Accuracy when the evaluation models train with the example's augmentation ops."""
    from ddspec.evaluate.protocol import evaluate_distilled

    problem, data = protocol(dataset, augment=True)
    return evaluate_distilled(x, y, data, problem, "cpu", progress=False)["accuracy"]


def full_data_row(dataset: str) -> dict:
    """The model trained on all real training data with the same protocol (the ceiling)."""
    from ddspec.evaluate.protocol import evaluate_distilled

    problem, data = protocol(dataset, augment=False)
    metrics = evaluate_distilled(data.x_train, data.y_train, data, problem, "cpu", progress=False)
    return {"dataset": dataset, "ipc": "all", "method": "full data", **metrics, "distill_seconds": 0.0,
            "accuracy_eval_augment": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mnist1d", "digits"])
    parser.add_argument("--ipc", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--full", action="store_true", help="add the full-data reference rows (slow)")
    parser.add_argument("--name", default="matching", help="results file name under benchmarks/results/")
    parser.add_argument("--collect", nargs="+", metavar="NAME", help="only merge earlier results into one table")
    parser.add_argument("--note", default="", help="a remark on the run conditions, added to the results file")
    args = parser.parse_args()
    rows = [r for name in args.collect for r in load_rows(name)] if args.collect else measure(args)
    write_table(rows, "matching" if args.collect else args.name, note=args.note)


def measure(args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            if args.full:
                rows.append(full_data_row(dataset))
                print(f"{dataset} full data: {pm(rows[-1]['accuracy'])}", flush=True)
            for ipc in args.ipc:
                for method in args.methods:
                    spec, overrides = spec_and_overrides(dataset, method, ipc)
                    metrics, result = run_spec(spec, overrides, Path(tmp))
                    metrics["accuracy_eval_augment"] = evaluate_with_augment(dataset, result.x, result.y)
                    rows.append({"dataset": dataset, "ipc": ipc, "method": method, **metrics})
                    print(f"{dataset} ipc={ipc} {method}: acc {pm(metrics['accuracy'])}, "
                          f"eval-aug {pm(metrics['accuracy_eval_augment'])}, {metrics['distill_seconds']:.1f} s",
                          flush=True)
                    write_table(rows, args.name, show=False, note=args.note)  # keep what is measured if the run stops
    return rows


def write_table(rows: list[dict], name: str, show: bool = True, note: str = "") -> None:
    header = ["dataset", "per class", "method", "accuracy", "accuracy, eval with aug", "cluster-min", "distill s"]
    table = markdown_table(header, [
        [r["dataset"], str(r["ipc"]), r["method"], pm(r["accuracy"]), pm(r.get("accuracy_eval_augment")),
         pm(r.get("cluster_min")), f"{r['distill_seconds']:.1f}"] for r in rows
    ])
    if show:
        print(table)
    notes = ("Accuracy and cluster-min are fractions in [0, 1]: final-epoch test accuracy of models trained from "
             "scratch on the distilled data (the examples' evaluation protocol), mean ± sample std over the "
             "evaluation seeds. 'eval with aug': the same protocol with the example's augmentation ops applied "
             "while training the evaluation models. Cluster-min: lowest accuracy over 10 k-means clusters of "
             "the raw test inputs. Distill seconds: one thread on a 2-core machine. " + note)
    keep = ("dataset", "ipc", "method", "accuracy", "accuracy_eval_augment", "cluster_min", "corruptions",
            "distill_seconds", "backend", "seeds")
    save(name, "Matching backends vs coreset baselines", table, [{k: r.get(k) for k in keep} for r in rows], notes)


if __name__ == "__main__":
    main()
