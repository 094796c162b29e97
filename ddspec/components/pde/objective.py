"""The ``pde_solution`` task and the ``relative_l2`` distance: the scenario losses of an inner PINN u fitted to D̂
(:mod:`ddspec.components.pde.inner`).

Scenarios ω: every training BC of the data, d_ω = distance(u(·, a_ω), u_ω) on the data's grid against its field;
and ``task.physics_bcs`` BCs a drawn uniformly from the BC part of D̂'s point box (fresh each iteration, from the
run's generator), where there is no data: d_ω = ‖L[u](·, a)‖₂ / ‖L[lift](·, a)‖₂ on a ``task.physics_grid`` grid
(1 for the lift alone, i.e. N ≡ 0; 0 for the exact solution).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ddspec.components.pde.data import PdeDataset, grid_points, records
from ddspec.components.pde.inner import InnerPinn
from ddspec.registry import DISTANCES

if TYPE_CHECKING:
    from ddspec.runtime.context import RunContext

#: d(u, v) per scenario: B x G fields → B distances.
FieldDistance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def relative_l2(spec: Any, ctx: Any) -> FieldDistance:
    """relL2(u, v) = ‖u − v‖₂ / ‖v‖₂ along the last dimension."""
    return lambda u, v: (u - v).norm(dim=-1) / v.norm(dim=-1)


@dataclass
class FieldObjective:
    """``task: pde_solution`` bound to the data: :meth:`losses` gives every scenario's d_ω for a fitted PINN."""

    data: PdeDataset
    distance: FieldDistance
    physics_bcs: int
    physics_grid: torch.Tensor

    @property
    def data_bcs(self) -> int:
        """B: the data's training BCs, scenarios 0..B−1."""
        return len(self.data.bcs_train)

    @property
    def count(self) -> int:
        """S = B + ``physics_bcs``: the scenarios of an outer iteration."""
        return self.data_bcs + self.physics_bcs

    def draw_physics(self, generator: torch.Generator) -> torch.Tensor:
        """An iteration's ``physics_bcs`` fresh BCs (physics_bcs, K), uniform in the BC part of the point box."""
        data, problem = self.data, self.data.physics
        low, high = data.low[problem.coords:], data.high[problem.coords:]
        return low + (high - low) * torch.rand(self.physics_bcs, problem.terms, generator=generator,
                                               dtype=torch.float64).to(low.device)

    def loss(self, fitted: InnerPinn, s: int, physics: torch.Tensor) -> torch.Tensor:
        """d_s of the fitted inner PINN: for s < B the data BC s, distance(u(·, a_s), u_s) on the data's grid; else
        the physics BC a = ``physics[s − B]`` (:meth:`draw_physics`), ‖L[u](·, a)‖₂ / ‖L[lift](·, a)‖₂ on the
        physics grid."""
        data, problem, b = self.data, self.data.physics, self.data_bcs
        c = problem.coords
        if s < b:
            x = records(data.grid, data.bcs_train[s: s + 1])
            field = data.y_train.reshape(b, -1)[s: s + 1]
            return self.distance(fitted.solution(x[:, :c], x[:, c:]).reshape(field.shape), field)[0]
        xp = records(self.physics_grid, physics[s - b: s - b + 1])
        z, a = xp[:, :c], xp[:, c:]
        return fitted.residual(z, a).norm() / problem.operator(problem.lift, z, a).norm()


def build_task(spec: Any, ctx: RunContext) -> FieldObjective:
    """The objective of ``task: pde_solution`` on the run's data, with the problem's ``distance``."""
    grid = grid_points(ctx.problem.data.problem.domain(), spec.physics_grid).to(ctx.device)
    return FieldObjective(ctx.data, DISTANCES.build(ctx.problem.distance, ctx), spec.physics_bcs, grid)
