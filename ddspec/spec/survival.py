"""Censored survival data from several sources with intersecting columns: the kinds this case study adds.

- ``data: {kind: survival}``: a patient table (scikit-survival's GBSG2, WHAS500, ACTG320 ``aids``, veterans,
  flchain; lifelines' NCCTG ``lung`` and ``actg175``; or a CSV with time and event columns) split into a held-out
  test set (all columns) and ``sources``, each seeing only its ``columns``; a source may instead name a table of its
  own (another study) with a ``column_map`` onto the shared names; records are (covariates, time, event),
  right-censored, with the event coding declared (``event_values``);
- ``train: {kind: cox}``: the Cox proportional-hazards fit (Breslow partial likelihood, Newton in torch), the model
  family the evaluation fits on D̂ and scores by the C-index on the test patients;
- ``task: {kind: survival_analyses}``: the analyses D̂ must reproduce (nested registry
  :data:`~ddspec.registry.SURVIVAL_ANALYSES`, ``task.analyses``): ``survival_curve`` (Kaplan–Meier, overall or
  per stratum; distance sup or L1), ``cox_coefficients`` (one source's Cox coefficients; L2), ``bn_conditionals``
  (P(event by τ | evidence) of a discrete Bayesian network fused over the sources by EM; total variation). Each
  analysis is a scenario ω of the risk;
- ``evaluate.metrics: [c_index]``: Harrell's C (value) and Uno's C of the Cox model fitted on D̂.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ddspec.errors import Finding
from ddspec.registry import DATA, METRICS, SURVIVAL_ANALYSES, TASKS, TRAIN, Registry, import_object
from ddspec.spec.base import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, SpecModel
from ddspec.spec.data import DataBase, DataInfo
from ddspec.spec.evaluate import MetricSpec
from ddspec.spec.task import TaskBase
from ddspec.spec.train import TrainBase

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: The built-in tables: scikit-survival's loaders and the tables shipped with lifelines (``lung``: NCCTG lung
#: cancer; ``actg175``: the ACTG 175 trial), and ``csv`` (a file).
TableName = Literal["gbsg2", "whas500", "aids", "veterans", "flchain", "lung", "actg175", "csv"]
#: Patients of each built-in table, for ``describe`` without loading.
SIZES = {"gbsg2": 686, "whas500": 500, "aids": 1151, "veterans": 137, "flchain": 7874, "lung": 228, "actg175": 2139}
#: The covariates of each built-in table, for the well-posedness checks without loading (flchain's ``chapter`` is
#: missing for most patients and ``creatinine`` for some: choose columns without missing values).
COLUMNS = {
    "gbsg2": ("age", "estrec", "horTh", "menostat", "pnodes", "progrec", "tgrade", "tsize"),
    "whas500": ("afb", "age", "av3", "bmi", "chf", "cvd", "diasbp", "gender", "hr", "los", "miord", "mitype", "sho",
                "sysbp"),
    "aids": ("age", "cd4", "hemophil", "ivdrug", "karnof", "priorzdv", "raceth", "sex", "strat2", "tx", "txgrp"),
    "veterans": ("Age_in_years", "Celltype", "Karnofsky_score", "Months_from_Diagnosis", "Prior_therapy",
                 "Treatment"),
    "flchain": ("age", "chapter", "creatinine", "flc.grp", "kappa", "lambda", "mgus", "sample.yr", "sex"),
    "lung": ("inst", "age", "sex", "ph.ecog", "ph.karno", "pat.karno", "meal.cal", "wt.loss"),
    "actg175": ("age", "wtkg", "hemo", "homo", "drugs", "karnof", "oprior", "z30", "zprior", "preanti", "race",
                "gender", "str2", "strat", "symptom", "treat", "offtrt", "cd40", "cd420", "cd496", "r", "cd80", "cd820",
                "arms"),
}


class SurvivalSource(SpecModel):
    """One source: a name, the covariates it records (by their shared names), and where its patients come from.

    ``dataset`` None: the data's table, whose training patients the sources without a table of their own divide in
    proportion to their ``fraction``. A ``dataset`` of its own (another study): all of that table's patients but
    its held-out share; ``column_map`` then maps shared names onto that table's columns ({shared: its column}),
    ``time_column``/``event_column`` name its outcome (None: the table's own), ``event_values`` say which value
    of the event column is an event and which a censoring, and ``time_scale`` converts its times to the shared
    unit."""

    name: str = Field(min_length=1)
    columns: list[str] = Field(min_length=1, description="The covariates this source records (shared names).")
    fraction: PositiveFloat = Field(1.0, description="Relative share of its table's training patients.")
    dataset: TableName | None = Field(None, description="Its own table (another study); None: the data's table.")
    path: str | None = Field(None, description="The CSV file (dataset: csv).")
    column_map: dict[str, str] = Field(default_factory=dict, description="Shared name → the column of its table "
                                       "that records it (columns not named here keep their name).")
    time_column: str = Field("time", description="The time column of its CSV (a built-in table knows its own).")
    event_column: str = Field("event", description="The event column of its CSV (a built-in table knows its own).")
    event_values: tuple[float | str, float | str] = Field((1, 0), description="(the event column's value for an "
                                                          "event, its value for a censoring); any other is an error "
                                                          "(scikit-survival's tables have boolean events: unused).")
    time_scale: PositiveFloat = Field(1.0, description="Multiplies its times into the shared unit (e.g. 30.44 for "
                                      "months to days).")

    @model_validator(mode="after")
    def _table(self) -> SurvivalSource:
        if (self.dataset == "csv") != (self.path is not None):
            raise ValueError("give `path` exactly when the source's dataset is csv")
        if self.dataset is None and (self.column_map or self.time_scale != 1.0 or self.event_values != (1, 0)
                                     or (self.time_column, self.event_column) != ("time", "event")):
            raise ValueError("column_map, time_column, event_column, event_values and time_scale belong to a source "
                             "with a dataset of its own (the data's table takes them from the data section)")
        return self

    def table_column(self, name: str) -> str:
        """The column of its table that records the shared column ``name``."""
        return self.column_map.get(name, name)


@dataclass(frozen=True)
class SourceTable:
    """A table the sources' patients come from: where it is, how its outcome is coded, and which sources (indices
    into ``data.sources``) draw from it, with each source's map of shared names onto its columns."""

    dataset: str
    path: str | None
    time_column: str
    event_column: str
    event_values: tuple[float | str, float | str]
    time_scale: float
    sources: tuple[int, ...]

    @property
    def label(self) -> str:
        return self.path if self.dataset == "csv" else self.dataset

    def patients(self) -> int:
        """Rows of the table (counted in a CSV without parsing it)."""
        if self.dataset != "csv":
            return SIZES[self.dataset]
        path = Path(self.path)
        return max(sum(1 for _ in path.open()) - 1, 0) if path.is_file() else 0


