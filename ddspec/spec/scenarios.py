"""``scenarios``: the random scenarios ω the distilled data must serve (initialisations, architectures)."""

from __future__ import annotations

from pydantic import Field

from ddspec.spec.base import PositiveInt, SpecModel


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
