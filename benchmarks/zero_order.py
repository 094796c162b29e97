"""Zero-order optimizer (``optimize: {kind: zero_order}``): the issue's three targets, measured — three tables,
one run, each row with PASS/FAIL.

1. Differentiable problems: zero-order vs the gradient (bilevel) optimizer. Each problem is one spec, run three
   times: ``optimize: {kind: gradient, optimizer: adam, iterations: 200}`` (bilevel backend, unrolled
   hypergradient) at outer lr 0.01 and 0.05 — zero-order is compared with the better of the two, so that a
   too-small gradient lr does not flatter it — and ``optimize: {kind: zero_order, ...}`` with the settings in
   PROBLEMS: antithetic, Adam lr 0.05 constant (the gradient's larger lr); wine (d = 78): M = 78 orthogonal
   directions, σ = 0.05, 400 iterations; digits (d = 640): M = 32 Gaussian directions, σ = 0.1, 300 iterations
   (the iteration counts chosen, from the measured cost per iteration, to keep the wall time near 7x the
   gradient run's). All runs: ``train: {steps: 10, lr: 0.1, momentum: 0.5}`` (SGD, full batch), an MLP with one
   hidden layer of 32, the whole real training set as the outer batch, learned inputs only (fixed hard labels,
   fixed inner lr), real-row initialisation, ``runtime.threads: 2``. The objective compared is not the per-step
   loss (one fresh initialisation per step: a noisy estimate) but ``fixed_objective``: the mean over 8 fixed
   initialisation seeds of the cross-entropy on the whole real training set after the same K = 10 inner steps on
   the distilled set — for the initial set (the real rows both runs start from), each gradient run's set and the
   zero-order set. PASS: zero-order's fixed objective ≤ 1.05 x the better gradient run's, and its distill wall
   time (``distill_seconds``) ≤ 10 x that run's. "Objective vs evaluations": each run's per-step loss
   (history.json), smoothed (mean of the last 10% of iterations up to that point), at 5 points; a gradient step
   counts 1 evaluation (+ its hypergradient), a zero-order step 2M (antithetic). Plot: results/zero_order.png
   (smoothed per-step loss vs evaluations and vs wall time, the per-step time taken as uniform).
2. Black box: digits, a scikit-learn decision tree, 10 per class: examples/digits_tree_zero_order.yaml as is
   (its ``baselines: [random]`` gives the random-real row, same evaluation), and the same spec with
   ``optimize: {kind: select, method: kcenter}`` (k-center coreset). Test accuracy, mean ± std over evaluation seeds
   0-4 (the tree's random_state). PASS: distilled mean > random mean.
3. One zero-order step's evaluations at M = 32, antithetic (64 perturbed sets), on digits 10 per class, K = 10
   full-batch SGD steps, real batch 64 per class: ``objective_values`` batched (torch.func.vmap) vs looped, median of
   3 timings after a warm-up, for an MLP (hidden [64]), a ConvNet (width 16, depth 2) and the decision tree (looped
   only: vmap does not apply). PASS: batched ≥ 3 x faster.

torch.set_num_threads(2) for everything (runtime.threads: 2 in the specs).

    .venv/bin/python benchmarks/zero_order.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import ROOT, markdown_table, pm, run_spec, save

import ddspec
from ddspec.backends.zero_order.run import EstimatorInner, Flat, TorchInner, objective_values, trained_outputs
from ddspec.components import zero_order
from ddspec.components.objectives.scenarios import Objective, task_loss
from ddspec.components.synthetic.set import SyntheticSet
from ddspec.components.training.unroll import InnerRecipe
from ddspec.registry import DATA, MODELS, RISKS
from ddspec.runtime.context import RunContext

THREADS = 2
EXAMPLES = ROOT / "examples"
RESULTS = ROOT / "benchmarks" / "results"
FIXED_SEEDS = list(range(8))
K = 10

BASE = {
    "synthetic": {"init": "real"},
    "model": {"kind": "mlp", "hidden": [32]},
    "task": {"kind": "test_error"},
    "train": {"kind": "gradient", "steps": K, "lr": 0.1, "momentum": 0.5},
    "evaluate": {"seeds": [0], "epochs": 50, "metrics": ["accuracy"]},
    "runtime": {"device": "cpu", "progress": False, "threads": THREADS, "checkpoint_every": 100000},
}
GRADIENT = {"kind": "gradient", "optimizer": "adam", "iterations": 200, "real_batch_per_class": 10000}
#: The gradient run at each outer lr; zero-order is compared with the better (lower fixed objective).
GRADIENT_LRS = (0.01, 0.05)
PROBLEMS = {  # name: (data, per class, zero-order settings)
    "wine, 2 per class (d = 78)": (
        {"kind": "tabular", "name": "wine"}, 2,
        {"kind": "zero_order", "estimator": "antithetic", "directions": "orthogonal", "samples": 78, "sigma": 0.05,
         "optimizer": "adam", "lr": 0.05, "lr_schedule": "constant", "iterations": 400,
         "real_batch_per_class": 10000}),
    "digits, 1 per class (d = 640)": (
        {"kind": "digits"}, 1,
        {"kind": "zero_order", "estimator": "antithetic", "directions": "gaussian", "samples": 32, "sigma": 0.1,
         "optimizer": "adam", "lr": 0.05, "lr_schedule": "constant", "iterations": 300,
         "real_batch_per_class": 10000}),
}


#: Settings tried before fixing PROBLEMS (same problems, same fixed objective), stated rather than hidden.
EXPLORED = (
    "Explored before fixing the settings (fixed objective, zero-order / gradient at Adam lr 0.01 unless noted): "
    "wine, zero-order lr 0.02, 200 iterations: 0.3418 vs 0.3504 (0.975, 2.7x wall); "
    "wine, zero-order and gradient both at lr 0.05 / 0.1, 200 iterations: 0.3399 vs 0.3398, 0.3403 vs 0.3416; "
    "digits, zero-order 200 iterations at lr 0.02 / 0.05 / 0.05 with σ = 0.05 / 0.1: "
    "2.1602 / 2.0871 / 2.1192 / 2.0037 vs 2.0214 (1.069 / 1.032 / 1.048 / 0.991, 4-5x wall); "
    "the gradient run at lr 0.05 / 0.1 reaches 1.8272 / 1.8221, hence the comparison with the better gradient "
    "lr (zero-order lr 0.05 / 0.1, 200 iterations: 1.142 / 1.100). "
    "After the final run, two more routes for digits against the lr 0.05 gradient run (1.8272): forward, M = 64, "
    "σ = 0.01, lr 0.1, 500 iterations: 2.0398 (1.116, 9.8x wall); antithetic, M = 32 orthogonal, lr 0.1, "
    "500 iterations: 2.0018 (1.096, 16.7x wall) — neither meets the target."
)


def spec_of(data: dict, per_class: int, optimize: dict, name: str) -> dict:
    return {**BASE, "name": name, "data": data, "synthetic": {**BASE["synthetic"], "per_class": per_class},
            "optimize": optimize}


def fixed_objective(problem, x: torch.Tensor, y: torch.Tensor, seeds: list[int] = FIXED_SEEDS) -> float:
    """Mean over ``seeds`` of the cross-entropy on the whole real training set of the model initialised from the
    seed and trained K steps on (x, y) by the problem's inner recipe (full batch, as the inner procedure)."""
    data = DATA.build(problem.data)
    recipe = InnerRecipe.of(problem.train)
    values = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = MODELS.build(problem.model, data.input_shape, data.targets.num_outputs)
        params0 = [q.detach() for q in model.parameters()]
        task = lambda out: data.targets.loss(out, data.y_train, reduction="none")
        outer = task_loss(model, data.x_train, task, lambda losses: losses.mean())
        fit = trained_outputs(model, params0, recipe, problem.train.lr, [None] * problem.train.steps,
                              data.targets.loss, outer)
        values.append(float(fit(x.float(), y)))
    return statistics.mean(values)


