"""Bilevel backend: accuracy against random real samples and the best matching method, and the two
unroll engines' speed and memory — two tables, one run.

Accuracy: MNIST-1D at 1 and 10 samples per class, each method under the examples' evaluation protocol
(final epoch, mean ± std over 3 seeds): random real (coreset), DM (the best matching method in
benchmarks/results/matching.md), and the bilevel examples (test error, learned labels and lrs), and
trajectory matching and the ridge-head hypergradient with a model pool (FRePo) at 10 per class.

Learners: what the inner learner can reach at all. The ConvNet trained on all 4000 real training
samples (random batches of 256) for K steps of the examples' inner recipe (SGD, lr 0.05, momentum 0.9)
for K = 30, 100 and 300, and for the 300 steps that the evaluation protocol gives a set of 100 or fewer
samples (lr 0.01, x0.1 at half, weight decay 5e-4), and three faster 30- and 60-step recipes (SGD at
lr 0.2, Adam at lr 0.01): test accuracy, mean ± std over 3 seeds. A set
distilled for a K-step learner is judged by the evaluation's learner; when the first is much weaker
than the second, the set inherits the weaker learner's ceiling.

Engines: one outer step of the MNIST-1D 10-per-class problem (ConvNet1d, 100 synthetic samples, outer
loss on 2560 real samples) unrolled through K = 10 and 50 inner steps by `torch_func` and `higher`:
median seconds per outer step (after a warm-up step) and memory. Each measurement runs in a fresh
process. Memory: the bytes the unroll's graph holds for the backward pass (distinct tensor storages
seen by torch.autograd.graph.saved_tensors_hooks: deterministic, the dominant term), and the peak of
the step — torch.cuda.max_memory_allocated on CUDA, the growth of the process's peak RSS on CPU
(noisy: it includes the allocator's caching).

    .venv/bin/python benchmarks/bilevel.py                       # both tables
    .venv/bin/python benchmarks/bilevel.py --skip-accuracy       # learners and engines only (minutes)
    # or the accuracy rows in two processes, then the engines and one table:
    .venv/bin/python benchmarks/bilevel.py --ipc 1 --skip-engines --name bilevel_1 &
    .venv/bin/python benchmarks/bilevel.py --ipc 10 --skip-engines --name bilevel_10; wait
    .venv/bin/python benchmarks/bilevel.py --skip-accuracy --name bilevel_engines   # on an idle machine
    .venv/bin/python benchmarks/bilevel.py --collect bilevel_1 bilevel_10 bilevel_engines
    # one row again, replacing the earlier one in the collected table:
    .venv/bin/python benchmarks/bilevel.py --ipc 10 --methods "ridge head" --skip-engines --skip-learners \
        --name bilevel_ridge_head
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, load_rows, markdown_table, pm, run_spec, save

EXAMPLES = ROOT / "examples"
ROWS = [  # (per class, method, spec, overrides)
    (1, "random real", "mnist1d_dm.yaml", ["synthetic.per_class=1", "optimize={kind: select, method: random}",
                                           "distance=null"]),
    (1, "DM (matching)", "mnist1d_dm.yaml", ["synthetic.per_class=1"]),
    (1, "bilevel, test error", "mnist1d_bilevel_1.yaml", []),
    (10, "random real", "mnist1d_dm.yaml", ["optimize={kind: select, method: random}", "distance=null"]),
    (10, "DM (matching)", "mnist1d_dm.yaml", []),
    (10, "bilevel, test error", "mnist1d_bilevel.yaml", []),
    (10, "bilevel, teacher predictions", "mnist1d_bilevel_predictions.yaml", []),
    (10, "bilevel, trajectory", "mnist1d_trajectory.yaml", []),
    (10, "bilevel, ridge head + pool", "mnist1d_bilevel.yaml",
     ["optimize.hypergradient={kind: ridge_head}", "scenarios.pool={size: 10, max_steps: 300}", "train.steps=10",
      "train.learn_lr=false", "synthetic.learn_labels=false", "optimize.iterations=1000"]),
]


def accuracy_rows(ipcs: list[int], methods: list[str] | None) -> list[dict]:
    rows = []
    chosen = [r for r in ROWS if r[0] in ipcs and (not methods or any(m in r[1] for m in methods))]
    with tempfile.TemporaryDirectory() as tmp:
        for ipc, method, spec, overrides in chosen:
            metrics, _ = run_spec(EXAMPLES / spec, overrides, Path(tmp))
            rows.append({"ipc": ipc, "method": method, "spec": spec, "overrides": overrides, **metrics})
            print(f"ipc={ipc} {method}: {pm(metrics['accuracy'])}, {metrics['distill_seconds']:.1f} s", flush=True)
    return rows


LEARNERS = [  # (label, optimizer, steps, lr, weight decay, lr x0.1 at half)
    ("inner recipe, K = 30", "sgd", 30, 0.05, 0.0, False),
    ("inner recipe, K = 100", "sgd", 100, 0.05, 0.0, False),
    ("inner recipe, K = 300", "sgd", 300, 0.05, 0.0, False),
    ("evaluation protocol (300 steps)", "sgd", 300, 0.01, 5e-4, True),
    ("SGD lr 0.2, momentum 0.9, K = 30", "sgd", 30, 0.2, 0.0, False),
    ("Adam lr 0.01, K = 30", "adam", 30, 0.01, 0.0, False),
    ("Adam lr 0.01, K = 60", "adam", 60, 0.01, 0.0, False),
]


def learner_rows(seeds: int = 3) -> list[dict]:
    """Test accuracy of the example's model trained on all real training data by each learner of LEARNERS."""
    import torch
    import torch.nn.functional as F

    import ddspec
    from ddspec.registry import DATA, MODELS
    from ddspec.runtime.device import seed_everything

    problem = ddspec.compile(ddspec.load(EXAMPLES / "mnist1d_bilevel.yaml")).problem
    data = DATA.build(problem.data)
    rows = []
    for label, optimizer, steps, lr, decay, drop in LEARNERS:
        accuracies = []
        for seed in range(seeds):
            generator = seed_everything(seed, 1)
            model = MODELS.build(problem.model, data.input_shape, data.num_classes)
            opt = (torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay) if optimizer == "adam"
                   else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=decay))
            for k in range(steps):
                if drop and k == steps // 2:
                    opt.param_groups[0]["lr"] = lr / 10
                rows_k = torch.randint(len(data.x_train), (256,), generator=generator)
                opt.zero_grad()
                F.cross_entropy(model(data.x_train[rows_k]), data.y_train[rows_k]).backward()
                opt.step()
            with torch.no_grad():
                accuracies.append(float((model(data.x_test).argmax(1) == data.y_test).float().mean()))
        mean = statistics.mean(accuracies)
        rows.append({"learner": label, "steps": steps, "accuracy": {"mean": mean, "std": statistics.stdev(accuracies)}})
        print(f"{label}: {pm(rows[-1]['accuracy'])}", flush=True)
    return rows


