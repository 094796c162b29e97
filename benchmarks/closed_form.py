"""Closed-form KRR distillation vs one full-data ridge fit vs KIP, and the convex-inner examples — one table.

For digits, MNIST-1D and breast_cancer with linear ridge regression (λ = 1e-3; MNIST-1D also with 40
random Fourier features), 1 synthetic point per class:
- "full fit s": one full-data ridge fit (features + solve), median of 5 warm calls, float64, one thread;
- "exact": the closed-form construction (which includes that full-data fit), median of 5 warm calls and one
  cold `ddspec run` — target ≤ 1.5x the fit, with the distilled model's accuracy equal to the full-data model's (‖W_S − W‖/‖W‖ printed);
- "KIP": the same kernel model, 1000 Adam iterations through the kernel solve — target: ≥ 100x slower at
  equal or lower accuracy.
Then the convex-inner examples (L1-logistic on breast_cancer, multinomial logistic on digits).

    .venv/bin/python benchmarks/closed_form.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import ROOT, markdown_table, run_spec, save

EXAMPLES = ROOT / "examples"
DATASETS = {
    "digits": ["data={kind: digits}"],
    "mnist1d": ["data={kind: mnist1d}"],
    "breast_cancer": ["data={kind: tabular, name: breast_cancer}"],
}
RFF = "model.features={kind: rff, features: 40, bandwidth: 4.0}"
KIP = ["optimize={kind: gradient, iterations: 1000, real_batch_per_class: 64}", "task={kind: test_error}",
       "train.lam_synthetic=0.001"]


def warm_seconds(overrides: list[str], repeats: int = 5) -> tuple[float, float]:
    """(one full-data ridge fit, one exact construction): median wall times over ``repeats`` warm calls in
    this process (one thread), so both figures exclude the same start-up costs."""
    import torch

    import ddspec
    from ddspec.backends.krr.run import exact, full_data_model
    from ddspec.registry import DATA
    from ddspec.runtime.context import RunContext
    from ddspec.runtime.device import seed_everything

    plan = ddspec.compile(ddspec.load(EXAMPLES / "digits_krr.yaml", overrides))
    generator = seed_everything(0, 1)
    data = DATA.build(plan.problem.data)
    ctx = RunContext(plan.problem, plan.analysis, data, torch.device("cpu"), Path(tempfile.gettempdir()),
                     generator=generator)

    def median(fn: object) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return median(lambda: full_data_model(plan.problem, data)), median(lambda: exact(ctx))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kip-iterations", type=int, default=1000)
    args = parser.parse_args()
    kip = [KIP[0].replace("1000", str(args.kip_iterations)), *KIP[1:]]
    rows = []
    cases = [(name, over, []) for name, over in DATASETS.items()] + [("mnist1d (rff 40)", DATASETS["mnist1d"], [RFF])]
    with tempfile.TemporaryDirectory() as tmp:
        for name, over, extra in cases:
            fit, construct = warm_seconds([*over, *extra])
            for method, more in (("exact", []), ("KIP", kip)):
                metrics, _ = run_spec(EXAMPLES / "digits_krr.yaml", [*over, *extra, *more], Path(tmp))
                rows.append({"dataset": name, "method": method, "fit_seconds": fit, **metrics,
                             "warm_seconds": construct if method == "exact" else None})
                print(f"{name} {method}: {metrics['distill_seconds']:.4f} s (fit {fit:.4f} s), "
                      f"acc {metrics['accuracy_distilled_model']:.4f} vs full {metrics['accuracy_full_model']:.4f}, "
                      f"w_rel_error {metrics['w_rel_error']:.2e}", flush=True)
        for example in ("breast_cancer_convex_l1.yaml", "digits_convex_logistic.yaml"):
            metrics, _ = run_spec(EXAMPLES / example, [], Path(tmp))
            rows.append({"dataset": example, "method": "convex (cvxpy + KKT)", "fit_seconds": None, **metrics})
            print(f"{example}: {metrics['distill_seconds']:.1f} s, acc {metrics['accuracy_distilled_model']:.4f} "
                  f"vs full {metrics['accuracy_full_model']:.4f}", flush=True)
    exact = {r["dataset"]: r for r in rows if r["method"] == "exact"}
    table = markdown_table(
        ["dataset", "method", "distill s (run)", "run wall s", "estimate s", "warm s", "full fit s (warm)",
         "warm / fit", "accuracy distilled", "accuracy full", "agreement", "‖W_S − W‖/‖W‖", "vs exact time"],
        [[r["dataset"], r["method"], f"{r['distill_seconds']:.4f}", f"{r['wall_seconds']:.2f}",
          f"{r['estimate_seconds']:.2f}",
          "—" if r.get("warm_seconds") is None else f"{r['warm_seconds']:.4f}",
          "—" if r["fit_seconds"] is None else f"{r['fit_seconds']:.4f}",
          "—" if r.get("warm_seconds") is None else f"{r['warm_seconds'] / r['fit_seconds']:.2f}x",
          f"{r['accuracy_distilled_model']:.4f}", f"{r['accuracy_full_model']:.4f}", f"{r['agreement']:.4f}",
          f"{r['w_rel_error']:.2e}",
          f"{r['distill_seconds'] / exact[r['dataset']]['distill_seconds']:.0f}x" if r["method"] == "KIP" else "—"]
         for r in rows],
    )
    print(table)
    notes = ("1 synthetic point per class, linear ridge regression with λ = 1e-3 fitted to the real data "
             "(λ_S = 0 for the exact construction, 1e-3 for KIP), float64, one thread. Accuracy: fraction in "
             "[0, 1] on the test set of the model fitted in closed form to the distilled set vs to all real "
             "training data; agreement: fraction of test predictions on which they agree. Distill seconds of "
             "the exact construction include its full-data fit; 'distill s (run)' is one cold call inside `ddspec "
             "run`, 'warm s' and 'full fit s' are medians of 5 warm calls in one process (the fair pair for the "
             "≤ 1.5x target). 'vs exact time': KIP's run seconds over the exact construction's. Convex rows: 1-2 points per class, the "
             "examples' iterations; their 'accuracy distilled' is the convex model solved on the distilled set. "
             "'run wall s': the whole `ddspec run` (distill, evaluation, the convex rows' full-data reference "
             "solve); 'estimate s': what `ddspec explain` predicts for distillation plus that reference solve.")
    keep = ("dataset", "method", "fit_seconds", "warm_seconds", "distill_seconds", "wall_seconds", "estimate_seconds",
            "accuracy_distilled_model", "accuracy_full_model", "agreement", "w_rel_error", "accuracy")
    save("closed_form", "Closed-form KRR distillation, KIP and convex inner problems", table,
         [{k: r.get(k) for k in keep} for r in rows], notes)


if __name__ == "__main__":
    main()