def smoothed(losses: list[float], at: int, window: int) -> float:
    return statistics.mean(losses[max(0, at + 1 - window): at + 1])


def differentiable_rows(tmp: Path, only: list[str] | None) -> tuple[list[dict], dict]:
    rows, curves = [], {}
    for label, (data, per_class, zo) in PROBLEMS.items():
        if only and not any(o in label for o in only):
            continue
        runs = {}
        optimizers = [(f"gradient, lr {lr:g}", {**GRADIENT, "lr": lr}) for lr in GRADIENT_LRS]
        for kind, optimize in [*optimizers, ("zero-order", zo)]:
            spec = spec_of(data, per_class, optimize, "zo-bench")
            metrics, result = run_spec(spec, [], tmp)
            history = json.loads((result.out / "history.json").read_text())["rows"]
            plan = ddspec.compile(ddspec.load(spec, ["runtime.progress=false"]))
            per_step = plan.problem.optimize.per_step() if kind == "zero-order" else 1
            losses = [r["loss"] for r in history]
            evals = [r.get("evaluations", (r["iteration"] + 1) * per_step) for r in history]
            runs[kind] = {"metrics": metrics, "problem": plan.problem, "losses": losses, "evaluations": evals,
                          "fixed": fixed_objective(plan.problem, result.x, result.y)}
            print(f"{label} {kind} ({metrics['backend']}): distill {metrics['distill_seconds']:.1f} s, "
                  f"fixed objective {runs[kind]['fixed']:.4f}", flush=True)
        _, init = run_spec(spec_of(data, per_class, {**zo, "iterations": 1, "lr": 1e-12}, "zo-bench-init"),
                           ["evaluate.epochs=1"], tmp)
        f_init = fixed_objective(runs["zero-order"]["problem"], init.x, init.y)
        best = min((k for k, _ in optimizers), key=lambda k: runs[k]["fixed"])
        f_grad, f_zo = runs[best]["fixed"], runs["zero-order"]["fixed"]
        wall_g = runs[best]["metrics"]["distill_seconds"]
        wall_z = runs["zero-order"]["metrics"]["distill_seconds"]
        curve = {}
        for kind, run in runs.items():
            n = len(run["losses"])
            window = max(1, n // 10)
            points = sorted({round(i * (n - 1) / 4) for i in range(5)})
            curve[kind] = [{"iteration": i, "evaluations": run["evaluations"][i],
                            "smoothed_loss": smoothed(run["losses"], i, window)} for i in points]
            curves[(label, kind)] = {"evaluations": run["evaluations"], "losses": run["losses"],
                                     "wall": run["metrics"]["distill_seconds"]}
        ratio, time_ratio = f_zo / f_grad, wall_z / wall_g
        rows.append({
            "table": "differentiable", "problem": label, "zero_order": zo, "gradient": GRADIENT,
            "gradient_lrs": list(GRADIENT_LRS), "best_gradient": best,
            "fixed_objective": {"initial": f_init, **{k: r["fixed"] for k, r in runs.items()}},
            "objective_ratio": ratio,
            "wall_seconds": {k: r["metrics"]["distill_seconds"] for k, r in runs.items()},
            "time_ratio": time_ratio, "curves": curve,
            "accuracy": {k: r["metrics"].get("accuracy") for k, r in runs.items()},
            "passed": ratio <= 1.05 and time_ratio <= 10,
        })
        print(f"{label}: fixed objective init {f_init:.4f}, {best} {f_grad:.4f}, zero-order {f_zo:.4f} "
              f"(ratio {ratio:.3f}); wall {wall_g:.1f} s vs {wall_z:.1f} s (x{time_ratio:.1f})", flush=True)
    return rows, curves


def black_box_rows(tmp: Path) -> list[dict]:
    spec = EXAMPLES / "digits_tree_zero_order.yaml"
    threads = [f"runtime.threads={THREADS}"]
    distilled, _ = run_spec(spec, threads, tmp)
    kcenter, _ = run_spec(spec, [*threads, "optimize={kind: select, method: kcenter}", "evaluate.baselines=[]"], tmp)
    random = distilled["baselines"]["random"]["accuracy"]
    rows = [
        {"table": "black_box", "method": "zero-order distilled", "accuracy": distilled["accuracy"],
         "distill_seconds": distilled["distill_seconds"], "backend": distilled["backend"]},
        {"table": "black_box", "method": "random real", "accuracy": random},
        {"table": "black_box", "method": "k-center coreset", "accuracy": kcenter["accuracy"],
         "distill_seconds": kcenter["distill_seconds"], "backend": kcenter["backend"]},
    ]
    rows[0]["passed"] = distilled["accuracy"]["mean"] > random["mean"]
    for r in rows:
        print(f"black box {r['method']}: {pm(r['accuracy'])}", flush=True)
    return rows


def timing_spec(model: dict | None) -> dict:
    spec = {"name": "zo-bench-timing", "data": {"kind": "digits"}, "synthetic": {"per_class": 10, "init": "real"},
            "task": {"kind": "test_error"},
            "optimize": {"kind": "zero_order", "samples": 32, "estimator": "antithetic", "real_batch_per_class": 64},
            "runtime": {"device": "cpu", "progress": False, "threads": THREADS}}
    if model is None:
        spec["train"] = {"kind": "sklearn", "estimator": "decision_tree"}
    else:
        spec.update(model=model, train={"kind": "gradient", "steps": K, "lr": 0.1, "momentum": 0.5})
    return spec


def time_step(spec: dict, batched: bool, tmp: Path, repeats: int = 3) -> float:
    """Median seconds of objective_values on the 64 perturbed points of one antithetic M = 32 step."""
    plan = ddspec.compile(ddspec.load(spec))
    p = plan.problem
    ctx = RunContext(p, plan.analysis, DATA.build(p.data), torch.device("cpu"), Path(tempfile.mkdtemp(dir=tmp)),
                     generator=torch.Generator().manual_seed(0))
    synthetic = SyntheticSet.create(p, ctx.data, ctx.generator)
    flat = Flat(synthetic)
    risk = RISKS.build(p.risk)
    objective = Objective(ctx, risk, synthetic.strata)
    inner = (TorchInner if plan.analysis.has("train:differentiable") else EstimatorInner)(ctx, objective)
    inner.batched = batched
    values = objective_values(ctx, inner, inner.draw(0, synthetic), flat, risk)
    v = zero_order.directions("gaussian", 32, flat.dim, ctx.generator, synthetic.z.dtype)
    points = zero_order.perturbations(flat.vector(), v, 0.1, "antithetic")
    assert points.shape[0] == 64
    values(points)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = values(points)
        times.append(time.perf_counter() - start)
    assert out.shape == (64,) and inner.batched == batched, "the batched evaluation fell back to a loop"
    return statistics.median(times)


def timing_rows(tmp: Path) -> list[dict]:
    rows = []
    for label, model in (("MLP hidden [64]", {"kind": "mlp", "hidden": [64]}),
                         ("ConvNet width 16, depth 2", {"kind": "convnet", "width": 16, "depth": 2}),
                         ("decision tree (sklearn)", None)):
        spec = timing_spec(model)
        looped = time_step(spec, False, tmp)
        batched = None if model is None else time_step(spec, True, tmp)
        row = {"table": "timing", "model": label, "looped_ms": 1e3 * looped,
               "batched_ms": None if batched is None else 1e3 * batched,
               "speedup": None if batched is None else looped / batched}
        row["passed"] = None if batched is None else row["speedup"] >= 3
        rows.append(row)
        print(f"timing {label}: looped {1e3 * looped:.0f} ms"
              + ("" if batched is None else f", batched {1e3 * batched:.0f} ms (x{looped / batched:.1f})"),
              flush=True)
    return rows


def verdict(passed: bool | None) -> str:
    return "—" if passed is None else ("PASS" if passed else "FAIL")


def plot(curves: dict) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    problems = sorted({label for label, _ in curves})
    fig, axes = plt.subplots(len(problems), 2, figsize=(11, 3.6 * len(problems)), squeeze=False)
    for i, label in enumerate(problems):
        for kind in [k for lab, k in curves if lab == label]:
            c = curves[(label, kind)]
            n = len(c["losses"])
            window = max(1, n // 10)
            loss = [smoothed(c["losses"], j, window) for j in range(n)]
            wall = [c["wall"] * (j + 1) / n for j in range(n)]
            axes[i][0].plot(c["evaluations"], loss, label=kind)
            axes[i][1].plot(wall, loss, label=kind)
        axes[i][0].set(xscale="log", xlabel="objective evaluations", ylabel="per-step loss (smoothed)", title=label)
        axes[i][1].set(xlabel="distill wall time (s)", ylabel="per-step loss (smoothed)", title=label)
        axes[i][0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "zero_order.png", dpi=90)
    return True


def render(rows: list[dict]) -> str:
    parts = []
    diff = [r for r in rows if r["table"] == "differentiable"]
    if diff:
        parts.append("## 1. Differentiable problems: zero-order vs gradient (bilevel)\n\n" + markdown_table(
            ["problem", "fixed objective: initial", *(f"gradient lr {lr:g}" for lr in GRADIENT_LRS), "zero-order",
             "zero-order / best gradient", "distill wall: best gradient", "zero-order", "ratio",
             "target ≤ 1.05 and ≤ 10x"],
            [[r["problem"], f"{r['fixed_objective']['initial']:.4f}",
              *(f"{r['fixed_objective'][f'gradient, lr {lr:g}']:.4f}" for lr in GRADIENT_LRS),
              f"{r['fixed_objective']['zero-order']:.4f}", f"{r['objective_ratio']:.3f}",
              f"{r['wall_seconds'][r['best_gradient']]:.1f} s", f"{r['wall_seconds']['zero-order']:.1f} s",
              f"{r['time_ratio']:.1f}x", verdict(r["passed"])] for r in diff]))
        curve_rows = []
        for r in diff:
            for kind, curve in r["curves"].items():
                curve_rows.append([r["problem"], kind, " · ".join(
                    f"{c['evaluations']:.0f}: {c['smoothed_loss']:.3f}" for c in curve)])
        parts.append("Objective vs evaluations (per-step loss, a noisy one-initialisation estimate, smoothed over "
                     "the last 10% of iterations; `evaluations: loss`; a gradient step counts 1 evaluation plus "
                     "its hypergradient):\n\n"
                     + markdown_table(["problem", "optimizer", "evaluations: smoothed per-step loss"], curve_rows))
    box = [r for r in rows if r["table"] == "black_box"]
    if box:
        parts.append("## 2. Black box: digits, decision tree, 10 per class\n\n" + markdown_table(
            ["set", "test accuracy (seeds 0-4)", "distill s", "target: distilled > random"],
            [[r["method"], pm(r["accuracy"]),
              "—" if r.get("distill_seconds") is None else f"{r['distill_seconds']:.1f}",
              verdict(r.get("passed"))] for r in box]))
    timing = [r for r in rows if r["table"] == "timing"]
    if timing:
        parts.append("## 3. One step's 64 evaluations (antithetic, M = 32): batched vs looped\n\n" + markdown_table(
            ["model", "looped ms/step", "batched ms/step", "speed-up", "target ≥ 3x"],
            [[r["model"], f"{r['looped_ms']:.0f}",
              "vmap n/a" if r["batched_ms"] is None else f"{r['batched_ms']:.0f}",
              "—" if r["speedup"] is None else f"{r['speedup']:.1f}x", verdict(r["passed"])] for r in timing]))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", default=["differentiable", "black_box", "timing"])
    parser.add_argument("--problems", nargs="+", default=None, help="substrings of PROBLEMS' labels")
    parser.add_argument("--name", default="zero_order")
    parser.add_argument("--no-save", action="store_true", help="print the table only (exploration)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    rows: list[dict] = []
    curves: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "differentiable" in args.tables:
            diff, curves = differentiable_rows(Path(tmp), args.problems)
            rows += diff
        if "black_box" in args.tables:
            rows += black_box_rows(Path(tmp))
        if "timing" in args.tables:
            rows += timing_rows(Path(tmp))
    plotted = bool(curves) and not args.no_save and plot(curves)
    total = time.perf_counter() - start
    table = render(rows)
    print(table)
    print(f"total {total:.0f} s")
    settings = "\n".join(f"- {label}: data {data}, {per_class} per class; zero-order {zo}"
                         for label, (data, per_class, zo) in PROBLEMS.items())
    notes = (f"Settings (fixed before the final run): common {json.dumps({k: BASE[k] for k in ('model', 'train')})}"
             f"; gradient optimize {GRADIENT} at lr {GRADIENT_LRS}; fixed objective over init seeds {FIXED_SEEDS}.\n{settings}\n\n"
             f"torch.set_num_threads({THREADS}). Total run time {total:.0f} s. "
             f"Command: `.venv/bin/python benchmarks/zero_order.py`.\n\n{EXPLORED}"
             + ("\n\n![objective vs evaluations and wall time](zero_order.png)" if plotted else ""))
    if not args.no_save:
        save(args.name, "Zero-order optimizer: the issue's targets", table, rows, notes)


if __name__ == "__main__":
    main()
