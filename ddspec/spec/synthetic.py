"""``synthetic``: the distilled set D̂ — its size, initialisation and what is learnable."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, model_validator

from ddspec.errors import Finding
from ddspec.spec.base import PositiveInt, SpecModel

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: The inits that draw points in the data's domain box.
DOMAIN_INITS = ("uniform", "lhs", "sobol", "halton")


class SyntheticSpec(SpecModel):
    """Size (``per_class`` images per class, or ``total`` spread evenly over classes), init, labels."""

    per_class: PositiveInt | None = Field(None, description="Images per class (default 10 if total is unset).")
    total: PositiveInt | None = Field(None, description="Total images, spread over classes (first classes get the remainder).")
    init: Literal["real", "noise", "kmeans", "uniform", "lhs", "sobol", "halton"] = Field(
        "real", description="real: random real samples of the class; noise: N(mean, std) of the class; kmeans: "
        "k-means centres of the class; uniform, lhs, sobol, halton: draws in the box of the data's domain (PDE "
        "collocation points; scipy.stats.qmc for the quasi-random ones)."
    )
    learn_labels: bool = Field(False, description="Learn soft labels (float N x K) instead of fixed one-hot classes.")

    @model_validator(mode="after")
    def _one_size(self) -> SyntheticSpec:
        if self.per_class is not None and self.total is not None:
            raise ValueError("give either per_class or total, not both")
        if self.per_class is None and self.total is None:
            object.__setattr__(self, "per_class", 10)
        return self

    def draws_points(self) -> bool:
        """Whether ``init`` draws points in the data's domain (a PDE's collocation box)."""
        return self.init in DOMAIN_INITS

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """A domain draw needs data with a domain; a label-free synthetic set has no labels to learn."""
        if self.draws_points() and not analysis.has("data:pde"):
            yield Finding("SAMPLER_NEEDS_DOMAIN", "synthetic.init", f"`{self.init}` draws points in the data's "
                          f"domain, and data `{analysis.kind('data')}` has none", "use init: real, noise or kmeans")
        if self.learn_labels and analysis.has("targets:field"):
            yield Finding("LABELS_NOT_LEARNABLE", "synthetic.learn_labels", "collocation points carry no targets",
                          "set synthetic.learn_labels: false")

    def at_most_one_per_stratum(self, strata: int) -> Self:
        """This synthetic set with one row per stratum (``per_class`` 1), or with ``total`` at most the number of
        strata: the tiny instance of :func:`ddspec.testing.check_hypergradient`."""
        if self.per_class is not None:
            return self.model_copy(update={"per_class": 1})
        assert self.total is not None
        return self.model_copy(update={"total": min(self.total, strata)})

    def counts(self, strata: int) -> list[int]:
        """Synthetic rows per stratum: per class for ``strata`` classes; data with real-valued targets is one
        stratum, so ``per_class`` and ``total`` both give the number of rows."""
        if self.per_class is not None:
            return [self.per_class] * strata
        assert self.total is not None
        base, extra = divmod(self.total, strata)
        return [base + (1 if c < extra else 0) for c in range(strata)]
