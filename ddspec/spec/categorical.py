"""Categorical data distilled by integer programming. The kinds of every axis this case study adds live here:

- ``data: {kind: bayes_net}`` (records sampled from a discrete Bayesian network: the Asia network's tables, or a
  seeded random network) and ``data: {kind: categorical_csv}`` (declared categorical columns of a CSV file); the
  inputs are the integer codes of every attribute but the ``label``, the targets the label's codes;
- ``model: naive_bayes | logistic_onehot | decision_tree``: scikit-learn classifiers fitted to categorical records
  (the evaluation's train-on-synthetic, test-on-real models);
- ``task: {kind: marginals, ways: [1, 2]}`` and ``task: {kind: sufficient_statistics, model: naive_bayes}``: the
  statistics Q preserved, linear in the counts of D̂'s cells; the target is t = Q h / n, h the real histogram;
- ``distance: l1 | tv``: Σ_r w_r |(Q c)_r − m t_r| with w_r = 1 (l1) or 1/(2 m |S|) (tv: the mean total
  variation over the |S| marginals);
- ``optimize: {kind: milp}``: the integer program over the counts c ≥ 0, Σ c = m, by one of three routes (the
  full joint domain, the distinct real rows, or a differentiable relaxation; :meth:`MilpOptimize.route`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from ddspec.errors import Finding, SpecError
from ddspec.registry import DATA, DISTANCES, MODELS, OPTIMIZERS, TASKS
from ddspec.spec.base import FileSpec, Fraction, LearningRate, NonNegativeInt, PositiveFloat, PositiveInt
from ddspec.spec.categorical_tables import (
    ASIA,
    CategoricalTable,
    Node,
    csv_table,
    network_table,
    random_network,
)
from ddspec.spec.data import DataBase, DataInfo
from ddspec.spec.distance import DistanceBase
from ddspec.spec.model import ModelBase
from ddspec.spec.optimize import OptimizeBase
from ddspec.spec.task import TaskBase

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: A marginal: the indices of its attributes (columns of the table), increasing.
Marginal = tuple[int, ...]


class CategoricalData(DataBase):
    """Categorical records: :meth:`table` gives the codes, and the inputs are every attribute but ``label``."""

    def table(self) -> CategoricalTable:
        """The records as integer codes (cached; numpy only)."""
        raise NotImplementedError

    def label_name(self) -> str:
        """The class label's attribute."""
        raise NotImplementedError

    def describe(self) -> DataInfo:
        table, label = self.table(), self.label_name()
        if label not in table.attributes:
            raise SpecError.one("UNKNOWN_ATTRIBUTE", "data.label", f"the data has no attribute `{label}`",
                                f"use one of: {', '.join(table.attributes)}")
        j = table.index(label)
        counts = np.bincount(table.train[:, j], minlength=table.sizes[j])
        return DataInfo(f"{self.kind}:{label}", (len(table.attributes) - 1,), table.sizes[j],
                        tuple(int(c) for c in counts), len(table.test))


@DATA.register(builder="ddspec.components.categorical.data:build_categorical", capabilities=("categorical",))
class BayesNetData(CategoricalData):
    """Records drawn by ancestral sampling from a discrete Bayesian network: ``asia`` (8 binary attributes, the
    chest-clinic network's public tables: asia, tub, smoke, lung, bronc, either, xray, dysp) or ``random``
    (``attributes`` nodes named x0, x1, ..., levels uniform in ``levels``, up to ``max_parents`` earlier parents,
    table rows ~ Dirichlet(``concentration``), drawn from ``network_seed``). ``n_train`` + ``n_test`` records from
    numpy ``default_rng(seed)``; the first ``n_train`` are the training set."""

    smoke: ClassVar[dict[str, Any]] = {"n_train": 2000, "n_test": 500}
    kind: Literal["bayes_net"] = "bayes_net"
    network: Literal["asia", "random"] = Field("asia", description="The network: asia, or a seeded random one.")
    label: str | None = Field(None, description="The class label's attribute (None: the network's last, asia: dysp).")
    n_train: int = Field(20_000, ge=10, le=10_000_000, description="Training records sampled.")
    n_test: int = Field(5_000, ge=10, le=10_000_000, description="Test records sampled.")
    seed: NonNegativeInt = Field(0, description="Seed of the records' draws.")
    attributes: int = Field(12, ge=2, le=64, description="random: the number of attributes (nodes).")
    levels: tuple[int, int] = Field((3, 5), description="random: the range [low, high] of the levels per attribute.")
    max_parents: int = Field(2, ge=0, le=8, description="random: the most parents a node has.")
    concentration: PositiveFloat = Field(0.5, description="random: the Dirichlet concentration of the tables' rows.")
    network_seed: NonNegativeInt = Field(0, description="random: the seed of the network's structure and tables.")

    @model_validator(mode="after")
    def _levels(self) -> BayesNetData:
        if not 2 <= self.levels[0] <= self.levels[1] <= 64:
            raise ValueError(f"levels: need 2 <= low <= high <= 64, got {list(self.levels)}")
        return self

    def nodes(self) -> tuple[Node, ...]:
        """The network's nodes (attributes) with their tables."""
        if self.network == "asia":
            return ASIA
        return random_network(self.attributes, self.levels, self.max_parents, self.concentration, self.network_seed)

    def table(self) -> CategoricalTable:
        return network_table(self.nodes(), self.n_train, self.n_test, self.seed)

    def label_name(self) -> str:
        return self.label if self.label is not None else self.nodes()[-1].name


