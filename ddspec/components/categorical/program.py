"""The integer program over D̂'s counts, and its solvers.

    minimize Σ_r w_r e_r   subject to   −e ≤ Q c − m t ≤ e,   Σ_x c_x = m,   c ≥ 0 integer,

over C cells x (Q: R x C statistics of the cells, m t: the real statistics scaled to m records). Variables
(c, e); the rows [Q, −I] (c, e) ≤ m t, [Q, I] (c, e) ≥ m t and 1ᵀc = m. Solvers: ``highs`` (highspy, optionally
warm-started from a feasible table by ``setSolution``), ``scipy`` (``scipy.optimize.milp``) and ``cvxpy`` (cvxpy's
HiGHS interface, which warm-starts only from its own previous solve, so it takes none). The work is bounded by
``max_nodes`` branch-and-bound nodes (reproducible) and optionally by ``time_limit`` seconds (machine-dependent).
HiGHS reports its progress through callbacks: with ``progress`` a bar shows the seconds spent (of the time limit),
the incumbent's objective, the bound and the nodes; scipy and cvxpy solve without a bar.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class CountProgram:
    """The program: ``cell_rows`` (C x K: the statistics row of each cell in each marginal), ``num_rows`` R,
    ``target`` m t (R), ``weights`` w (R), ``m``."""

    cell_rows: np.ndarray
    num_rows: int
    target: np.ndarray
    weights: np.ndarray
    m: int

    @property
    def num_cells(self) -> int:
        return len(self.cell_rows)

    def statistics(self, counts: np.ndarray) -> np.ndarray:
        """Q c."""
        k = self.cell_rows.shape[1]
        return np.bincount(self.cell_rows.ravel(), np.repeat(np.asarray(counts, dtype=np.float64), k),
                           minlength=self.num_rows)

    def objective(self, counts: np.ndarray) -> float:
        """Σ_r w_r |(Q c)_r − m t_r|."""
        return float(self.weights @ np.abs(self.statistics(counts) - self.target))

    def matrix(self) -> sp.csc_matrix:
        """Q (R x C)."""
        c, k = self.cell_rows.shape
        return sp.csc_matrix((np.ones(c * k), (self.cell_rows.ravel(), np.repeat(np.arange(c), k))),
                             shape=(self.num_rows, c))

    def constraints(self) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
        """(A, lower, upper) of the rows over the variables (c, e): Q c − e ≤ m t, Q c + e ≥ m t, 1ᵀc = m."""
        q, eye = self.matrix(), sp.identity(self.num_rows, format="csc")
        ones = sp.csc_matrix(np.ones((1, self.num_cells)))
        a = sp.vstack([sp.hstack([q, -eye]), sp.hstack([q, eye]),
                       sp.hstack([ones, sp.csc_matrix((1, self.num_rows))])]).tocsc()
        inf = np.full(self.num_rows, np.inf)
        lower = np.concatenate([-inf, self.target, [self.m]])
        upper = np.concatenate([self.target, inf, [self.m]])
        return a, lower, upper

    def cost(self) -> np.ndarray:
        """The objective's coefficients over (c, e): 0 for the counts, w for the errors."""
        return np.concatenate([np.zeros(self.num_cells), self.weights])

    def with_errors(self, counts: np.ndarray) -> np.ndarray:
        """The feasible point (c, e) of counts c, e = |Q c − m t| (a warm start)."""
        return np.concatenate([counts, np.abs(self.statistics(counts) - self.target)])


@dataclass(frozen=True)
class Solution:
    """A solver's answer: its best ``counts`` (None when it found none), their ``objective``, the proven lower
    ``bound`` (NaN when the solver reports none), ``status`` in words, branch-and-bound ``nodes`` and ``seconds``."""

    counts: np.ndarray | None
    objective: float
    bound: float
    status: str
    nodes: int
    seconds: float
    solver: str

    def gap(self, objective: float) -> float:
        """The relative gap of ``objective`` to the bound, (objective − bound)/objective (0 at objective 0; NaN
        without a bound)."""
        if math.isnan(self.bound):
            return math.nan
        return 0.0 if objective <= 1e-12 else max(objective - self.bound, 0.0) / objective


def solve(program: CountProgram, solver: str, warm: np.ndarray | None = None, max_nodes: int | None = None,
          time_limit: float | None = None, progress: bool = False) -> Solution:
    """Solve ``program`` with ``solver`` (highs, scipy or cvxpy) within the limits; ``warm`` (feasible counts)
    warm-starts highs; ``progress`` draws highs's bar (module docstring)."""
    start = time.perf_counter()
    limits = Limits(max_nodes, time_limit, progress)
    counts, objective, bound, status, nodes = SOLVERS[solver](program, warm, limits)
    if counts is not None:
        integral = np.rint(np.clip(counts, 0, None)).astype(np.int64)
        if integral.sum() != program.m or np.abs(counts - integral).max(initial=0.0) > 1e-6:
            counts, status = None, f"{status} (no integer table of m records returned)"
        else:
            counts, objective = integral, program.objective(integral)  # e tight: |Q c − m t|, on the integers
    return Solution(counts, objective, bound, status, nodes, time.perf_counter() - start, solver)


Answer = tuple[np.ndarray | None, float, float, str, int]


