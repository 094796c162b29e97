"""Collocation backend: distill the collocation points of a physics-informed network (data ``pde``).

D̂ = M label-free points p_i = (z_i, a_i) (coordinates and BC parameters) in the data's point box. With a gradient
``optimize``, each outer iteration

1. draws the inner PINN (``train.inner``) from the run's generator: F random tanh features φ, or a fresh
   initialisation θ0 of the evaluated MLP PINN (its tangent features ∂_θN at θ0);
2. fits it on D̂ in closed form: random features u_w = lift + bubble·φ·w, w = −(AᵀA/M + λI)⁻¹ Aᵀ r₀ / M with
   A_ij = L[bubble·φ_j](p_i), r₀,i = L[lift](p_i); tangent u = lift + bubble·(N_θ0 + ∂_θN·Δ),
   Δ = −Aᵀ(AAᵀ/M + λI)⁻¹ r / M (differentiable in the points);
3. measures the scenarios ω: every BC of the data, d_ω = ``distance``(u_w(·, a_ω), u_ω) on the data's grid; and
   ``task.physics_bcs`` BCs drawn from the point box, d_ω = ‖L[u_w]‖/‖L[lift]‖ on a coarser grid (no data there);
4. steps on the points along ∇ R_ω[d_ω] (``risk``: mean, CVaR, max), then projects them onto the box.

With ``optimize: select`` it draws the points instead: ``uniform``/``lhs``/``sobol``/``halton`` in the box,
``rad`` (a PINN of the evaluated architecture trained while resampling them by residual), or ``random`` real
records. torch is imported by :mod:`.run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ddspec.backends.base import HYPERGRADIENT_DEFAULTS, Backend, Estimate, missing_facts
from ddspec.compiler.estimate import TRAIN_FACTOR, seconds
from ddspec.registry import register_backend

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

#: Facts the backend needs, with what to say when one is missing.
REQUIRED = (
    ("data:pde", "data", "is not a PDE problem (data: {kind: pde})"),
    ("model:physics_informed", "model", "is not a physics-informed network (model: {kind: pinn_mlp})"),
    ("train:residual", "train", "does not train on the PDE residual (train: {kind: residual})"),
)


@register_backend
class CollocationBackend(Backend):
    name = "collocation"
    summary = "PDE collocation points: hypergradients through a closed-form inner PINN, or samplers"
    preference = 20

    def can_lower(self, analysis: Analysis) -> tuple[bool, str]:
        p = analysis.problem
        problems = missing_facts(analysis, REQUIRED)
        selection = analysis.has("optimize:selection")
        if not (selection or analysis.has("optimize:gradient")):
            problems.append(f"the optimize `{analysis.kind('optimize')}` is neither gradient nor select")
        if not selection and not analysis.has("task:field"):
            problems.append("the task does not compare solution fields (declare task: {kind: pde_solution})")
        if selection and p.optimize.method in ("herding", "kcenter"):
            problems.append(f"`{p.optimize.method}` selection is not defined for collocation points (use random, "
                            "uniform, lhs, sobol, halton or rad)")
        if p.scenarios.inits != 1 or p.scenarios.models or p.scenarios.pool is not None:
            problems.append("the scenarios are the BCs (set scenarios to its defaults: inits 1, no models, no pool)")
        if analysis.has("risk:groups"):
            problems.append(f"the risk `{p.risk.kind}` groups real samples; here the scenarios are BCs (use mean, "
                            "cvar or max)")
        if problems:
            return False, "; ".join(problems)
        if selection:
            return True, f"collocation points drawn by `{p.optimize.method}`"
        return True, (f"collocation points learned through a closed-form {p.train.inner_name()} PINN, risk "
                      f"`{p.risk.kind}` over the data's BCs and {p.task.physics_bcs} physics-only BC(s) per iteration")

    def resolve(self, analysis: Analysis) -> dict[str, Any]:
        """Adam with lr 0.01 on the points (held standardized), the task's distance (relL2)."""
        if not analysis.has("optimize:gradient"):
            return {}
        return {**HYPERGRADIENT_DEFAULTS, "distance": analysis.problem.task.default_distance()}

    def parallel(self, analysis: Analysis) -> tuple[str, int] | None:
        """The scenarios of an outer step, the BCs (``data.train_bcs`` with data, then ``task.physics_bcs``): each
        rank measures its share on the inner PINN every rank fits (a selection splits nothing)."""
        if analysis.has("optimize:selection"):
            return None
        return "boundary conditions", analysis.problem.data.train_bcs + analysis.problem.task.physics_bcs

    def estimate(self, analysis: Analysis) -> Estimate:
        """Per iteration: F features' second derivatives at the M points (about 12·D FLOPs per feature and point
        with the forward-over-reverse Hessian), an F x F solve, the field of every data BC on its grid and the
        residual of each physics BC on the physics grid; x 3 for the backward. The tangent inner model has the
        evaluated MLP's P parameters as features and an M x M solve instead."""
        p, info = analysis.problem, analysis.data
        m, dim, coords = analysis.n_synthetic, info.input_shape[0], len(p.data.problem.coordinates)
        if analysis.has("optimize:selection"):
            detail = f"{m} points drawn by `{p.optimize.method}`"
            flops = 0.0
            if p.optimize.method == "rad":
                _, forward, _ = p.model.cost(info.input_shape, 1)
                steps = p.evaluate.epochs
                flops = steps * m * forward * (3 + 2 * coords) * TRAIN_FACTOR
                detail += f": a PINN trained {steps} steps, resampled every {p.optimize.resample_every}"
            return Estimate(8 * m * dim * 4, seconds(flops, p.runtime.device), detail + "; float64")
        tangent = p.train.inner == "tangent"
        feats = p.model.cost(info.input_shape, 1)[0] if tangent else p.train.features
        grid = p.data.grid ** coords
        physics = p.task.physics_bcs * p.task.physics_grid ** coords
        per = 12 * dim * feats * (m + physics) + (m if tangent else feats) ** 3 + 2 * feats * grid * p.data.train_bcs
        total = TRAIN_FACTOR * per * p.optimize.iterations
        memory = 8 * feats * (4 * m * dim + 2 * grid * p.data.train_bcs + 4 * physics) + 8 * feats ** 2
        detail = (f"{p.optimize.iterations} iterations, each a closed-form fit of the {p.train.inner_name()} PINN "
                  f"({feats} features) at {m} points, {p.data.train_bcs} data BCs on {grid} grid points and {p.task.physics_bcs} physics "
                  f"BCs on {p.task.physics_grid ** coords}; float64")
        return Estimate(int(memory), seconds(total, p.runtime.device), detail,
                        "lower train.features, task.physics_bcs or data.grid")