@DATA.register(builder="ddspec.components.categorical.data:build_categorical", capabilities=("categorical",))
class CategoricalCsvData(FileSpec, CategoricalData):
    """Declared categorical columns of a CSV file (a header row, then one record per row; every value a category,
    levels sorted by name). Rows are split by a seeded permutation, round(N·test_fraction) to test."""

    PATHS: ClassVar[tuple[str, ...]] = ("path",)
    ARRAY_FIELDS: ClassVar[dict[str, str]] = dict.fromkeys(("x_train", "y_train", "x_test", "y_test"), "path")
    kind: Literal["categorical_csv"] = "categorical_csv"
    path: str = Field(description="The CSV file; a relative path is taken from the spec file's folder.")
    label: str = Field(description="The class label's column.")
    columns: list[str] | None = Field(None, description="The categorical columns used (None: every column).")
    test_fraction: Fraction = Field(0.25, lt=1)
    split_seed: NonNegativeInt = 0

    def table(self) -> CategoricalTable:
        columns = None if self.columns is None else tuple(self.columns)
        return csv_table(self.resolved(self.path), columns, self.test_fraction, self.split_seed)

    def label_name(self) -> str:
        return self.label


class CategoricalClassifier(ModelBase):
    """A classifier fitted to categorical records by scikit-learn (capability ``categorical``): the evaluation
    fits it to D̂'s codes and scores its predicted class probabilities on the real test records."""

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) != 1:
            return f"{self.kind} takes records of attribute codes (shape D); the data has shape {shape}"
        return None

    def cost(self, shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
        """No torch training: a parameter per (class, attribute), as many FLOPs to predict one record."""
        return num_classes * shape[0], num_classes * shape[0], num_classes

    def estimator(self, sizes: list[int], seed: int) -> Any:
        """A fresh, unfitted scikit-learn estimator for records whose attribute j has ``sizes[j]`` levels (codes
        0 .. sizes[j] − 1, every one known to it), ``random_state`` = ``seed`` where it has one."""
        raise NotImplementedError


@MODELS.register(builder="ddspec.components.categorical.classifiers:build_classifier", capabilities=("categorical",))
class NaiveBayesModel(CategoricalClassifier):
    """Categorical naive Bayes (scikit-learn CategoricalNB over every declared level): P(y | x) ∝ P(y) ∏_j
    P(x_j | y), P(x_j = v | y = c) = (N_cjv + α) / (N_c + α L_j), P(y = c) = N_c / N."""

    kind: Literal["naive_bayes"] = "naive_bayes"
    alpha: float = Field(1.0, ge=1e-10, le=1e3, description="α, the additive smoothing of the counts.")

    def estimator(self, sizes: list[int], seed: int) -> Any:
        from sklearn.naive_bayes import CategoricalNB

        return CategoricalNB(alpha=self.alpha, force_alpha=True, min_categories=np.array(sizes))


@MODELS.register(builder="ddspec.components.categorical.classifiers:build_classifier", capabilities=("categorical",))
class LogisticOnehotModel(CategoricalClassifier):
    """Multinomial logistic regression on the one-hot encoding of every attribute's declared levels (scikit-learn
    LogisticRegression, L2 penalty ½‖W‖²/C, lbfgs)."""

    kind: Literal["logistic_onehot"] = "logistic_onehot"
    C: PositiveFloat = Field(1.0, description="Inverse L2 strength of scikit-learn's LogisticRegression.")
    max_iter: PositiveInt = Field(1000, le=100_000)

    def estimator(self, sizes: list[int], seed: int) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        return make_pipeline(onehot(sizes), LogisticRegression(C=self.C, max_iter=self.max_iter))


@MODELS.register(builder="ddspec.components.categorical.classifiers:build_classifier", capabilities=("categorical",))
class DecisionTreeModel(CategoricalClassifier):
    """A CART decision tree (Gini) on the one-hot encoding of every attribute's declared levels (scikit-learn
    DecisionTreeClassifier, ``random_state`` = the evaluation seed)."""

    kind: Literal["decision_tree"] = "decision_tree"
    max_depth: PositiveInt | None = Field(None, le=1000, description="None: grown until the leaves are pure.")
    min_samples_leaf: PositiveInt = 1

    def estimator(self, sizes: list[int], seed: int) -> Any:
        from sklearn.pipeline import make_pipeline
        from sklearn.tree import DecisionTreeClassifier

        return make_pipeline(onehot(sizes), DecisionTreeClassifier(max_depth=self.max_depth,
                                                                   min_samples_leaf=self.min_samples_leaf,
                                                                   random_state=seed))


def onehot(sizes: list[int]) -> Any:
    """scikit-learn's one-hot encoder of records whose attribute j takes the codes 0 .. sizes[j] − 1 (as floats)."""
    from sklearn.preprocessing import OneHotEncoder

    return OneHotEncoder(categories=[np.arange(n, dtype=np.float64) for n in sizes])


class StatisticsTask(TaskBase):
    """A task whose output is a set of marginals S (attribute subsets): the statistic of a table is the vector of
    its counts in every cell of every marginal, linear in the counts of its records (a matrix Q over cells)."""

    def marginals(self, attributes: tuple[str, ...], label: str) -> list[Marginal]:
        """The marginals preserved (attribute indices)."""
        raise NotImplementedError

    def held_out(self, attributes: tuple[str, ...], label: str) -> list[Marginal]:
        """The marginals one order higher than the highest preserved, over the same attributes (not optimized:
        what the evaluation measures beside them)."""
        kept = self.marginals(attributes, label)
        scope = sorted({a for s in kept for a in s})
        order = max(len(s) for s in kept) + 1
        return list(itertools.combinations(scope, order)) if order <= len(scope) else []

    def default_distance(self) -> dict[str, Any] | None:
        return {"kind": "tv"}

    def describe_scenarios(self, problem: Any) -> str:
        return "one table (no scenarios: the statistics are a fixed function of D̂)"

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        if not analysis.has("data:categorical"):
            yield Finding("TASK_NEEDS_CATEGORICAL", "task", f"task `{self.kind}` counts categorical records, and "
                          f"data `{analysis.kind('data')}` is not categorical",
                          "use data: {kind: bayes_net}, {kind: categorical_csv} or {kind: survival_categorical}")


@TASKS.register(capabilities=("statistics",))
class MarginalsTask(StatisticsTask):
    """Every k-way marginal (k in ``ways``) of ``attributes`` (None: every attribute, the label included): for a
    subset S of k attributes, the counts of the table's records in each cell of ∏_{j∈S} levels_j."""

    kind: Literal["marginals"] = "marginals"
    ways: list[int] = Field(default_factory=lambda: [1, 2], min_length=1, description="The orders k of the marginals.")
    attributes: list[str] | None = Field(None, description="The attributes the marginals range over (None: all).")

    @model_validator(mode="after")
    def _ways(self) -> MarginalsTask:
        if any(k < 1 for k in self.ways):
            raise ValueError(f"ways: every order must be at least 1, got {self.ways}")
        if self.attributes is not None and len(set(self.attributes)) != len(self.attributes):
            raise ValueError(f"attributes: name each attribute once, got {self.attributes}")
        return self

    def marginals(self, attributes: tuple[str, ...], label: str) -> list[Marginal]:
        scope = [attributes.index(a) for a in self.attributes] if self.attributes else range(len(attributes))
        return [s for k in sorted(set(self.ways)) for s in itertools.combinations(sorted(scope), k)]

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        yield from super().findings(analysis)
        if not analysis.has("data:categorical"):
            return
        names = analysis.problem.data.table().attributes
        unknown = [a for a in self.attributes or [] if a not in names]
        if unknown:
            yield Finding("UNKNOWN_ATTRIBUTE", "task.attributes", f"the data has no attribute(s) "
                          f"{', '.join(unknown)}", f"use attributes among: {', '.join(names)}")
            return
        scope = len(self.attributes or names)
        if max(self.ways) > scope:
            yield Finding("TASK_WAYS_TOO_LARGE", "task.ways", f"a {max(self.ways)}-way marginal needs "
                          f"{max(self.ways)} attributes, and the task ranges over {scope}",
                          f"use ways of at most {scope}")


@TASKS.register(capabilities=("statistics",))
class SufficientStatisticsTask(StatisticsTask):
    """The sufficient statistics of a model family fitted by counting: for ``naive_bayes``, the label's counts and
    the (label, attribute) counts of every other attribute, which determine the fitted model exactly."""

    kind: Literal["sufficient_statistics"] = "sufficient_statistics"
    model: Literal["naive_bayes"] = Field("naive_bayes", description="The model whose statistics are preserved.")

    def marginals(self, attributes: tuple[str, ...], label: str) -> list[Marginal]:
        y = attributes.index(label)
        return [(y,), *(tuple(sorted((y, j))) for j in range(len(attributes)) if j != y)]


class StatisticsDistance(DistanceBase):
    """A weighted L1 distance between the statistics of D̂ (counts Q c) and m times the real ones (m t)."""

    def row_weight(self, m: int, marginals: int) -> float:
        """w_r, the weight of one statistic, for D̂ of m records and a task of ``marginals`` marginals."""
        raise NotImplementedError

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        if not analysis.has("task:statistics"):
            yield Finding("DISTANCE_NEEDS_STATISTICS", "distance", f"`{self.kind}` compares counts of categorical "
                          f"records, which task `{analysis.kind('task') or 'unset'}` does not produce",
                          "set task: {kind: marginals} or {kind: sufficient_statistics}")


@DISTANCES.register(capabilities=("statistics",))
class L1Distance(StatisticsDistance):
    """Σ_r |(Q c)_r − m t_r|: the total absolute error of the statistics' counts (w_r = 1)."""

    kind: Literal["l1"] = "l1"

    def row_weight(self, m: int, marginals: int) -> float:
        return 1.0


@DISTANCES.register(capabilities=("statistics",))
class TvDistance(StatisticsDistance):
    """The mean total variation over the marginals S: (1/|S|) Σ_S ½ Σ_v |p̂_S(v) − p_S(v)|, i.e.
    w_r = 1/(2 m |S|) on the counts."""

    kind: Literal["tv"] = "tv"

    def row_weight(self, m: int, marginals: int) -> float:
        return 1.0 / (2 * m * marginals)


#: The routes of :class:`MilpOptimize`, in words.
ROUTES = {
    "exact": "the integer program over the full joint domain: its optimum is the best table of m records",
    "candidates": "the integer program over the distinct real records (the candidate set): the best table of m "
                  "real records",
    "relaxation": "the differentiable relaxation (records as products of softmaxes at a falling temperature, Adam), "
                  "rounded by argmax",
}


@OPTIMIZERS.register(capabilities=("integer",))
class MilpOptimize(OptimizeBase):
    """D̂ as integer counts c_x ≥ 0 of cells x, Σ c = m: minimize Σ_r w_r e_r subject to −e ≤ Q c − m t ≤ e
    (``distance`` gives w, ``task`` gives Q and t). Cells: the full joint domain (route ``exact``) or the distinct
    real records (``candidates``); with ``heuristic``, the LP optimum m·h/n (the scaled real histogram) is rounded by
    largest remainders and improved by greedy single-unit moves, and warm-starts the solver; the best of the
    solver's table, the heuristic's and ``subsamples`` random real subsamples is returned. Route ``relaxation``:
    one-hot records relaxed to softmaxes at a falling temperature, marginals as products, ``relax_steps`` Adam
    steps, argmax rounding."""

    smoke: ClassVar[dict[str, Any]] = {"max_nodes": 200, "subsamples": 2, "relax_steps": 2, "moves": 50}
    kind: Literal["milp"] = "milp"
    route: Literal["auto", "exact", "candidates", "relaxation"] = Field(
        "auto", description="auto: exact when the joint domain has at most max_cells cells, else candidates when "
        "there are at most max_candidates distinct real records, else relaxation.")
    solver: Literal["highs", "scipy", "cvxpy"] = Field(
        "highs", description="highs: highspy (warm-started); scipy: scipy.optimize.milp; cvxpy: cvxpy with HiGHS.")
    heuristic: bool = Field(True, description="Round the LP optimum, improve it by greedy moves, warm-start with it.")
    max_nodes: PositiveInt | None = Field(10_000, description="Branch-and-bound node limit (reproducible work bound).")
    time_limit: PositiveFloat | None = Field(None, description="Seconds the solver may take (None: no limit; a "
                                             "limit makes results machine-dependent).")
    max_cells: PositiveInt = Field(100_000, description="auto takes the exact route up to this many joint cells.")
    max_candidates: PositiveInt = Field(50_000, description="auto takes the candidate route up to this many rows.")
    subsamples: NonNegativeInt = Field(20, le=10_000, description="Random real subsamples of m records compared.")
    moves: PositiveInt = Field(10_000, description="The most greedy single-unit moves of the heuristic.")
    relax_steps: PositiveInt = Field(2000, le=1_000_000, description="relaxation: Adam steps on the logits.")
    relax_lr: LearningRate = Field(0.05, description="relaxation: Adam's learning rate.")
    relax_temperature: float = Field(0.02, gt=0, le=1, description="relaxation: the final softmax temperature τ_T "
                                     "(τ falls geometrically from 1, so the records end near one-hot).")

    def outer_iterations(self) -> int | None:
        """The relaxation records one row per Adam step; the integer program records none."""
        return self.relax_steps if self.route == "relaxation" else None

    def route_of(self, table: CategoricalTable) -> tuple[str, str]:
        """(route, why) for the records of ``table``."""
        cells, rows = table.domain_size, table.distinct_train_rows()
        if self.route != "auto":
            return self.route, f"route {self.route} as declared ({cells} joint cells, {rows} distinct real records)"
        if cells <= self.max_cells:
            return "exact", f"the joint domain has {cells} <= max_cells = {self.max_cells} cells"
        if rows <= self.max_candidates:
            return "candidates", (f"the joint domain has {cells} > max_cells = {self.max_cells} cells; there are "
                                  f"{rows} <= max_candidates = {self.max_candidates} distinct real records")
        return "relaxation", (f"the joint domain has {cells} > {self.max_cells} cells and there are {rows} > "
                              f"{self.max_candidates} distinct real records")

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        p = analysis.problem
        if not analysis.has("data:categorical"):
            yield Finding("MILP_NEEDS_CATEGORICAL", "optimize", f"`milp` chooses counts of categorical records, and "
                          f"data `{p.data.kind}` is not categorical", "use data: {kind: bayes_net} or {kind: "
                          "categorical_csv}, or a gradient optimize for continuous data")
            return
        if not analysis.has("task:statistics"):
            yield Finding("MILP_NEEDS_STATISTICS", "task", f"`milp` preserves statistics linear in the counts, which "
                          f"task `{analysis.kind('task') or 'unset'}` is not", "set task: {kind: marginals}")
        if p.synthetic.learn_labels:
            yield Finding("LABELS_NOT_LEARNABLE", "synthetic.learn_labels", "the program chooses whole records, "
                          "their labels included", "set synthetic.learn_labels: false")
        if p.synthetic.per_class is not None:
            yield Finding("MILP_NEEDS_TOTAL", "synthetic.per_class", "the program chooses how many records of each "
                          "class D̂ holds; a per-class size fixes it", "set synthetic.total: m instead")
        models = [("model", p.model), *((f"evaluate.models.{i}", m) for i, m in enumerate(p.evaluate.models))]
        for path, model in models:
            if model is not None and "categorical" not in MODELS[model.kind].capabilities:
                yield Finding("MODEL_NOT_CATEGORICAL", path, f"`{model.kind}` is not fitted to categorical records",
                              "use naive_bayes, logistic_onehot or decision_tree")
        table = p.data.table()
        if self.route == "exact" and table.domain_size > self.max_cells:
            yield Finding("ROUTE_TOO_LARGE", "optimize.route", f"the joint domain has {table.domain_size} cells, "
                          f"more than optimize.max_cells = {self.max_cells}",
                          "use route: auto, candidates or relaxation, or raise optimize.max_cells")
