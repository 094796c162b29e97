"""Matching backend: the surrogate distances gradient matching (DC/DSA), distribution matching (DM)
and class-wise RBF MMD, optimized by first-order steps on the synthetic data.

Each outer iteration draws ``scenarios.inits`` fresh networks θ_s (cycling through
``scenarios.models``) and minimizes the mean over them of Σ_c d_c(θ_s):

- ``gradient_match``: d_c = Σ_layers Σ_rows (1 − cos(∇θ CE(θ; aug(R_c)), ∇θ CE(θ; aug(S_c)))), with
  ``optimize.outer_loop`` synthetic steps per network, the network trained ``train.steps`` steps on
  S between them (DC; with augmentation, DSA).
- ``feature_mean``: d_c = ‖mean φ_θ(aug(R_c)) − mean φ_θ(aug(S_c))‖², θ random, never trained (DM).
- ``mmd``: d_c = MMD²_RBF(φ_θ(aug(R_c)), φ_θ(aug(S_c))) on the same embeddings.

R_c is a random real batch of class c, S_c the synthetic samples of class c, and ``aug`` the same
DSA draw for both. The synthetic optimizer (``optimize.optimizer``, ``optimize.lr``) steps on S in
standardized units z = (S − μ)/σ (μ, σ: per-channel mean and std of the real training inputs), as
the reference implementations do on normalized data; so their learning rates apply to data in any
units (on digits, x ∈ [0, 1] with σ ≈ 0.38, an SGD step of 0.1 on x diverged where 0.1 on z works).

Risk ``group_cvar`` (Group-CVaR DRO; ``risk.alpha`` = α, weights λ_mean, λ_max, λ_CE) over groups of real
data (``risk.groups``: each real sample's nearest synthetic point of its class, in input space or in the
current network's embedding; k-means clusters of each class, fitted once; or the data's group labels), with
CVaR_α(v) the mean of the worst α-fraction of v (:func:`ddspec.components.objectives.risks.cvar`, differentiable) and
G⁺ the non-empty groups (empty groups skipped, one-sample groups counted):

- gradient surrogates (``gradient_match``): the network steps between synthetic steps train on REAL data
  instead of S (as the paper's network update does): each of the ``train.steps`` steps draws
  ``risk.batch_size`` real samples (256 as in the paper, split evenly over the classes; ``train.batch_size``
  is not used), groups them on the current network, and minimizes, with ℓ_i = CE(θ; aug(x_i), y_i),

      λ_mean · mean_{g∈G⁺} CVaR_α(ℓ_g) + λ_max · max_{g∈G⁺} CVaR_α(ℓ_g) + λ_CE · mean_i ℓ_i,

  gradients flowing through the CVaRs. The synthetic steps use the usual d_c on that network.
- embedding surrogates (``feature_mean``, ``mmd``): the real batch R_c of class c is split into its groups R_c,g; with
  d_g = d(φ_θ(aug(R_c,g)), φ_θ(aug(S_c))) (the class's whole synthetic set, one augmentation draw), d_c is
  replaced by  λ_mean · CVaR_α(d_g : g ∈ G⁺) + λ_max · max_{g∈G⁺} d_g + λ_CE · d(R_c, S_c)  (α = 1: mean +
  max over groups; each group's loss is one distance, so CVaR_α acts across groups; the plain class distance
  plays the part of the plain cross-entropy). In embedding space the groups come from the features the
  distance compares, so grouping costs no extra forward pass.

With ``train.regularizers`` (e.g. GUARD's curvature penalty) every network update minimizes the regularized
loss (per-sample ℓ_R,i = ℓ_i + Σ_r λ_r R_r,i inside a grouped risk's ``within``), and the real gradient target of
``gradient_match`` is ∇θ mean_i ℓ_R,i on the real batch; each such update costs ``train.update_cost()`` times a
plain one.

Which loop runs is a capability of the distance: ``needs_network_training`` (a gradient surrogate, the DC
loop) or ``embedding`` (an embedding surrogate on untrained networks, the DM loop); the distance's builder
gives the surrogate's math, and its spec class (:class:`ddspec.spec.distance.MatchingDistance`) the reference
learning rate and (outer_loop, train.steps) schedule resolved here. A risk that is the plain expectation over
scenarios (capability ``expectation``) groups nothing and draws nothing for groups; a grouped risk (capability
``groups``) takes the paths above. Under torchrun the classes c of Σ_c d_c are split across the ranks (every rank
holds and trains every network θ_s; docs/distributed.md). Matching compares classes, so
real-valued targets are refused.
This module stays light: torch is imported by :mod:`.run` in ``run``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ddspec.backends.base import Backend, Estimate, missing_facts
from ddspec.compiler.estimate import TRAIN_FACTOR, seconds
from ddspec.registry import register_backend

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: Facts the backend needs, with what to say when one is missing.
REQUIRED = (
    ("optimize:gradient", "optimize", "is not a gradient optimizer (matching needs optimize.kind: gradient)"),
    ("distance:surrogate", "distance", "is not a matching surrogate"),
    ("train:differentiable", "train", "is not differentiable training"),
    ("model:differentiable", "model", "is not a differentiable model"),
)


def trains_networks(analysis: Analysis) -> bool:
    """Whether the distance is a gradient surrogate (networks trained between synthetic steps: the DC loop)."""
    return analysis.has("distance:needs_network_training")


def risk_placement(analysis: Analysis) -> str:
    """Where a grouped risk applies, for the reason string ``explain`` shows ('' for the expectation)."""
    if not analysis.has("risk:groups"):
        return ""
    risk = analysis.problem.risk
    if trains_networks(analysis):
        return f"; group-CVaR on the network updates ({risk.describe('CE', batched=True)})"
    grouped = risk.describe("the class distance", batched=False)
    return f"; group-CVaR over groups of real data in the distance ({grouped})"


def has_spatial_dims(analysis: Analysis) -> bool:
    """Whether DSA applies: inputs are C x L or C x H x W."""
    return len(analysis.data.input_shape) in (2, 3)


@register_backend
class MatchingBackend(Backend):
    name = "matching"
    summary = "gradient matching (DC/DSA), distribution matching (DM) and class-wise MMD on random networks"
    preference = 50

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        problems = missing_facts(analysis, REQUIRED)
        distance = analysis.kind("distance")
        if analysis.has("distance:surrogate") and not (trains_networks(analysis) or analysis.has("distance:embedding")):
            problems.append(f"the surrogate `{distance}` compares neither embeddings (capability `embedding`) nor "
                            "per-layer gradients (capability `needs_network_training`)")
        if analysis.has("optimize:gradient") and analysis.problem.optimize.hypergradient is not None:
            problems.append("optimize.hypergradient is set (it configures the bilevel backend)")
        if not (analysis.has("risk:expectation") or analysis.has("risk:groups")):
            problems.append(f"the risk `{analysis.kind('risk')}` is not supported (matching averages over scenarios: "
                            "a risk that is their mean, or one over groups of real data such as group_cvar)")
        if not analysis.has("targets:classes"):
            problems.append(f"the data's targets are not classes ({analysis.data.describe_targets()}), and matching "
                            "compares the real and synthetic data class by class (for regression use bilevel, krr or "
                            "convex)")
        if not problems and analysis.has("risk:groups") and trains_networks(analysis):
            outer = analysis.problem.optimize.outer_loop or self.schedule(analysis)[0]
            if outer < 2:
                problems.append(f"risk {analysis.kind('risk')} acts on the network updates of gradient matching, and "
                                "with optimize.outer_loop = 1 (DC's schedule at this size unless set) no network is "
                                "updated: set optimize.outer_loop >= 2")
        if problems:
            return False, "; ".join(problems)
        why = f"`{distance}` is a matching surrogate and the model is differentiable"
        return True, why + risk_placement(analysis)

    def resolve(self, analysis: Analysis) -> dict[str, Any]:
        """SGD with the distance's reference lr and schedule (DC's for gradient matching, a single untrained step
        for embedding surrogates); augmentation on wherever the inputs have spatial dimensions."""
        outer, steps = self.schedule(analysis)
        return {
            "optimize.optimizer": "sgd",
            "optimize.lr": analysis.problem.distance.reference_lr,
            "optimize.outer_loop": outer,
            "optimize.augmentation.enabled": has_spatial_dims(analysis),
            "train.steps": steps,
        }

    @staticmethod
    def schedule(analysis: Analysis) -> tuple[int, int]:
        """(outer_loop, train.steps) as resolved: the distance's schedule at this many images per class."""
        return analysis.problem.distance.schedule(analysis.n_synthetic / analysis.data.num_classes)

    def parallel(self, analysis: Analysis) -> tuple[str, int] | None:
        """The classes of Σ_c d_c (those with synthetic rows): each rank draws its classes' real batches and
        computes their distances on every network."""
        return "classes", sum(1 for n in analysis.synthetic_counts if n > 0)

    def estimate(self, analysis: Analysis) -> Estimate:
        """FLOPs from the models' analytic costs: a forward is f per sample, forward + backward
        TRAIN_FACTOR·f, a double backward (gradient matching's create_graph) 2·TRAIN_FACTOR·f; the network updates
        and the real gradient target cost ``train.update_cost()`` times that (the regularizers)."""
        p, info = analysis.problem, analysis.data
        costs = [m.cost(info.input_shape, info.num_classes) for m in (list(p.scenarios.models) or [p.model])]
        params, acts = max(c[0] for c in costs), max(c[2] for c in costs)
        flops = sum(c[1] for c in costs) / len(costs)
        batches = [min(p.optimize.real_batch_per_class, n) for n in info.class_counts]
        real, n = sum(batches), analysis.n_synthetic
        outer = p.optimize.outer_loop or self.schedule(analysis)[0]
        steps = p.train.steps or self.schedule(analysis)[1]
        if trains_networks(analysis):
            update = TRAIN_FACTOR * flops * p.train.update_cost()  # a (regularized) update: network and real target
            match = update * real + 2 * TRAIN_FACTOR * flops * n
            inner = update * min(p.train.batch_size, n)
            if analysis.has("risk:groups"):  # network steps on a real batch (and an embedding pass to group it)
                inner = (update + flops) * p.risk.batch_size
            per_init = outer * match + (outer - 1) * steps * inner
            live = acts * (max(batches) + 2 * max(analysis.synthetic_counts)) + 4 * params
            how = f"{outer} synthetic steps x {real} real + {n} synthetic samples, {steps} network steps between"
            regularized = p.train.active_regularizers()
            if regularized:
                how += " (regularized: " + ", ".join(r.describe() for r in regularized) + ")"
        else:
            per_init = flops * real + TRAIN_FACTOR * flops * n
            live = acts * (max(batches) + max(analysis.synthetic_counts)) + params
            how = f"one forward of {real} real samples and forward + backward of {n} synthetic samples"
        total = per_init * p.scenarios.inits * p.optimize.iterations
        sample = math.prod(info.input_shape)
        memory = 4 * (sample * (info.n_train + info.n_test + 4 * n) + p.scenarios.inits * live)
        detail = (
            f"{p.optimize.iterations} iterations x {p.scenarios.inits} init(s), each {how}; "
            f"{total:.2g} FLOPs at the nominal throughput; float32, whole dataset on the device"
        )
        return Estimate(int(memory), seconds(total, p.runtime.device), detail)