@dataclass(frozen=True)
class Limits:
    """What bounds a solve (``max_nodes``, ``time_limit`` seconds) and whether it shows its ``progress``."""

    max_nodes: int | None = None
    time_limit: float | None = None
    progress: bool = False


class SolveBar:
    """A tqdm bar over a HiGHS solve's seconds (total: the time limit, if any), fed by its MIP interrupt callback
    with the incumbent's objective (primal bound), the dual bound and the branch-and-bound nodes."""

    def __init__(self, time_limit: float | None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=time_limit, desc="integer program (HiGHS)", unit="s", dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} s{postfix}" if time_limit else
                        "{desc}: {n:.1f} s{postfix}")

    def tick(self, event: Any) -> None:
        data = event.data_out
        self.bar.set_postfix({"objective": f"{data.mip_primal_bound:.4g}", "bound": f"{data.mip_dual_bound:.4g}",
                              "nodes": int(data.mip_node_count)}, refresh=False)
        self.bar.update(max(float(data.running_time) - self.bar.n, 0.0))

    def close(self) -> None:
        self.bar.close()


def _highs(program: CountProgram, warm: np.ndarray | None, limits: Limits) -> Answer:
    import highspy

    a, lower, upper = program.constraints()
    c, r = program.num_cells, program.num_rows
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = c + r, a.shape[0]
    lp.col_cost_ = program.cost()
    lp.col_lower_ = np.zeros(c + r)
    lp.col_upper_ = np.concatenate([np.full(c, float(program.m)), np.full(r, highspy.kHighsInf)])
    lp.row_lower_ = np.where(np.isinf(lower), -highspy.kHighsInf, lower)
    lp.row_upper_ = np.where(np.isinf(upper), highspy.kHighsInf, upper)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = a.indptr, a.indices, a.data
    lp.integrality_ = [highspy.HighsVarType.kInteger] * c + [highspy.HighsVarType.kContinuous] * r
    h = highspy.Highs()
    for name, value in _highs_options(limits).items():
        h.setOptionValue(name, value)
    h.passModel(lp)
    if warm is not None:
        solution = highspy.HighsSolution()
        solution.col_value = list(program.with_errors(warm))
        solution.value_valid = True
        h.setSolution(solution)
    bar = SolveBar(limits.time_limit) if limits.progress else None
    if bar is not None:
        h.cbMipInterrupt.subscribe(bar.tick)
    try:
        h.run()
    finally:
        if bar is not None:
            bar.close()
    info, status = h.getInfo(), h.modelStatusToString(h.getModelStatus())
    values = np.asarray(h.getSolution().col_value)
    found = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible and len(values) == c + r
    bound = float(info.mip_dual_bound) if math.isfinite(info.mip_dual_bound) else math.nan
    counts = values[:c] if found else None
    return counts, float(info.objective_function_value), bound, status, int(info.mip_node_count)


def _highs_options(limits: Limits) -> dict[str, object]:
    """Quiet, proven optimality (no relative or absolute gap tolerance), one thread, fixed seed, the limits."""
    options: dict[str, object] = {"output_flag": False, "mip_rel_gap": 0.0, "mip_abs_gap": 1e-9, "threads": 1,
                                  "random_seed": 0}
    if limits.max_nodes is not None:
        options["mip_max_nodes"] = int(limits.max_nodes)
    if limits.time_limit is not None:
        options["time_limit"] = float(limits.time_limit)
    return options


def _scipy(program: CountProgram, warm: np.ndarray | None, limits: Limits) -> Answer:
    from scipy.optimize import Bounds, LinearConstraint, milp

    a, lower, upper = program.constraints()
    c, r = program.num_cells, program.num_rows
    options: dict[str, object] = {"disp": False, "mip_rel_gap": 0.0}
    if limits.max_nodes is not None:
        options["node_limit"] = int(limits.max_nodes)
    if limits.time_limit is not None:
        options["time_limit"] = float(limits.time_limit)
    result = milp(program.cost(), constraints=LinearConstraint(a, lower, upper),
                  integrality=np.concatenate([np.ones(c), np.zeros(r)]),
                  bounds=Bounds(np.zeros(c + r), np.concatenate([np.full(c, float(program.m)), np.full(r, np.inf)])),
                  options=options)
    bound = result.get("mip_dual_bound")
    counts = None if result.x is None else result.x[:c]
    return (counts, math.nan if result.fun is None else float(result.fun),
            math.nan if bound is None else float(bound), result.message, int(result.get("mip_node_count") or 0))


def _cvxpy(program: CountProgram, warm: np.ndarray | None, limits: Limits) -> Answer:
    import cvxpy as cp

    counts = cp.Variable(program.num_cells, integer=True)
    residual = program.matrix() @ counts - program.target
    problem = cp.Problem(cp.Minimize(program.weights @ cp.abs(residual)), [counts >= 0, cp.sum(counts) == program.m])
    options = {k: v for k, v in _highs_options(limits).items() if k != "output_flag"}
    problem.solve(solver=cp.HIGHS, **options)
    info = problem.solver_stats.extra_stats  # HiGHS's HighsInfo
    bound = float(info.mip_dual_bound) if info is not None and math.isfinite(info.mip_dual_bound) else math.nan
    nodes = int(info.mip_node_count) if info is not None else 0
    return counts.value, float(problem.value) if problem.value is not None else math.nan, bound, problem.status, nodes


SOLVERS = {"highs": _highs, "scipy": _scipy, "cvxpy": _cvxpy}