def gbsg2_sources() -> list[SurvivalSource]:
    """GBSG2 split by patients: A {age, menostat, tsize, horTh, tgrade, pnodes}, B {age, menostat, tsize, horTh,
    progrec, estrec} (each also has time and event)."""
    shared = ["age", "menostat", "tsize", "horTh"]
    return [SurvivalSource(name="A", columns=[*shared, "tgrade", "pnodes"]),
            SurvivalSource(name="B", columns=[*shared, "progrec", "estrec"])]


@DATA.register(builder="ddspec.components.survival.data:build_survival", capabilities=("survival",))
class SurvivalData(DataBase):
    """Right-censored patients (covariates, time, event) from ``sources`` with intersecting columns. Each table
    (the data's ``dataset``, and the ``dataset`` of each source that names its own) is split with numpy
    ``default_rng(seed)``: a random ``test_fraction`` of its patients is held out with every column its sources
    record; the data's table's other patients are divided among the sources without a table of their own in
    proportion to their ``fraction``, a source's own table's go to that source; each source sees only its
    ``columns``. Categorical covariates (non-numeric, or named in ``categorical``) are level codes 0..L−1 over the
    levels of every table. ``dataset: csv`` reads ``path`` with ``time_column`` and ``event_column``, whose
    ``event_values`` are (event, censored)."""

    ARRAY_FIELDS: ClassVar[dict[str, str]] = {"x_train": "sources", "x_test": "sources"}
    kind: Literal["survival"] = "survival"
    dataset: TableName = "gbsg2"
    path: str | None = Field(None, description="The CSV file (dataset: csv).")
    time_column: str = Field("time", description="The time column of a CSV (a built-in table knows its own).")
    event_column: str = Field("event", description="The event column of a CSV (a built-in table knows its own).")
    event_values: tuple[float | str, float | str] = Field((1, 0), description="(the event column's value for an "
                                                          "event, its value for a censoring); any other is an error.")
    categorical: list[str] = Field(default_factory=list, description="Numeric columns that code categories (their "
                                   "sorted values become levels); non-numeric columns are categorical anyway.")
    sources: list[SurvivalSource] = Field(default_factory=gbsg2_sources, min_length=1)
    test_fraction: Fraction = Field(0.3, description="Share of the patients held out with all columns.")
    seed: NonNegativeInt = Field(0, description="Seed of the split.")
    drop_incomplete: bool = Field(False, description="Leave out the patients with a missing covariate (among the "
                                  "sources' columns), a missing event or a missing or non-positive time, instead of "
                                  "refusing the table.")

    @model_validator(mode="after")
    def _path(self) -> SurvivalData:
        if (self.dataset == "csv") != (self.path is not None):
            raise ValueError("give `path` exactly when dataset is csv")
        if self.test_fraction >= 1:
            raise ValueError("test_fraction must leave training patients (< 1)")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must differ, got {names}")
        own = [(s.dataset, s.path) for s in self.sources if s.dataset is not None]
        if len(set(own)) != len(own):
            raise ValueError("two sources name the same table of their own; sources that divide a table leave "
                             "`dataset` unset and take the data's")
        return self

    def tables(self) -> list[SourceTable]:
        """The data's table (when a source draws from it), then each source's own, in the sources' order."""
        shared = tuple(i for i, s in enumerate(self.sources) if s.dataset is None)
        out = [SourceTable(self.dataset, self.path, self.time_column, self.event_column, self.event_values, 1.0,
                           shared)] if shared else []
        return out + [SourceTable(s.dataset, s.path, s.time_column, s.event_column, s.event_values, s.time_scale,
                                  (i,)) for i, s in enumerate(self.sources) if s.dataset is not None]

    def columns(self) -> list[str]:
        """The union of the sources' columns, in order."""
        return list(dict.fromkeys(c for s in self.sources for c in s.columns))

    def describe(self) -> DataInfo:
        tables = self.tables()
        n = sum(t.patients() for t in tables)
        test = sum(round(t.patients() * self.test_fraction) for t in tables)
        name = "+".join(t.label for t in tables) if len(tables) > 1 else tables[0].label
        return DataInfo(f"survival:{name}", (len(self.columns()),), 0, (n - test,), test,
                        targets="survival", target_dim=2)

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        columns = self.columns()
        for i, source in enumerate(self.sources):
            dataset = source.dataset or self.dataset
            unknown = [source.table_column(c) for c in source.columns
                       if dataset in COLUMNS and source.table_column(c) not in COLUMNS[dataset]]
            if unknown:
                yield Finding("UNKNOWN_COLUMN", f"data.sources.{i}.columns", f"{dataset} has no column "
                              f"`{unknown[0]}`", f"use columns of: {', '.join(COLUMNS[dataset])}"
                              + (", or map the shared name onto one in column_map" if source.dataset else ""))
            for name in source.column_map:
                if name not in source.columns:
                    yield Finding("UNKNOWN_COLUMN", f"data.sources.{i}.column_map", f"column_map maps `{name}`, "
                                  f"which source `{source.name}` does not list", f"add `{name}` to its columns or "
                                  "remove it from the map")
            if set(source.columns) == set(columns) and len(self.sources) > 1:
                yield Finding("SOURCE_SEES_ALL", f"data.sources.{i}", f"source `{source.name}` records every "
                              "column, so there is nothing to merge", "drop the columns it does not record", "warning")
        yield from _unknown_columns(self.categorical, self, "data.categorical")
        if "dataset" in self.model_fields_set and all(s.dataset is not None for s in self.sources):
            yield Finding("DATASET_UNUSED", "data.dataset", f"every source names a table of its own, so data.dataset "
                          f"`{self.dataset}` is not read", "remove data.dataset", "warning")
        for i, source in enumerate(self.sources):
            others = {c for s in self.sources if s is not source for c in s.columns}
            if len(self.sources) > 1 and not others & set(source.columns):
                yield Finding("NOTHING_SHARED", f"data.sources.{i}.columns", f"source `{source.name}` shares no "
                              "column with the other sources, so nothing links its patients to theirs but the "
                              "network's structure", "give it a covariate another source records (for a table of its "
                              "own, map that column onto the shared name in column_map)", "warning")
        if analysis.problem.evaluate.baselines:
            yield Finding("SURVIVAL_BASELINES", "evaluate.baselines", "the protocol's baselines draw rows of the "
                          "sources, whose missing columns they would read as values; the survival backend measures "
                          "its own baselines (random sources completed by EM, MICE, EM-completed, oracle)",
                          "set evaluate.baselines: [] (the survival baselines are in metrics.json under survival)")


