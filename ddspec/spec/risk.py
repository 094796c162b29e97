"""``risk``: the risk measure R_ω aggregating the distance over scenarios (and groups).

Capabilities say what a risk is, for the backends that can only take some: ``expectation`` (the plain
average over scenarios) and ``groups`` (it acts within each scenario, on groups of the real data that
``risk.groups`` forms; registry :data:`ddspec.registry.GROUPS`, capability ``fixed`` for groups computed once).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Union

from pydantic import Field

from ddspec.errors import Finding
from ddspec.registry import DATA, GROUPS, RISKS, Registry
from ddspec.spec.base import NonNegativeFloat, NonNegativeInt, PositiveInt, SpecModel

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis


@RISKS.register(builder="ddspec.components.objectives.risks:mean", capabilities=("expectation",))
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


@GROUPS.register(builder="ddspec.components.objectives.groups:build_nearest_synthetic")
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
        "(the default: classes that overlap in input space often separate in the network's features).",
    )
    max_per_class: PositiveInt = Field(
        10, description="At most this many groups per class (a class has min(images per class, this) groups)."
    )

    def describe(self) -> str:
        return f"nearest synthetic point of the class ({self.space} space, at most {self.max_per_class} per class)"

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """An embedding needs a network: a model family that is a library estimator has none."""
        if self.space == "embedding" and analysis.has("train:estimator"):
            yield Finding("EMBEDDING_NEEDS_NETWORK", "risk.groups.space", f"the model family is the estimator of "
                          f"train `{analysis.kind('train')}`, which has no embedding", "set risk.groups.space: input")


@GROUPS.register(builder="ddspec.components.objectives.groups:build_kmeans", capabilities=("fixed",))
class KMeansGroups(SpecModel):
    """k-means clusters of the real training inputs of each class (scikit-learn KMeans on the flattened inputs,
    ``random_state`` = ``seed``), fitted once before distilling; k groups per class."""

    kind: Literal["kmeans"] = "kmeans"
    k: PositiveInt = Field(10, description="Clusters per class (at most the smallest class's size).")
    seed: NonNegativeInt = Field(0, description="random_state of the k-means fit.")

    def describe(self) -> str:
        return f"{self.k} k-means clusters per class"

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """k must not exceed the smallest non-empty class."""
        smallest = min((n for n in analysis.data.class_counts if n > 0), default=0)
        if self.k > smallest:
            yield Finding(
                "KMEANS_TOO_MANY_CLUSTERS", "risk.groups.k",
                f"{self.k} k-means clusters per class, but the smallest class has {smallest} training samples",
                f"use risk.groups.k <= {smallest}",
            )


@GROUPS.register(builder="ddspec.components.objectives.groups:build_attribute", capabilities=("fixed",))
class AttributeGroups(SpecModel):
    """The data's own group labels (``groups_train``, e.g. label x spurious cue of ``digits_shift``): a group is
    the samples of one class with one group label. Needs data that provides groups."""

    kind: Literal["attribute"] = "attribute"

    def describe(self) -> str:
        return "the data's group labels within each class"

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """The data must provide group labels (capability ``groups`` of its kind)."""
        if not analysis.has("data:groups"):
            kinds = [k for k in DATA.kinds() if "groups" in DATA[k].capabilities]
            yield Finding(
                "RISK_NEEDS_GROUPS", "risk.groups",
                f"risk.groups `attribute` needs group labels, which data `{analysis.problem.data.kind}` does not "
                "provide",
                f"use a data kind with groups ({', '.join(kinds)}), or risk.groups: {{kind: nearest_synthetic}} "
                "or {kind: kmeans}",
            )


GroupsUnion = Annotated[Union[tuple(GROUPS.specs())], Field(discriminator="kind")]  # noqa: UP007


@RISKS.register(builder="ddspec.components.objectives.risks:group_cvar_risk", capabilities=("groups",))
class GroupCVaRRisk(SpecModel):
    """Group-CVaR DRO over groups of the real data: mean_weight · mean_g CVaR_α(ℓ_g) + max_weight · max_g CVaR_α(ℓ_g).

    Applied by the matching backend: on the network updates of gradient matching (with ce_weight · CE), and on
    the per-class distance of distribution matching / MMD (with ce_weight · the ungrouped distance); by the
    bilevel backend on the outer loss over the real batch (with ce_weight · its mean). Over a plain
    vector of scenario losses (one group) it is (mean_weight + max_weight) · CVaR_α."""

    nested: ClassVar[dict[str, Registry]] = {"groups": GROUPS}
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
        description="Real samples per robust network-update step of gradient matching, drawn "
        "evenly from the classes. Distribution matching and the bilevel outer loss group the real batches of "
        "their objective (optimize.real_batch_per_class) instead.",
    )
    groups: GroupsUnion = Field(default_factory=NearestSyntheticGroups, description="How real samples are grouped.")

    def describe(self, plain: str, batched: bool) -> str:
        """The grouped objective in words (for ``explain``): ``plain`` names the ungrouped term; ``batched``: the
        groups are formed on real batches of ``batch_size`` (network updates)."""
        weights = f"{self.mean_weight:g}·mean + {self.max_weight:g}·max over groups + {self.ce_weight:g}·{plain}"
        where = f"real batches of {self.batch_size} grouped by" if batched else "groups by"
        return f"α={self.alpha:g}, {weights}, {where} {self.groups.describe()}"

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        return self.groups.findings(analysis)
