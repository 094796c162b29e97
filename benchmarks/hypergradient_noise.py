"""How much the bilevel hypergradient of a distilled set agrees across scenarios (random initialisations).

For each run folder (written by ``ddspec run`` with the bilevel backend and a test_error task), take the
distilled inputs x, labels and inner lrs, draw ``--inits`` fresh initialisations of the run's model, and
compute each one's unrolled hypergradient g_s = dL/dx (L: cross-entropy on ``--real`` random real training
samples after the run's K inner steps on the whole synthetic set). Printed per run: the outer losses, the
norms ‖g_s‖ and max/median of them (heavy tails: one scenario dominates the step), and their mean
pairwise cosine (1: all scenarios agree; 0: orthogonal). When the scenarios' directions are nearly
orthogonal, an outer step follows the drawn scenario's noise more than the expected hypergradient.

    .venv/bin/python benchmarks/hypergradient_noise.py RUN [RUN ...] --name hypergradient_noise

The runs of benchmarks/results/hypergradient_noise.md (``ddspec run examples/mnist1d_bilevel.yaml --out
runs/NAME`` with these overrides; about 1 to 35 minutes each on one CPU thread):

    k30_1it            --set optimize.iterations=1 --set 'evaluate.seeds=[0]'
    k30_300it          --set optimize.iterations=300
    k30_inits4_300it   --set optimize.iterations=300 --set scenarios.inits=4
    k60_600it          --set train.steps=60
    k100_450it         --set train.steps=100 --set optimize.iterations=450
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

from _common import markdown_table, save


def measure(run: Path, inits: int, real: int, seed: int) -> dict:
    import torch

    import ddspec
    from ddspec.components.training.unroll import InnerData, InnerRecipe, train_loss, unrolled_hypergradient
    from ddspec.registry import DATA, MODELS
    from ddspec.runtime.artifacts import load_distilled
    from ddspec.runtime.device import seed_everything

    generator = seed_everything(seed, 1)
    problem = ddspec.compile(ddspec.load(run / "spec.yaml")).problem
    data = DATA.build(problem.data)
    distilled = load_distilled(run / "distilled.safetensors")
    t = problem.train
    lrs = distilled.get("lr", torch.full((t.steps,), t.lr))
    x = distilled["x"].clone().requires_grad_(True)
    rows = torch.randperm(len(data.x_train), generator=generator)[:real]
    xr, yr = data.x_train[rows], data.y_train[rows]
    recipe = InnerRecipe.of(t)
    grads, losses = [], []
    for _ in range(inits):
        model = MODELS.build(problem.model, data.input_shape, data.num_classes)
        names = [n for n, _ in model.named_parameters()]

        def outer(params, model=model, names=names):
            return train_loss(model, names, params, xr, yr, data.targets.loss)

        inner = InnerData(x, distilled["y"], lrs, [None] * t.steps, data.targets.loss)
        loss, (g,) = unrolled_hypergradient(model, inner, recipe, outer)
        grads.append(g.flatten())
        losses.append(loss)
    norms = [float(g.norm()) for g in grads]
    cosines = [float(a @ b / (a.norm() * b.norm())) for a, b in itertools.combinations(grads, 2)]
    return {"run": str(run), "K": t.steps, "losses": losses, "norms": norms, "mean_cosine": statistics.mean(cosines),
            "max_over_median": max(norms) / statistics.median(norms), "inits": inits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--inits", type=int, default=4)
    parser.add_argument("--real", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="hypergradient_noise")
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        rows.append(measure(run, args.inits, args.real, args.seed))
        print(rows[-1], flush=True)
    table = markdown_table(
        ["run", "K", "outer loss per init", "‖g_s‖ per init", "max / median ‖g_s‖", "mean pairwise cosine"],
        [[Path(r["run"]).name, str(r["K"]), " ".join(f"{v:.2f}" for v in r["losses"]),
          " ".join(f"{v:.3g}" for v in r["norms"]), f"{r['max_over_median']:.1f}", f"{r['mean_cosine']:.3f}"]
         for r in rows],
    )
    print(table)
    notes = (f"{args.inits} fresh initialisations per run, outer loss on {args.real} random real training samples, "
             "the whole synthetic set at every inner step, the run's (learned) inner lrs.")
    save(args.name, "Bilevel hypergradients across scenarios", table, rows, notes)


if __name__ == "__main__":
    main()