@TRAIN.register(builder="ddspec.components.survival.cox:cox_estimator", capabilities=("estimator", "survival"))
class CoxTrain(TrainBase):
    """The Cox proportional-hazards fit on standardized covariates; outputs the risk score xᵀβ. ``solver: newton``:
    β = argmin −ℓ(β)/n + (penalizer/2)‖β‖², ℓ Breslow's partial log-likelihood, by Newton's method (float64);
    ``lifelines``: lifelines' ``CoxPHFitter(penalizer)`` as a black box (Efron ties; it rescales the covariates
    before penalizing, so with a penalizer its β differs slightly from Newton's)."""

    kind: Literal["cox"] = "cox"
    penalizer: NonNegativeFloat = Field(0.01, description="λ, the ridge penalty (keeps fits on small or separable "
                                        "tables finite).")
    solver: Literal["newton", "lifelines"] = Field("newton", description="ddspec's Newton fit, or lifelines' "
                                                   "CoxPHFitter (a library fit, about 10x slower).")

    def estimator_class(self, targets: str) -> type | None:
        """The class that fits ``targets`` (imports it): the Cox fit for survival targets, None for any other."""
        return import_object("ddspec.components.survival.cox:CoxFit") if targets == "survival" else None

    def describes_model(self) -> str | None:
        return f"a Cox proportional-hazards fit (ridge {self.penalizer:g}; {self.solver}, no gradient in D̂)"

    def describes_fit(self) -> str | None:
        fit = "Newton's method" if self.solver == "newton" else "lifelines' CoxPHFitter"
        return f"fitted by {fit} (deterministic: every seed gives the same model)"

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        if not analysis.has("data:survival"):
            yield Finding("COX_NEEDS_SURVIVAL", "train", f"train `{self.kind}` fits censored survival times, and data "
                          f"`{analysis.problem.data.kind}` has none", "use data: {kind: survival, ...}")


