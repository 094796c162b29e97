"""``data: {kind: survival_categorical}``: the categorical columns of a survival set as categorical records, for the
integer program of docs/categorical.md (the table itself: :mod:`ddspec.spec.survival_codes`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from ddspec.errors import Finding, SpecError
from ddspec.registry import DATA
from ddspec.spec.base import Fraction, NonNegativeInt, PositiveFloat
from ddspec.spec.categorical import CategoricalData
from ddspec.spec.categorical_tables import YES_NO, CategoricalTable
from ddspec.spec.data import DataInfo
from ddspec.spec.survival import COLUMNS
from ddspec.spec.survival_codes import OUTCOME, SurvivalCodes, is_numeric, load_survival, survival_codes

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: The most quantile bins of a numeric column.
MAX_BINS = 20


@DATA.register(builder="ddspec.components.categorical.data:build_categorical", capabilities=("categorical",))
class SurvivalCategoricalData(CategoricalData):
    """A survival set's covariates as categorical records (scikit-survival's GBSG2, WHAS500, ACTG320 ``aids``,
    veterans, flchain): the declared ``columns`` (None: every covariate), categorical ones with their levels, numeric
    ones cut into quantile bins (``bins[column]``, else ``default_bins``; edges at the training patients' quantiles
    i/k), and the outcome ``event_by_tau`` = 1[T ≤ τ] (levels no, yes) when it is the ``label`` or a declared
    column. Patients censored before τ have no known outcome: they are excluded and counted (``describe`` and the
    warning ``CENSORED_EXCLUDED``). Split: numpy ``default_rng(split_seed)`` permutes the patients, round(N·
    test_fraction) to test."""

    kind: Literal["survival_categorical"] = "survival_categorical"
    dataset: Literal["gbsg2", "whas500", "aids", "veterans", "flchain"] = "gbsg2"
    columns: list[str] | None = Field(None, description=f"The covariates used, in order, and `{OUTCOME}` where it "
                                      "is an attribute but not the label (None: every covariate).")
    bins: dict[str, Annotated[int, Field(ge=2, le=MAX_BINS)]] = Field(
        default_factory=dict, description="Quantile bins per numeric column (the others: default_bins).")
    default_bins: int = Field(3, ge=2, le=MAX_BINS, description="Quantile bins of a numeric column not in `bins`.")
    label: str = Field(OUTCOME, description=f"The class label: `{OUTCOME}` (the event by τ) or a declared column.")
    tau: PositiveFloat | None = Field(None, description="τ of the outcome, in the data's time units (None: the "
                                      "median observed event time of the training patients).")
    test_fraction: Fraction = Field(0.25, lt=1)
    split_seed: NonNegativeInt = 0
    drop_incomplete: bool = Field(False, description="Leave out (and count) the patients with a missing value in a "
                                  "declared column, instead of refusing the table.")

    @model_validator(mode="after")
    def _columns(self) -> SurvivalCategoricalData:
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            raise ValueError(f"columns: name each column once, got {self.columns}")
        if self.tau is not None and OUTCOME not in self.attributes():
            raise ValueError(f"tau is set, and `{OUTCOME}` is neither the label nor a column")
        return self

    def attributes(self) -> tuple[str, ...]:
        """The table's attributes: the columns, then the outcome when it is the label and not among them."""
        columns = list(self.columns if self.columns is not None else COLUMNS[self.dataset])
        return tuple(columns + [OUTCOME] if self.label == OUTCOME and OUTCOME not in columns else columns)

    def column_findings(self) -> list[Finding]:
        """Errors in the declared columns and bins: a column the table lacks, bins for a column not used or not
        numeric."""
        known, used = COLUMNS[self.dataset], self.attributes()
        found = [Finding("UNKNOWN_COLUMN", "data.columns", f"{self.dataset} has no column `{c}`",
                         f"use columns among: {', '.join(known)} (and `{OUTCOME}`)")
                 for c in used if c != OUTCOME and c not in known]
        found += [Finding("UNKNOWN_COLUMN", "data.bins", f"bins for `{c}`, which is not a declared column",
                          "declare it in data.columns, or remove it from data.bins")
                  for c in self.bins if c not in used]
        frame = load_survival(self.dataset)[0]
        levels = {c: YES_NO if c == OUTCOME else tuple(map(str, frame[c].astype("category").cat.categories))
                  for c in self.bins if c in used and (c == OUTCOME or c in known and not is_numeric(frame[c]))}
        return found + [Finding("BINS_NOT_NUMERIC", "data.bins", f"`{c}` is categorical (levels {', '.join(v)}): it "
                                "is used as it is", f"remove `{c}` from data.bins") for c, v in levels.items()]

    def codes(self) -> SurvivalCodes:
        """The table and its exclusions (cached); SpecError with :meth:`column_findings` when there are any."""
        found = self.column_findings()
        if found:
            raise SpecError(found)
        frame = load_survival(self.dataset)[0]
        bins = tuple((c, self.bins.get(c, self.default_bins)) for c in self.attributes()
                     if c != OUTCOME and is_numeric(frame[c]))
        return survival_codes(self.dataset, self.attributes(), bins, self.tau, self.test_fraction, self.split_seed,
                              self.drop_incomplete)

    def table(self) -> CategoricalTable:
        return self.codes().table

    def label_name(self) -> str:
        return self.label

    def describe(self) -> DataInfo:
        """The base description, named by table and label, with the patients censored before τ it excludes."""
        codes, name = self.codes(), f"{self.kind}:{self.dataset}:{self.label}"
        if codes.tau is not None:
            name += f" ({sum(codes.censored)} censored before τ = {codes.tau:g} excluded)"
        return dataclasses.replace(super().describe(), name=name)

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        codes = self.codes()
        if sum(codes.censored):
            (train, test), n = codes.censored, len(codes.table.train) + len(codes.table.test)
            yield Finding("CENSORED_EXCLUDED", "data.tau", f"{train + test} patients ({train} training, {test} test) "
                          f"were censored before τ = {codes.tau:g}, so whether their event came by τ is unknown: "
                          f"they are excluded ({n} kept). Under independent censoring the share of events by τ among "
                          "the kept patients is biased upward, and the distilled table reproduces the kept patients",
                          "a smaller data.tau excludes fewer; estimate the cohort's P(T <= τ) with data: {kind: "
                          "survival} (Kaplan-Meier)", "warning")
        if codes.incomplete:
            yield Finding("INCOMPLETE_EXCLUDED", "data.drop_incomplete", f"{codes.incomplete} patients with a missing "
                          "value in the declared columns are excluded", "choose columns without missing values to "
                          "keep them", "warning")
