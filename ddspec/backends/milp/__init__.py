"""MILP backend: categorical D̂ as integer counts of cells, by integer programming (docs/categorical.md).

D̂ = m records over categorical attributes, held as counts c_x ≥ 0 of cells x with Σ c = m (no permutation symmetry).
The task gives the statistics Q (k-way marginals, or a model's sufficient statistics) and t = Q h / n; the distance
the weights w. The program minimize Σ_r w_r e_r s.t. −e ≤ Q c − m t ≤ e, c ≥ 0 integer, Σ c = m runs by one of three
routes (``optimize.route``, or chosen by size with ``auto``):

1. ``exact``: the cells are the full joint domain, so the optimum is the best table of m records there is;
2. ``candidates``: the cells are the distinct real records: the best table of m real records (exact within it);
3. ``relaxation``: records relaxed to products of softmaxes, Adam on the logits, argmax rounding (no guarantee).

Routes 1 and 2 (with ``optimize.heuristic``) round the scaled real histogram by largest remainders, improve it by
greedy single-unit moves and warm-start the solver with it; every route returns the best of its table(s) and
``optimize.subsamples`` random real subsamples, and reports the solver's gap. torch is imported by :mod:`.run`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ddspec.backends.base import Backend, Estimate, missing_facts
from ddspec.registry import register_backend
from ddspec.spec.categorical import ROUTES

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: Facts the backend needs, with what to say when one is missing.
REQUIRED = (
    ("data:categorical", "data",
     "is not categorical (data: {kind: bayes_net}, categorical_csv or survival_categorical)"),
    ("task:statistics", "task", "does not preserve counts of records (task: {kind: marginals})"),
    ("optimize:integer", "optimize", "is not the integer program (optimize: {kind: milp})"),
)

#: Rough throughput of the heuristic's gathers and of a relaxation step's products (operations per second).
OPS_PER_SECOND = 2e8
#: Seconds per marginal and relaxation step: torch's per-operation overhead, which dominates at these sizes (measured
#: on a shared 2-core CPU: ~2 ms per step for Asia's 36 marginals).
SECONDS_PER_MARGINAL_STEP = 5e-5
#: Greedy moves assumed by the estimate (the search stops at the first local optimum, usually far sooner).
TYPICAL_MOVES = 50


@register_backend
class MilpBackend(Backend):
    name = "milp"
    summary = "categorical D̂ as integer counts: an integer program (HiGHS), a rounding heuristic, or a relaxation"
    preference = 15
    cpu_only = ("HiGHS solves the integer program on the CPU, and the tables, their statistics and the categorical "
                "classifiers of the evaluation are small numpy / scikit-learn computations")

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        problems = missing_facts(analysis, REQUIRED)
        if analysis.problem.distance is not None and not analysis.has("distance:statistics"):
            problems.append(f"the distance `{analysis.kind('distance')}` does not compare counts (use l1 or tv)")
        if problems:
            return False, "; ".join(problems)
        route, why = analysis.problem.optimize.route_of(analysis.problem.data.table())
        return True, f"{ROUTES[route]} ({why})"

    def resolve(self, analysis: Analysis) -> dict[str, Any]:
        """The task's distance (tv) when the spec declares none."""
        return {"distance": analysis.problem.task.default_distance()}

    def estimate(self, analysis: Analysis) -> Estimate:
        """Memory: the C x K rows of the cells and the (2R + 1) x (C + R) constraint matrix (3 nonzeros per cell and
        marginal); time: the heuristic's typical moves (a C x K gather and, per source, a
        correction over the cells sharing its rows: about as much again), or the relaxation's steps
        (m x R products and a per-marginal overhead); the solver's own time is bounded by its node limit, not
        estimated."""
        p = analysis.problem
        table, opt, m = p.data.table(), p.optimize, analysis.n_synthetic
        marginals = p.task.marginals(table.attributes, p.data.label_name())
        rows = sum(math.prod(table.sizes[j] for j in s) for s in marginals)
        route, _ = opt.route_of(table)
        if route == "relaxation":
            ops = 3 * opt.relax_steps * m * rows
            overhead = opt.relax_steps * len(marginals) * SECONDS_PER_MARGINAL_STEP
            return Estimate(8 * 4 * m * (rows + sum(table.sizes)), ops / OPS_PER_SECOND + overhead,
                            f"relaxation: {opt.relax_steps} Adam steps on {m} records x {rows} statistics")
        cells = table.domain_size if route == "exact" else table.distinct_train_rows()
        k = len(marginals)
        ops = TYPICAL_MOVES * 2 * cells * k if opt.heuristic else 0
        nodes = f"node limit {opt.max_nodes}" if opt.max_nodes is not None else "no node limit"
        return Estimate(8 * (3 * cells * k + 4 * rows + cells), ops / OPS_PER_SECOND,
                        f"{route}: {cells} cells x {rows} statistics ({k} marginals), solver {opt.solver}, {nodes}; "
                        "the solver's time is not estimated")

    def extra_metrics(self, problem: Any, data: Any, x: Any, y: Any) -> dict[str, Any]:
        """Total variation of D̂'s marginals, beside random subsamples and independent-marginal tables."""
        from ddspec.evaluate.categorical import marginal_figures

        return {"marginals": marginal_figures(problem, data, x, y)}