class AnalysisBase(SpecModel):
    """An analysis of a survival table: its output I and the distance that compares D̂'s with the sources'."""

    weight: PositiveFloat = Field(1.0, description="Its distance is multiplied by this in the risk.")

    def scenarios(self, data: SurvivalData) -> list[str]:
        """The names of the scenarios ω it contributes (one each by default)."""
        return [self.kind]

    def check(self, data: SurvivalData, path: str) -> Iterable[Finding]:
        """Findings about columns and sources the analysis names."""
        return ()

    def curve_grid(self) -> tuple[int, float] | None:
        """(points, horizon quantile) of the time grid its curves are compared on; None: it compares no curves."""
        return None

    def query_evidence(self, data: SurvivalData) -> list[list[str]]:
        """The evidence sets of the conditionals it queries (none by default)."""
        return []


SURVIVAL_ANALYSES.base = AnalysisBase


def _unknown_columns(names: Iterable[str], data: SurvivalData, path: str) -> Iterable[Finding]:
    columns = data.columns()
    for name in names:
        if name not in columns:
            yield Finding("UNKNOWN_COLUMN", path, f"no source records column `{name}`",
                          f"use one of: {', '.join(columns)}")


@SURVIVAL_ANALYSES.register(builder="ddspec.components.survival.analyses:SurvivalCurve")
class SurvivalCurveAnalysis(AnalysisBase):
    """Kaplan–Meier curves Ŝ(t) on ``points`` times from the first event to the ``horizon`` quantile of the event
    times: overall, or per level (numeric columns: per median half) of each column in ``strata``. Distance: ``sup``
    = max_t |Ŝ_D̂(t) − Ŝ_D(t)| or ``l1`` = mean_t |Ŝ_D̂(t) − Ŝ_D(t)|, the largest over the strata."""

    kind: Literal["survival_curve"] = "survival_curve"
    strata: list[str] = Field(default_factory=list, description="Columns whose levels get their own curve.")
    distance: Literal["sup", "l1"] = "sup"
    points: int = Field(50, ge=2, le=10_000)
    horizon: float = Field(0.9, gt=0, le=1, description="The last time compared, as a quantile of the event times.")

    def scenarios(self, data: SurvivalData) -> list[str]:
        return [f"survival_curve[{','.join(self.strata) or 'all'}]"]

    def check(self, data: SurvivalData, path: str) -> Iterable[Finding]:
        yield from _unknown_columns(self.strata, data, f"{path}.strata")

    def curve_grid(self) -> tuple[int, float] | None:
        return self.points, self.horizon


