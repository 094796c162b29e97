"""``distance``: how the task outputs (or a surrogate of them) are compared. Surrogates carry the
capability ``surrogate`` and name, in ``approximates``, the exact objective they stand for."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ddspec.registry import DISTANCES
from ddspec.spec.base import PositiveFloat, SpecModel


@DISTANCES.register(capabilities=("surrogate", "needs_network_training"))
class GradientMatchDistance(SpecModel):
    """Gradient matching (DC): Σ_layers Σ_out-channels (1 − cos(∇θℓ(real), ∇θℓ(syn)))."""

    kind: Literal["gradient_match"] = "gradient_match"
    skip_bias_and_norm: bool = Field(True, description="Ignore 1-D parameters (biases, norm scales), as DC does.")
    approximates: ClassVar[str] = (
        "test_error after training on D̂: matching per-step gradients of real and synthetic batches makes "
        "SGD on D̂ follow the trajectory SGD on D would take (first-order surrogate of the bilevel objective)"
    )


@DISTANCES.register(capabilities=("surrogate",))
class FeatureMeanDistance(SpecModel):
    """Distribution matching (DM): Σ_c ‖mean φ(real_c) − mean φ(syn_c)‖² in a random network's embedding."""

    kind: Literal["feature_mean"] = "feature_mean"
    approximates: ClassVar[str] = (
        "test_error after training on D̂: equal class-conditional embedding means under random networks "
        "(an MMD with a linear kernel) make D̂ and D look alike to the model family at initialisation"
    )


@DISTANCES.register(capabilities=("surrogate",))
class MMDDistance(SpecModel):
    """Class-wise MMD² with an RBF kernel (sum over ``bandwidths``) on random-network embeddings."""

    kind: Literal["mmd"] = "mmd"
    bandwidths: list[PositiveFloat] | None = Field(
        None, description="RBF bandwidths σ (k(a,b)=exp(−‖a−b‖²/(2σ²)), summed); None: median heuristic × {0.5, 1, 2}."
    )
    approximates: ClassVar[str] = (
        "test_error after training on D̂: class-conditional distributions of random-network embeddings of "
        "D̂ and D match in every moment the RBF kernel sees"
    )
