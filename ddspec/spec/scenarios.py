"""``scenarios``: the random scenarios ω the distilled data must serve (initialisations, architectures)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import Field

from ddspec.errors import Finding
from ddspec.spec.base import PositiveInt, SpecModel

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis


class ModelPoolSpec(SpecModel):
    """Warm starts: ``size`` models keep training on D̂ across outer iterations (a model pool).

    Each outer iteration unrolls the next pool models from their current parameters instead of a fresh
    initialisation, then keeps the trained θ_K as their new state; a model is re-initialised once it has
    taken ``max_steps`` inner steps (the first lifetimes are staggered, (m+1)/size · max_steps for model m,
    so the pool holds models of every age). ω then ranges over θ_0 ~ "a fresh initialisation trained for
    t ∈ [0, max_steps) steps on D̂": the distilled data must serve the whole training run, not only its
    first K steps."""

    size: PositiveInt = Field(8, le=64, description="Models in the pool (at least scenarios.inits).")
    max_steps: PositiveInt = Field(
        300, description="Inner steps a pool model trains before it is re-initialised (more than train.steps)."
    )


class ScenariosSpec(SpecModel):
    """Draw ``inits`` fresh random initialisations per outer iteration, cycling through ``models``."""

    inits: PositiveInt = Field(1, le=64, description="Fresh random initialisations drawn per outer iteration.")
    models: list = Field(  # list[ModelUnion]; the element type is set in ddspec.spec.problem
        default_factory=list,
        description="Architectures to cycle through; empty means the problem's model only.",
    )
    pool: ModelPoolSpec | None = Field(
        None, description="Warm-start the scenarios from a pool of models that keep training on D̂ (bilevel "
        "task objectives only); None: a fresh initialisation every iteration.",
    )

    def describe(self) -> str:
        """The scenarios of one outer iteration in words (for ``explain``)."""
        pool = self.pool
        starts = "init(s)" if pool is None else (f"warm start(s) from a pool of {pool.size} models, each re-initialised "
                                                 f"after {pool.max_steps} inner steps,")
        return f"{self.inits} {starts} per iteration"

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """``pool`` warm-starts the inner training of a task objective through differentiable training (the
        bilevel backend): it needs such an objective, a pool of at least ``inits`` models, and lifetimes longer
        than one use."""
        pool, p = self.pool, analysis.problem
        if pool is None:
            return
        if analysis.has("distance:surrogate") or p.task is None or not analysis.has("model:differentiable"):
            why = (f"`{p.distance.kind}` does not train scenario models on D̂ from θ_0"
                   if analysis.has("distance:surrogate")
                   else "only a task objective (test_error / predictions) through differentiable training uses it")
            yield Finding("POOL_UNUSED", "scenarios.pool",
                          f"the model pool warm-starts the bilevel inner training; {why}",
                          "remove scenarios.pool (or declare task: test_error with a differentiable model)")
            return
        if self.inits > pool.size:
            yield Finding("POOL_TOO_SMALL", "scenarios.pool.size",
                          f"each iteration unrolls scenarios.inits = {self.inits} distinct pool models, but the pool "
                          f"holds {pool.size}", f"set scenarios.pool.size >= {self.inits}")
        steps = p.train.inner_steps()
        if steps is not None and pool.max_steps <= steps:
            yield Finding("POOL_LIFETIME_TOO_SHORT", "scenarios.pool.max_steps",
                          f"max_steps {pool.max_steps} <= train.steps {steps}: every pool model would be "
                          "re-initialised after each use, which is the same as no pool",
                          f"set scenarios.pool.max_steps > {steps} (e.g. the evaluation's number of training "
                          "steps), or remove scenarios.pool")