@SURVIVAL_ANALYSES.register(builder="ddspec.components.survival.analyses:CoxCoefficients")
class CoxCoefficientsAnalysis(AnalysisBase):
    """The Cox coefficients β (train ``cox``'s fit, covariates standardized) on one source's columns, fitted on that
    source's patients (D) and on D̂; distance ‖β̂ − β‖₂. ``source`` None: one scenario per source."""

    kind: Literal["cox_coefficients"] = "cox_coefficients"
    source: str | None = None
    distance: Literal["l2"] = "l2"

    def scenarios(self, data: SurvivalData) -> list[str]:
        names = [self.source] if self.source is not None else [s.name for s in data.sources]
        return [f"cox_coefficients[{n}]" for n in names]

    def check(self, data: SurvivalData, path: str) -> Iterable[Finding]:
        names = [s.name for s in data.sources]
        if self.source is not None and self.source not in names:
            yield Finding("UNKNOWN_SOURCE", f"{path}.source", f"no source named `{self.source}`",
                          f"use one of: {', '.join(names)}")


@SURVIVAL_ANALYSES.register(builder="ddspec.components.survival.analyses:BnConditionals")
class BnConditionalsAnalysis(AnalysisBase):
    """Conditionals P(O = 1 | x_E = e) of a discrete Bayesian network over the covariates (numeric ones in ``bins``
    quantile bins) and the outcome O = 1[T ≤ τ], for each evidence set E and each configuration e. Every patient
    is weighted by inverse probability of censoring (1/Ĝ(t−) for an event by τ, 1/Ĝ(τ) past τ, 0 for a censoring
    by τ, whose outcome is unknown); on D the network is fitted by EM over the stacked sources (the columns a
    source lacks are latent), on D̂ by weighted counts. Prior: BDeu with equivalent sample size ``ess``. ``structure``:
    parents per node (covariates and ``outcome``); None: every covariate's parent is the outcome. ``evidence``
    None: one unshared column of the first source, one of the second, and both (within A, within B, across).
    Distance: Σ_e P_D(e)·TV(P_D̂(O | e), P_D(O | e)), the largest over the evidence sets."""

    kind: Literal["bn_conditionals"] = "bn_conditionals"
    evidence: list[list[str]] | None = None
    tau: PositiveFloat | None = Field(None, description="τ (data time units); None: the median event time.")
    bins: int = Field(3, ge=2, le=10)
    ess: PositiveFloat = Field(1.0, description="The BDeu equivalent sample size.")
    structure: dict[str, list[str]] | None = None
    distance: Literal["tv"] = "tv"

    def evidence_sets(self, data: SurvivalData) -> list[list[str]]:
        if self.evidence is not None:
            return self.evidence
        if len(data.sources) < 2:
            return [[data.sources[0].columns[-1]]]
        a, b = data.sources[0].columns, data.sources[1].columns
        only_a = [c for c in a if c not in b][:1] or a[-1:]
        only_b = [c for c in b if c not in a][:1] or b[-1:]
        return [only_a, only_b, [*only_a, *only_b]]

    def scenarios(self, data: SurvivalData) -> list[str]:
        return [f"bn_conditionals[{','.join(e)}]" for e in self.evidence_sets(data)]

    def query_evidence(self, data: SurvivalData) -> list[list[str]]:
        return self.evidence_sets(data)

    def check(self, data: SurvivalData, path: str) -> Iterable[Finding]:
        for names in self.evidence_sets(data):
            yield from _unknown_columns(names, data, f"{path}.evidence")
        if self.structure is not None:
            yield from _unknown_columns([n for k, v in self.structure.items() for n in [k, *v] if n != "outcome"],
                                        data, f"{path}.structure")


