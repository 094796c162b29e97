"""The run of the MILP backend (see :mod:`ddspec.backends.milp` for the program and the routes).

Randomness: the random subsamples compared (and the relaxation's starting records) are drawn with numpy seeds taken
from ``ctx.generator``; the solvers are deterministic under a node limit (HiGHS: one thread, seed 0). Besides
``distilled.safetensors`` the run writes ``records.csv`` (D̂'s records with their category names) and
``solve.json`` (the route, each candidate table's objective, which one was returned, the solver's bound and gap),
both atomically.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from ddspec.backends.base import Distilled
from ddspec.components.categorical.cells import candidate_cells, cell_counts, expand, joint_cells
from ddspec.components.categorical.data import CategoricalDataset
from ddspec.components.categorical.heuristic import heuristic
from ddspec.components.categorical.objective import TableObjective
from ddspec.components.categorical.program import Solution, solve
from ddspec.components.categorical.relaxation import initial_logits, relaxed_loss, rounded, temperature
from ddspec.components.categorical.sampling import random_subsample
from ddspec.components.categorical.statistics import Statistics
from ddspec.errors import RunError
from ddspec.runtime.artifacts import RECORDS, SOLVE, atomic_write_json, atomic_write_text
from ddspec.runtime.context import RunContext


@dataclass
class Candidate:
    """A table D̂ might be: its ``source`` (solver, heuristic, relaxation, subsample), records and objective."""

    source: str
    codes: np.ndarray
    objective: float


def objective_of(ctx: RunContext) -> TableObjective:
    """The task's statistics of the real training table, scaled to m records, with the distance's weights."""
    p, data = ctx.problem, ctx.data
    m = ctx.analysis.n_synthetic
    marginals = p.task.marginals(data.attributes, data.attributes[data.label])
    return TableObjective.of(Statistics(data.sizes, tuple(marginals)), data.train_records(), m,
                             p.distance.row_weight(m, len(marginals)))


def subsample_seeds(ctx: RunContext, count: int) -> list[int]:
    """``count`` numpy seeds drawn from the run's generator."""
    return torch.randint(0, 2**31 - 1, (count,), generator=ctx.generator).tolist()


def best_subsample(real: np.ndarray, objective: TableObjective, seeds: list[int]) -> Candidate | None:
    """The random real subsample of m records (one per seed) with the lowest objective."""
    draws = [random_subsample(real, objective.m, seed) for seed in seeds]
    scored = [Candidate("subsample", codes, objective(codes)) for codes in draws]
    return min(scored, key=lambda c: c.objective, default=None)


@dataclass
class Outcome:
    """What a route produced: its candidate tables, figures for ``solve.json``, and the solver's solution (None
    for the relaxation)."""

    candidates: list[Candidate]
    info: dict[str, Any]
    solution: Solution | None = None


def integer_program(ctx: RunContext, objective: TableObjective, real: np.ndarray, route: str) -> Outcome:
    """The exact or candidate route: the heuristic (when asked), then the solver warm-started from it."""
    opt = ctx.problem.optimize
    cells = joint_cells(objective.statistics.sizes) if route == "exact" else candidate_cells(real)
    program = objective.program(cells)
    candidates, info = [], {"cells": len(cells), "statistics": program.num_rows}
    warm = None
    if opt.heuristic:
        start = time.perf_counter()
        warm = heuristic(program, cell_counts(real, cells) * (objective.m / len(real)), opt.moves)
        info["heuristic_seconds"] = time.perf_counter() - start
        candidates.append(Candidate("heuristic", expand(cells, warm), program.objective(warm)))
    solution = solve(program, opt.solver, warm, opt.max_nodes, opt.time_limit, ctx.show_progress)
    if solution.counts is not None:
        candidates.insert(0, Candidate("solver", expand(cells, solution.counts), solution.objective))
    info.update({"solver": solution.solver, "status": solution.status, "nodes": solution.nodes,
                 "solver_seconds": solution.seconds, "bound": _finite(solution.bound),
                 "solver_objective": _finite(solution.objective) if solution.counts is not None else None})
    return Outcome(candidates, info, solution)


def relaxation(ctx: RunContext, objective: TableObjective, real: np.ndarray) -> Outcome:
    """The relaxation route: Adam on the logits from random real records, one checkpointed step per iteration."""
    opt, sizes = ctx.problem.optimize, objective.statistics.sizes
    start = random_subsample(real, objective.m, subsample_seeds(ctx, 1)[0])
    logits = initial_logits(start, sizes).to(ctx.device).requires_grad_(True)
    adam = torch.optim.Adam([logits], lr=opt.relax_lr)
    loop = ctx.loop(opt.relax_steps, {"logits": logits, "opt": adam}, "relaxation",
                    f"lower optimize.relax_lr (now {opt.relax_lr:g})")
    for it in loop:
        adam.zero_grad()
        tau = temperature(it, opt.relax_steps, opt.relax_temperature)
        loss = relaxed_loss(logits, objective, tau)
        loss.backward()
        adam.step()
        loop.record(it, loss=float(loss.detach()), temperature=tau)
        loop.check_finite(it, logits=logits)
    codes = rounded(logits, sizes)
    return Outcome([Candidate("relaxation", codes, objective(codes))],
                   {"relaxed_objective": float(relaxed_loss(logits, objective, opt.relax_temperature).detach())})


def distill(ctx: RunContext) -> Distilled:
    """Run the route, keep the best candidate (ties: the earlier source), write the records and the solve report."""
    p, data = ctx.problem, cast(CategoricalDataset, ctx.data)  # the backend lowers data:categorical only
    real, objective = data.train_records(), objective_of(ctx)
    route, why = p.optimize.route_of(p.data.table())
    if route == "relaxation":
        outcome = relaxation(ctx, objective, real)
    else:
        outcome = integer_program(ctx, objective, real, route)
    sampled = best_subsample(real, objective, subsample_seeds(ctx, p.optimize.subsamples))
    candidates = outcome.candidates + ([sampled] if sampled is not None else [])
    if not candidates:
        raise RunError.one("MILP_NO_TABLE", "optimize", f"the solver found no table of {objective.m} records within "
                           f"its limits ({outcome.info.get('status')}), and nothing else was compared",
                           "set optimize.heuristic: true or optimize.subsamples >= 1, or raise optimize.max_nodes")
    best = min(candidates, key=lambda c: c.objective)
    gap = None if outcome.solution is None else _finite(outcome.solution.gap(best.objective))
    report = {"route": route, "why": why, "m": objective.m, "objective": best.objective, "returned": best.source,
              "candidates": {c.source: c.objective for c in candidates}, "gap": gap, **outcome.info}
    codes = best.codes[np.lexsort(best.codes.T[::-1])]
    atomic_write_text(ctx.out / RECORDS, data.csv_text(codes))
    atomic_write_json(ctx.out / SOLVE, report)
    return Distilled(*data.split(codes))


def _finite(value: float) -> float | None:
    """``value``, or None where it is NaN or infinite (JSON has no NaN)."""
    return value if math.isfinite(value) else None
