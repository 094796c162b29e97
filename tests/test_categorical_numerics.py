"""The numerics of categorical distillation against ground truth: the integer program's optimum against exhaustive
enumeration on tiny domains (three solvers), zero objective where a perfect table exists (m = n; r copies of a base
table, where naive Bayes on D̂ equals the fit on D), the statistics and TV by hand, the heuristic's feasibility and
local optimality by brute force over all single moves, and the relaxation exact at one-hot records."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ddspec.components.categorical.cells import candidate_cells, cell_counts, expand, joint_cells
from ddspec.components.categorical.classifiers import build_classifier
from ddspec.components.categorical.data import CategoricalDataset, split_codes
from ddspec.components.categorical.heuristic import greedy_moves, heuristic, largest_remainder
from ddspec.components.categorical.objective import TableObjective
from ddspec.components.categorical.program import solve
from ddspec.components.categorical.relaxation import initial_logits, relaxed_loss, relaxed_statistics
from ddspec.components.categorical.sampling import independent_marginals, random_subsample
from ddspec.components.categorical.statistics import Statistics
from ddspec.spec.categorical import MarginalsTask, NaiveBayesModel, SufficientStatisticsTask
from ddspec.spec.categorical_tables import ASIA, sample_network

SIZES = (2, 2, 3)
NAMES = ("a", "b", "y")
SOLVERS = ("highs", "scipy", "cvxpy")


def skewed_table(n: int, seed: int, sizes: tuple[int, ...] = SIZES) -> np.ndarray:
    """n records over ``sizes`` with dependent attributes (so the 2-way marginals are not products)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, sizes[0], n)
    b = (a + (rng.random(n) < 0.3)) % sizes[1]
    y = (a + b + (rng.random(n) < 0.4) * rng.integers(0, sizes[2], n)) % sizes[2]
    return np.stack([a, b, y], 1)


def objective_for(real: np.ndarray, m: int, task: object, weight: float | None = None) -> TableObjective:
    marginals = task.marginals(NAMES, "y")
    w = 1 / (2 * m * len(marginals)) if weight is None else weight
    return TableObjective.of(Statistics(SIZES, tuple(marginals)), real, m, w)


def brute_force(objective: TableObjective, cells: np.ndarray) -> float:
    """min over every multiset of m cells of the objective (exhaustive enumeration)."""
    best = np.inf
    for pick in itertools.combinations_with_replacement(range(len(cells)), objective.m):
        best = min(best, objective(cells[list(pick)]))
    return best


@pytest.mark.parametrize("m", [2, 3, 5])
@pytest.mark.parametrize("task", [MarginalsTask(ways=[1, 2]), SufficientStatisticsTask()], ids=["marginals", "nb"])
def test_program_optimum_equals_exhaustive_enumeration(m: int, task: object) -> None:
    """On the 12-cell joint domain every solver's optimum is the exhaustive minimum over all C(12+m−1, m) tables,
    and the solvers agree with each other."""
    objective = objective_for(skewed_table(37, seed=m), m, task)
    cells = joint_cells(SIZES)
    truth = brute_force(objective, cells)
    program = objective.program(cells)
    for solver in SOLVERS:
        solution = solve(program, solver, max_nodes=10_000)
        assert solution.counts is not None and solution.counts.sum() == m and (solution.counts >= 0).all()
        assert solution.objective == pytest.approx(truth, abs=1e-9), solver
        assert objective(expand(cells, solution.counts)) == pytest.approx(solution.objective, abs=1e-12)
        if solver != "cvxpy":
            assert solution.bound == pytest.approx(truth, abs=1e-6), solver  # proven optimal


def test_candidate_route_is_exact_within_the_real_rows() -> None:
    """Over the distinct real rows the optimum equals enumeration over those rows (and is ≥ the joint one)."""
    real = skewed_table(25, seed=11)
    objective = objective_for(real, 4, MarginalsTask(ways=[1, 2]))
    cells = candidate_cells(real)
    assert len(cells) < 12
    solution = solve(objective.program(cells), "highs", max_nodes=10_000)
    assert solution.objective == pytest.approx(brute_force(objective, cells), abs=1e-9)
    assert solution.objective >= brute_force(objective, joint_cells(SIZES)) - 1e-12


