"""``synthetic``: the distilled set D̂ — its size, initialisation and what is learnable."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ddspec.spec.base import PositiveInt, SpecModel


class SyntheticSpec(SpecModel):
    """Size (``per_class`` images per class, or ``total`` spread evenly over classes), init, labels."""

    per_class: PositiveInt | None = Field(None, description="Images per class (default 10 if total is unset).")
    total: PositiveInt | None = Field(None, description="Total images, spread over classes (first classes get the remainder).")
    init: Literal["real", "noise", "kmeans"] = Field(
        "real", description="real: random real samples of the class; noise: N(mean, std) of the class; kmeans: k-means centres of the class."
    )
    learn_labels: bool = Field(False, description="Learn soft labels (float N x K) instead of fixed one-hot classes.")

    @model_validator(mode="after")
    def _one_size(self) -> SyntheticSpec:
        if self.per_class is not None and self.total is not None:
            raise ValueError("give either per_class or total, not both")
        if self.per_class is None and self.total is None:
            object.__setattr__(self, "per_class", 10)
        return self

    def counts(self, strata: int) -> list[int]:
        """Synthetic rows per stratum: per class for ``strata`` classes; data with real-valued targets is one
        stratum, so ``per_class`` and ``total`` both give the number of rows."""
        if self.per_class is not None:
            return [self.per_class] * strata
        assert self.total is not None
        base, extra = divmod(self.total, strata)
        return [base + (1 if c < extra else 0) for c in range(strata)]
