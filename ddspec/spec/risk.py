"""``risk``: the risk measure R_ω aggregating the distance over scenarios (and groups)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from ddspec.registry import RISKS
from ddspec.spec.base import NonNegativeFloat, NonNegativeInt, PositiveInt, SpecModel


@RISKS.register(builder="ddspec.components.objectives.risks:mean")
class MeanRisk(SpecModel):
    """Expectation over scenarios: the plain average."""

    kind: Literal["mean"] = "mean"


@RISKS.register(builder="ddspec.components.objectives.risks:worst")
class MaxRisk(SpecModel):
    """The worst scenario: max over ω of the distance (its gradient is the worst scenario's)."""

    kind: Literal["max"] = "max"


@RISKS.register(builder="ddspec.components.objectives.risks:worst")
class WorstCaseRisk(SpecModel):
    """The worst case: max over ω of the distance (same measure as ``max``)."""

    kind: Literal["worst_case"] = "worst_case"


@RISKS.register(builder="ddspec.components.objectives.risks:cvar_risk")
class CVaRRisk(SpecModel):
    """CVaR_α: the mean of the worst α-fraction of the scenario losses (α = 1: mean; α → 0: max)."""

    kind: Literal["cvar"] = "cvar"
    alpha: float = Field(
        0.8,
        gt=0,
        le=1,
        description=(
            "Fraction of the largest losses kept: CVaR_α(ℓ) = min_η η + (1/(αn)) Σ_i (ℓ_i − η)₊, "
            "a fractional weight on the boundary loss when αn is not an integer."
        ),
    )


class NearestSyntheticGroups(SpecModel):
    """Each real sample joins the group of its nearest synthetic point of its own class (Euclidean), in input
    space or in the current network's embedding. With more than ``max_per_class`` synthetic points in a class,
    the groups are instead the ``max_per_class`` k-means centres of that class's synthetic points (scikit-learn
    KMeans, ``random_state`` 0, refit whenever the groups are assigned), each real sample joining its nearest
    centre; so a class has min(images per class, ``max_per_class``) groups."""

    kind: Literal["nearest_synthetic"] = "nearest_synthetic"
    space: Literal["input", "embedding"] = Field(
        "embedding",
        description="Where distances are measured: the raw inputs, or the embedding φ_θ of the current network "
        "(as the paper's reference code does).",
    )
    max_per_class: PositiveInt = Field(
        10, description="At most this many groups per class (the paper: images per class, capped at 10)."
    )


class KMeansGroups(SpecModel):
    """k-means clusters of the real training inputs of each class (scikit-learn KMeans on the flattened inputs,
    ``random_state`` = ``seed``), fitted once before distilling; k groups per class."""

    kind: Literal["kmeans"] = "kmeans"
    k: PositiveInt = Field(10, description="Clusters per class (at most the smallest class's size).")
    seed: NonNegativeInt = Field(0, description="random_state of the k-means fit.")


class AttributeGroups(SpecModel):
    """The data's own group labels (``groups_train``, e.g. label x spurious cue of ``digits_shift``): a group is
    the samples of one class with one group label. Needs data that provides groups."""

    kind: Literal["attribute"] = "attribute"


GroupsUnion = Annotated[Union[NearestSyntheticGroups, KMeansGroups, AttributeGroups],  # noqa: UP007
                        Field(discriminator="kind")]


@RISKS.register(builder="ddspec.components.objectives.risks:group_cvar_risk", capabilities=("groups",))
class GroupCVaRRisk(SpecModel):
    """Group-CVaR DRO over groups of the real data: mean_weight · mean_g CVaR_α(ℓ_g) + max_weight · max_g CVaR_α(ℓ_g).

    Applied by the matching backend: on the network updates of gradient matching (with ce_weight · CE), and on
    the per-class distance of distribution matching / MMD (with ce_weight · the ungrouped distance); by the
    bilevel backend on the outer loss over the real batch (with ce_weight · its mean). Over a plain
    vector of scenario losses (one group) it is (mean_weight + max_weight) · CVaR_α."""

    kind: Literal["group_cvar"] = "group_cvar"
    alpha: float = Field(
        0.8, gt=0, le=1,
        description="CVaR level within a group: the mean of the worst α-fraction of its losses (α = 1: the mean).",
    )
    mean_weight: NonNegativeFloat = Field(1.0, description="Weight of the mean over groups of the group CVaRs.")
    max_weight: NonNegativeFloat = Field(1.0, description="Weight of the max over groups of the group CVaRs.")
    ce_weight: NonNegativeFloat = Field(
        1.0,
        description="Weight of the plain, ungrouped objective, added for stability: the cross-entropy of the real "
        "batch where networks are trained (gradient matching, bilevel outer loss), the whole class's distance in "
        "distribution matching / MMD.",
    )
    batch_size: PositiveInt = Field(
        256,
        description="Real samples per robust network-update step of gradient matching (the paper's 256), drawn "
        "evenly from the classes. Distribution matching and the bilevel outer loss group the real batches of "
        "their objective (optimize.real_batch_per_class) instead.",
    )
    groups: GroupsUnion = Field(default_factory=NearestSyntheticGroups, description="How real samples are grouped.")