def test_warm_start_is_accepted_and_optimal() -> None:
    """highs warm-started from the heuristic reaches the same optimum as without; with no node to explore, the
    warm-started solve returns the warm table itself (even a poor one), where the cold solve has none."""
    real = skewed_table(40, seed=3)
    objective = objective_for(real, 6, MarginalsTask(ways=[1, 2]))
    cells = joint_cells(SIZES)
    program = objective.program(cells)
    warm = heuristic(program, cell_counts(real, cells) * 6 / 40, 100)
    cold, hot = solve(program, "highs"), solve(program, "highs", warm=warm)
    assert hot.objective == pytest.approx(cold.objective, abs=1e-12) == pytest.approx(brute_force(objective, cells))
    poor = np.zeros(len(cells), dtype=np.int64)
    poor[0] = 6  # every record in one cell
    assert program.objective(poor) > hot.objective
    accepted = solve(program, "highs", warm=poor, max_nodes=0)
    np.testing.assert_array_equal(accepted.counts, poor)
    assert solve(program, "highs", max_nodes=0).counts is None


@pytest.mark.parametrize("time_limit", [None, 60.0])
def test_highs_progress_bar_reports_the_solve_and_changes_nothing(time_limit: float | None, capsys) -> None:
    """With ``progress`` HiGHS's callbacks feed a bar (seconds, incumbent, bound, nodes); the solution is the same."""
    real = skewed_table(40, seed=5)
    program = objective_for(real, 7, MarginalsTask(ways=[1, 2])).program(joint_cells(SIZES))
    quiet = solve(program, "highs", time_limit=time_limit)
    capsys.readouterr()
    shown = solve(program, "highs", time_limit=time_limit, progress=True)
    err = capsys.readouterr().err
    assert "integer program (HiGHS)" in err and "nodes=" in err and f"objective={shown.objective:.4g}" in err
    assert ("/60.0 s" in err) == (time_limit is not None)
    np.testing.assert_array_equal(shown.counts, quiet.counts)
    assert shown.objective == quiet.objective and shown.nodes == quiet.nodes


@pytest.mark.parametrize("route", ["exact", "candidates"])
def test_m_equal_n_gives_zero(route: str) -> None:
    """With m = n the real table itself is feasible: the optimum (and the heuristic) is 0."""
    real = skewed_table(9, seed=5)
    objective = objective_for(real, 9, MarginalsTask(ways=[1, 2, 3]), weight=1.0)
    cells = joint_cells(SIZES) if route == "exact" else candidate_cells(real)
    program = objective.program(cells)
    assert solve(program, "highs").objective == 0.0
    assert program.objective(heuristic(program, cell_counts(real, cells).astype(float), 10)) == 0.0


def test_copies_of_a_base_table_give_zero_and_the_same_naive_bayes() -> None:
    """D = r copies of a base table of m records: the optimum is 0, and naive Bayes (MLE, α → 0) fitted on D̂
    equals the fit on D exactly (its sufficient statistics are the label and (label, attribute) counts)."""
    from sklearn.naive_bayes import CategoricalNB

    base = skewed_table(10, seed=8)
    real = np.tile(base, (7, 1))
    objective = objective_for(real, 10, SufficientStatisticsTask(), weight=1.0)
    cells = candidate_cells(real)
    solution = solve(objective.program(cells), "scipy")
    assert solution.objective == 0.0
    table = expand(cells, solution.counts)

    def fit(codes: np.ndarray) -> CategoricalNB:
        return CategoricalNB(alpha=1e-10, force_alpha=True, min_categories=np.array(SIZES[:2])).fit(codes[:, :2],
                                                                                                    codes[:, 2])

    ours, full = fit(table), fit(real)
    np.testing.assert_allclose(ours.class_log_prior_, full.class_log_prior_, rtol=0, atol=1e-12)
    for a, b in zip(ours.feature_log_prob_, full.feature_log_prob_):  # P(x_j = v | y = c), zero counts at ~α/N_c
        np.testing.assert_allclose(np.exp(a), np.exp(b), rtol=0, atol=1e-9)
    inputs = joint_cells(SIZES[:2])
    np.testing.assert_allclose(ours.predict_proba(inputs), full.predict_proba(inputs), rtol=0, atol=1e-8)
    # the same through ddspec's model naive_bayes (α → 0), predicted on every input
    data = CategoricalDataset("t", *split_codes(real, 2), *split_codes(base, 2), 3, attributes=NAMES,
                              levels=tuple(tuple(map(str, range(k))) for k in SIZES), label=2)
    model = build_classifier(NaiveBayesModel(alpha=1e-10), data)
    x = torch.as_tensor(inputs, dtype=torch.float32)
    on_table, on_real = (model.fit(*split_codes(codes, 2), seed=0)(x) for codes in (table, real))
    torch.testing.assert_close(on_table.exp(), on_real.exp(), rtol=0, atol=1e-6)