def probe(engine: str, steps: int, repeats: int, device: str) -> dict:
    """One process: time ``repeats`` outer steps (after one warm-up) and their peak memory."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    import ddspec
    from ddspec.components.training.unroll import InnerData, InnerRecipe, unroll, unroll_higher, unrolled_hypergradient
    from ddspec.registry import DATA, MODELS
    from ddspec.runtime.device import seed_everything

    seed_everything(0, 1)
    problem = ddspec.compile(ddspec.load(EXAMPLES / "mnist1d_bilevel.yaml")).problem
    data = DATA.build(problem.data).to(device)
    model = MODELS.build(problem.model, data.input_shape, data.num_classes).to(device)
    names = [n for n, _ in model.named_parameters()]
    x = data.x_train[:100].clone().requires_grad_(True)
    y = data.y_train[:100]
    real = torch.randperm(len(data.x_train))[:2560].to(device)
    xr, yr = data.x_train[real], data.y_train[real]
    recipe = InnerRecipe("sgd", 0.5, 0.0, steps)

    def outer(params):
        return F.cross_entropy(functional_call(model, dict(zip(names, params)), (xr,)), yr)

    def step() -> float:
        start = time.perf_counter()
        inner = InnerData(x, y, torch.full((steps,), 0.01, device=device), [None] * steps, data.targets.loss)
        _, grads = unrolled_hypergradient(model, inner, recipe, outer, engine)
        torch.autograd.backward(inner.leaves(), grads)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step()  # warm-up
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        inner = InnerData(x, y, torch.full((steps,), 0.01, device=device), [None] * steps, data.targets.loss)
        (unroll_higher if engine == "higher" else unroll)(model, inner, recipe)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = [step() for _ in range(repeats)]
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"engine": engine, "K": steps, "seconds_per_step": statistics.median(times), "peak_bytes": peak,
            "graph_bytes": sum(storages.values()), "device": device}


def engine_rows(repeats: int, device: str) -> list[dict]:
    rows = []
    for steps in (10, 50):
        for engine in ("torch_func", "higher"):
            out = subprocess.run(
                [sys.executable, __file__, "--probe", engine, str(steps), "--repeats", str(repeats), "--device", device],
                check=True, capture_output=True, text=True, cwd=ROOT,
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"K={steps} {engine}: {rows[-1]['seconds_per_step']:.3f} s/step, graph "
                  f"{rows[-1]['graph_bytes'] / 2**20:.1f} MiB, peak {rows[-1]['peak_bytes'] / 2**20:.0f} MiB", flush=True)
    return rows


def row_key(row: dict) -> tuple:
    """What a row measures: a later row with the same key replaces it in --collect."""
    fields = {"accuracy": ("ipc", "method"), "engines": ("engine", "K"), "learners": ("learner",)}[row["table"]]
    return (row["table"], *(row[f] for f in fields))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-engines", action="store_true")
    parser.add_argument("--skip-learners", action="store_true")
    parser.add_argument("--ipc", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--methods", nargs="+", metavar="TEXT", help="only the accuracy rows whose method contains TEXT")
    parser.add_argument("--collect", nargs="+", metavar="NAME",
                        help="take the rows of earlier runs; a later NAME's row replaces an earlier one's")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--probe", nargs=2, metavar=("ENGINE", "K"), help=argparse.SUPPRESS)
    parser.add_argument("--name", default="bilevel")
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe[0], int(args.probe[1]), args.repeats, args.device)))
        return
    collected = list({row_key(r): r for name in args.collect or [] for r in load_rows(name)}.values())
    accuracy = [r for r in collected if r["table"] == "accuracy"]
    engines = [r for r in collected if r["table"] == "engines"]
    learners = [r for r in collected if r["table"] == "learners"]
    if not args.collect and not args.skip_accuracy:
        accuracy = accuracy_rows(args.ipc, args.methods)
    if not learners and not args.skip_learners:
        learners = learner_rows()
    if not engines and not args.skip_engines:
        engines = engine_rows(args.repeats, args.device)
    tables = []
    if accuracy:
        tables.append("## MNIST-1D accuracy\n\n" + markdown_table(
            ["per class", "method", "spec", "accuracy", "cluster-min", "distill s"],
            [[str(r["ipc"]), r["method"], f"examples/{r['spec']}" + (" " + " ".join(f"`{o}`" for o in r["overrides"])
                                                                    if r["overrides"] else ""),
              pm(r["accuracy"]), pm(r.get("cluster_min")), f"{r['distill_seconds']:.1f}"] for r in accuracy],
        ))
    if learners:
        tables.append("## What the learners reach on all real data (MNIST-1D, ConvNet1d)\n\n" + markdown_table(
            ["learner", "steps", "test accuracy"], [[r["learner"], str(r["steps"]), pm(r["accuracy"])] for r in learners],
        ))
    by = {(r["engine"], r["K"]): r for r in engines}
    tables += [] if not engines else [f"## Engines, one outer step ({args.device})\n\n" + markdown_table(
        ["K", "torch_func s/step", "higher s/step", "speed-up", "torch_func graph MiB", "higher graph MiB",
         "torch_func peak MiB", "higher peak MiB"],
        [[str(k), f"{by['torch_func', k]['seconds_per_step']:.3f}", f"{by['higher', k]['seconds_per_step']:.3f}",
          f"{by['higher', k]['seconds_per_step'] / by['torch_func', k]['seconds_per_step']:.2f}x",
          *(f"{by[e, k][m] / 2**20:.1f}" for m in ("graph_bytes", "peak_bytes") for e in ("torch_func", "higher"))]
         for k in (10, 50)],
    )]
    text = "\n\n".join(tables)
    print(text)
    notes = ("Accuracy: fraction in [0, 1], final-epoch test accuracy of models trained from scratch on the "
             "distilled data under the examples' protocol (300 epochs, SGD lr 0.01, momentum 0.9, no augmentation), "
             "mean ± sample std over 3 seeds. Distill seconds include training experts / teachers. One thread. "
             "Targets: 10 per class >= 0.70, 1 per class >= 0.40; torch_func >= 1.5x faster than higher with no "
             "more peak memory. Learners: test accuracy of the example's model trained on all real training data, "
             "mean ± std over 3 seeds. With --collect the rows come from the named result files, each measured at "
             "the date that file records.")
    save(args.name, "Bilevel backend", text, [{**r, "table": "accuracy"} for r in accuracy]
         + [{**r, "table": "engines"} for r in engines] + [{**r, "table": "learners"} for r in learners], notes)


if __name__ == "__main__":
    main()
