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

    def losses(self, fitted: InnerPinn, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(d_ω of the data BCs, d_ω of ``physics_bcs`` fresh physics BCs) of the fitted inner PINN."""
        data, problem = self.data, self.data.physics
        x = records(data.grid, data.bcs_train)
        u = fitted.solution(x[:, : problem.coords], x[:, problem.coords:])
        fields = data.y_train.reshape(len(data.bcs_train), -1)
        measured = self.distance(u.reshape(fields.shape), fields)
        if self.physics_bcs == 0:
            return measured, measured.new_zeros(0)
        low, high = data.low[problem.coords:], data.high[problem.coords:]
        bcs = low + (high - low) * torch.rand(self.physics_bcs, problem.terms, generator=generator,
                                              dtype=torch.float64).to(low.device)
        xp = records(self.physics_grid, bcs)
        z, a = xp[:, : problem.coords], xp[:, problem.coords:]
        residual = fitted.residual(z, a).reshape(self.physics_bcs, -1)
        reference = problem.operator(problem.lift, z, a).reshape(self.physics_bcs, -1)
        return measured, residual.norm(dim=-1) / reference.norm(dim=-1)


def build_task(spec: Any, ctx: RunContext) -> FieldObjective:
    """The objective of ``task: pde_solution`` on the run's data, with the problem's ``distance``."""
    grid = grid_points(ctx.problem.data.problem.domain(), spec.physics_grid).to(ctx.device)
    return FieldObjective(ctx.data, DISTANCES.build(ctx.problem.distance, ctx), spec.physics_bcs, grid)