def test_statistics_and_tv_by_hand() -> None:
    """Rows, counts and TV of a 2-record table, against a hand count."""
    stats = Statistics((2, 3), ((0,), (1,), (0, 1)))
    codes = np.array([[1, 2], [0, 2]])
    assert stats.num_rows == 2 + 3 + 6
    np.testing.assert_array_equal(stats.rows(codes), [[1, 4, 5 + 5], [0, 4, 5 + 2]])
    np.testing.assert_array_equal(stats.counts(codes), [1, 1, 0, 0, 2, 0, 0, 1, 0, 0, 1])
    other = np.array([[0, 0], [0, 0], [0, 0], [1, 2]])  # a: (3/4, 1/4); b: (3/4, 0, 1/4)
    tv = stats.tv(stats.counts(codes), stats.counts(other))
    np.testing.assert_allclose(tv, [0.5 * (0.25 + 0.25), 0.5 * (0.75 + 0.75), 0.5 * (0.5 + 0.75 + 0.25)])
    dense = stats.matrix(joint_cells((2, 3))).toarray()
    np.testing.assert_array_equal(dense @ cell_counts(codes, joint_cells((2, 3))), stats.counts(codes))


def test_held_out_marginals_are_one_order_higher_over_the_same_attributes() -> None:
    """1- and 2-way over 4 attributes: held out are the C(4, 3) = 4 triples; over a declared subset, its triples
    only; naive Bayes's (label, attribute) pairs: every triple of all attributes; the full joint: none."""
    names = ("a", "b", "c", "y")
    assert MarginalsTask(ways=[1, 2]).held_out(names, "y") == [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
    assert MarginalsTask(ways=[2], attributes=["y", "a", "c"]).held_out(names, "y") == [(0, 2, 3)]
    assert SufficientStatisticsTask().marginals(names, "b") == [(1,), (0, 1), (1, 2), (1, 3)]
    assert len(SufficientStatisticsTask().held_out(names, "b")) == 4
    assert MarginalsTask(ways=[1, 4]).held_out(names, "y") == []


def test_tv_distance_objective_is_the_mean_total_variation() -> None:
    """With the tv weights 1/(2 m |S|), the program's objective equals the mean over the marginals of ½ Σ |p̂ − p|
    (computed by hand from the normalized marginals), and l1 is the plain sum of count errors."""
    from ddspec.spec.categorical import L1Distance, TvDistance

    real, m = skewed_table(50, seed=4), 7
    codes = skewed_table(m, seed=9)
    marginals = tuple(MarginalsTask(ways=[1, 2]).marginals(NAMES, "y"))
    stats = Statistics(SIZES, marginals)
    tv = TableObjective.of(stats, real, m, TvDistance().row_weight(m, len(marginals)))
    l1 = TableObjective.of(stats, real, m, L1Distance().row_weight(m, len(marginals)))
    by_hand = []
    for s in marginals:
        cells = list(itertools.product(*(range(SIZES[j]) for j in s)))
        p_hat = [np.mean([tuple(r[list(s)]) == v for r in codes]) for v in cells]
        p = [np.mean([tuple(r[list(s)]) == v for r in real]) for v in cells]
        by_hand.append(0.5 * np.abs(np.subtract(p_hat, p)).sum())
    assert tv(codes) == pytest.approx(np.mean(by_hand), abs=1e-12)
    assert l1(codes) == pytest.approx(2 * m * np.sum(by_hand), abs=1e-9)


def test_largest_remainder_rounding() -> None:
    """Σ = m, within 1 of y, and the largest remainders get the units (ties to the lower index)."""
    y = np.array([1.5, 0.2, 2.7, 0.6, 0.0])
    c = largest_remainder(y, 5)
    np.testing.assert_array_equal(c, [1, 0, 3, 1, 0])
    np.testing.assert_array_equal(largest_remainder(np.array([0.5, 0.5, 1.0]), 2), [1, 0, 1])


def test_greedy_moves_end_at_a_local_optimum_by_brute_force() -> None:
    """The heuristic's table is feasible, no worse than its rounding, and no single-unit move improves it."""
    real = skewed_table(60, seed=21)
    objective = objective_for(real, 7, MarginalsTask(ways=[1, 2]))
    cells = joint_cells(SIZES)
    program = objective.program(cells)
    fractional = cell_counts(real, cells) * 7 / 60
    start = largest_remainder(fractional, 7)
    start[np.argmax(start)] -= 1  # a worse start, so the moves have work to do
    start[np.argmin(start)] += 1
    counts = greedy_moves(program, start, 1000)
    assert counts.sum() == 7 and (counts >= 0).all() and counts.dtype == np.int64
    assert program.objective(counts) <= program.objective(start)
    value = program.objective(counts)
    for i in np.flatnonzero(counts):
        for j in range(len(cells)):
            moved = counts.copy()
            moved[i] -= 1
            moved[j] += 1
            assert program.objective(moved) >= value - 1e-12


def test_relaxation_is_exact_at_one_hot_records_and_differentiable() -> None:
    """Near-one-hot logits give the table's counts; the relaxed loss's gradient matches finite differences."""
    real = skewed_table(30, seed=2)
    objective = objective_for(real, 4, MarginalsTask(ways=[1, 2]))
    codes = real[:4]
    logits = 60 * initial_logits(codes, SIZES).exp()  # the record's level far above the others
    np.testing.assert_allclose(relaxed_statistics(logits, objective).numpy(), objective.statistics.counts(codes),
                               atol=1e-12)
    assert float(relaxed_loss(logits, objective)) == pytest.approx(objective(codes), abs=1e-12)
    theta = torch.randn(4, sum(SIZES), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(lambda t: relaxed_loss(t, objective, tau=0.7), (theta.requires_grad_(),))


def test_baseline_samplers() -> None:
    """Random subsamples are real rows without replacement; independent marginals keep the 1-way marginals."""
    real = np.asarray(sample_network(ASIA, 4000, seed=0))
    numbered = np.column_stack([np.arange(len(real)), real])  # a record number makes every row distinct
    sub = random_subsample(numbered, 50, seed=1)
    assert len(np.unique(sub[:, 0])) == 50  # no record drawn twice
    np.testing.assert_array_equal(sub[:, 1:], real[sub[:, 0]])
    assert not np.array_equal(sub, random_subsample(numbered, 50, seed=2))
    table = independent_marginals(real, (2,) * 8, 4000, seed=2)
    stats = Statistics((2,) * 8, tuple((j,) for j in range(8)))
    assert stats.tv(stats.counts(table), stats.counts(real)).max() < 0.03


def test_asia_sampler_matches_its_tables() -> None:
    """Ancestral sampling reproduces the Asia tables: P(either) = P(lung or tub), P(dysp | bronc, either)."""
    codes = sample_network(ASIA, 200_000, seed=0)
    names = [node.name for node in ASIA]
    col = {n: codes[:, names.index(n)] for n in names}
    np.testing.assert_array_equal(col["either"], col["lung"] | col["tub"])
    assert col["smoke"].mean() == pytest.approx(0.5, abs=0.005)
    for bronc, either, p in [(0, 0, 0.1), (0, 1, 0.7), (1, 0, 0.8), (1, 1, 0.9)]:
        rows = (col["bronc"] == bronc) & (col["either"] == either)
        assert col["dysp"][rows].mean() == pytest.approx(p, abs=4 / np.sqrt(rows.sum()))