def default_analyses() -> list[AnalysisBase]:
    return [SurvivalCurveAnalysis(), CoxCoefficientsAnalysis(), BnConditionalsAnalysis()]


@TASKS.register(builder="ddspec.components.survival.analyses:build_analyses", capabilities=("not_differentiable",
                                                                                            "survival"))
class SurvivalAnalysesTask(TaskBase):
    """The analyses D̂ must reproduce, each against the same analysis of the sources: I_ω for every scenario ω of
    every entry of ``analyses`` (Kaplan–Meier curves, Cox coefficients per source, Bayesian-network conditionals);
    the objective is R_ω[weight_ω · dist_ω(I_ω(D̂), I_ω(D))]. Kaplan–Meier curves, risk sets and counts are
    piecewise constant in D̂, so the objective has no useful gradient: it is optimized from values
    (``optimize: zero_order``)."""

    nested: ClassVar[dict[str, Registry]] = {"analyses": SURVIVAL_ANALYSES}
    kind: Literal["survival_analyses"] = "survival_analyses"
    analyses: list[SurvivalCurveAnalysis | CoxCoefficientsAnalysis | BnConditionalsAnalysis] = Field(
        default_factory=default_analyses, min_length=1, description="The analyses (scenarios) to preserve.")

    def scenario_names(self, data: SurvivalData) -> list[str]:
        return [name for a in self.analyses for name in a.scenarios(data)]

    def describe_scenarios(self, problem: Any) -> str:
        return f"the analyses {', '.join(self.scenario_names(problem.data))}"

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        p = analysis.problem
        if not analysis.has("data:survival"):
            yield Finding("TASK_NEEDS_SURVIVAL", "task", f"task `{self.kind}` analyses censored survival data, and "
                          f"data `{p.data.kind}` is not", "use data: {kind: survival, ...}")
            return
        if p.distance is not None:
            yield Finding("ANALYSIS_DISTANCES", "distance", "each survival analysis names its own distance",
                          "remove `distance`; set task.analyses[i].distance")
        for i, entry in enumerate(self.analyses):
            yield from entry.check(p.data, f"task.analyses.{i}")


@METRICS.register(builder="ddspec.evaluate.survival:ConcordanceMetric",
                  capabilities=("targets:survival", "default", "primary", "fraction"))
class ConcordanceMetric(MetricSpec):
    """Harrell's C of the risk scores on the test patients (the value: over comparable pairs t_i < t_j with
    δ_i = 1, the fraction ranked risk_i > risk_j); figure ``uno``: Uno's IPCW C (scikit-survival) up to the
    ``horizon`` quantile of the training times."""

    kind: Literal["c_index"] = "c_index"
    horizon: float = Field(0.9, gt=0, lt=1)
