"""A PDE problem as a dataset: solution fields of boundary conditions (BCs) on a grid (data ``pde``).

Records are p = (z, a) (coordinates, then the BC's K terms). The training set is the exact field of every training
BC on the grid (BC-major: G rows per BC, G = grid^coords), the test set the fields of the test BCs of A_in, then of
A_out; ``groups_*`` is the BC index of a record. Draws (numpy ``default_rng(seed)``): the training BCs uniform in
A_in, the test BCs uniform in A_in, then uniform in box^K kept when in A_out (rejection).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ddspec.components.data.base import Dataset
from ddspec.components.objectives.targets import Targets
from ddspec.components.pde.problems import PdeProblem
from ddspec.registry import PDE_PROBLEMS

#: Rejection draws per A_out BC before giving up (A_out is a large part of box^K for the families ddspec allows).
MAX_REJECTIONS = 10_000


@dataclass(frozen=True)
class FieldTargets(Targets):
    """A PDE's solution values u(p) at the records: real data only (D̂'s points carry no targets)."""

    kind = "field"

    @property
    def num_outputs(self) -> int:
        return 1


@dataclass(frozen=True)
class PdeDataset(Dataset):
    """A :class:`Dataset` of solution fields, with the PDE and its BCs.

    ``physics``: the torch side of the problem; ``grid``: G x coords; ``bcs_train``: B x K; ``bcs_test``: the A_in
    test BCs, then the A_out ones (2T x K); ``test_out``: bool 2T, True for A_out; ``low``/``high``: the box of D̂'s
    points (coords + K)."""

    physics: PdeProblem | None = None
    grid: torch.Tensor | None = None
    bcs_train: torch.Tensor | None = None
    bcs_test: torch.Tensor | None = None
    test_out: torch.Tensor | None = None
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None

    @property
    def targets(self) -> Targets:
        return FieldTargets()

    def input_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The points' standardization: the box's centre and the std of a uniform draw in it, (high − low)/√12."""
        return (self.low + self.high) / 2, (self.high - self.low) / 12 ** 0.5

    def fields(self, bcs: torch.Tensor) -> torch.Tensor:
        """The exact fields of ``bcs`` (B x K) on the grid: B x G."""
        return field_values(self.physics, self.grid, bcs)

    def to(self, device: torch.device | str) -> PdeDataset:
        moved = super().to(device)
        return replace(moved, **{name: getattr(self, name).to(device)
                                 for name in ("grid", "bcs_train", "bcs_test", "test_out", "low", "high")})


def grid_points(domain: list[tuple[float, float]], n: int) -> torch.Tensor:
    """The n^coords grid over ``domain`` (boundaries included), first coordinate slowest: G x coords, float64."""
    axes = [torch.linspace(lo, hi, n, dtype=torch.float64) for lo, hi in domain]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(domain))


def records(grid: torch.Tensor, bcs: torch.Tensor) -> torch.Tensor:
    """Every (grid point, BC) record, BC-major: (B·G) x (coords + K)."""
    g, b = len(grid), len(bcs)
    return torch.cat([grid.repeat(b, 1), bcs.repeat_interleave(g, 0)], 1)


def field_values(problem: PdeProblem, grid: torch.Tensor, bcs: torch.Tensor) -> torch.Tensor:
    """The exact solution of each BC on the grid: B x G."""
    x = records(grid, bcs)
    return problem.exact(x[:, : problem.coords], x[:, problem.coords:]).reshape(len(bcs), len(grid))


def in_data_box(a: np.ndarray, spec: Any) -> np.ndarray:
    """Whether each BC (rows of a) lies in A_in."""
    lo, hi = np.array(spec.in_box()).T
    return np.all((a >= lo) & (a <= hi), axis=1)


def held_out(a: np.ndarray, spec: Any) -> np.ndarray:
    """Whether each BC lies in A_out: outside A_in, with a_K in ``held_out_last`` or ‖a‖∞ in ``held_out_norm``."""
    last, norm = spec.held_out_last, spec.held_out_norm
    sup = np.abs(a).max(axis=1)
    band = ((a[:, -1] >= last[0]) & (a[:, -1] <= last[1])) | ((sup >= norm[0]) & (sup <= norm[1]))
    return band & ~in_data_box(a, spec)


def draw_bcs(spec: Any, rng: np.random.Generator, n: int, region: str) -> np.ndarray:
    """n BCs uniform in A_in (``region`` "in"), or in box^K kept when in A_out ("out")."""
    if region == "in":
        lo, hi = np.array(spec.in_box()).T
        return rng.uniform(lo, hi, size=(n, spec.terms))
    kept: list[np.ndarray] = []
    for _ in range(MAX_REJECTIONS):
        a = rng.uniform(*spec.box, size=(n, spec.terms))
        kept.extend(a[held_out(a, spec)])
        if len(kept) >= n:
            return np.stack(kept[:n])
    raise ValueError(f"A_out of {spec.kind} is (nearly) empty: held_out_last {spec.held_out_last} and held_out_norm "
                     f"{spec.held_out_norm} leave no BC in box {spec.box} outside the data box")


def build_pde(spec: Any) -> PdeDataset:
    """The dataset of data ``pde`` (see the module docstring); float64."""
    problem: PdeProblem = PDE_PROBLEMS.build(spec.problem)
    rng = np.random.default_rng(spec.seed)
    train = torch.from_numpy(draw_bcs(spec.problem, rng, spec.train_bcs, "in"))
    test = torch.from_numpy(np.concatenate([draw_bcs(spec.problem, rng, spec.test_bcs, region)
                                            for region in ("in", "out")]))
    grid = grid_points(spec.problem.domain(), spec.grid)
    box = torch.tensor(spec.point_box(), dtype=torch.float64)
    cells = len(grid)
    return PdeDataset(
        name=f"pde:{spec.problem.kind}",
        x_train=records(grid, train), y_train=field_values(problem, grid, train).reshape(-1),
        x_test=records(grid, test), y_test=field_values(problem, grid, test).reshape(-1),
        num_classes=0,
        groups_train=torch.arange(len(train)).repeat_interleave(cells),
        groups_test=torch.arange(len(test)).repeat_interleave(cells),
        physics=problem, grid=grid, bcs_train=train, bcs_test=test,
        test_out=torch.arange(len(test)) >= spec.test_bcs, low=box[:, 0], high=box[:, 1],
    )
