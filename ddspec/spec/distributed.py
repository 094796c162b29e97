"""``runtime.distributed``: how a run launched by ``torchrun`` splits its parallel axes across ranks.

Without torchrun (no ``WORLD_SIZE`` in the environment, or 1) a run is one process and this section changes
nothing. Under ``torchrun --nproc_per_node=N`` every rank holds the whole D̂; a backend's parallel units (the
bilevel backend's scenarios ω, the zero-order backend's objective evaluations, the matching backend's classes, the
collocation backend's boundary conditions) and the evaluation's
(model, seed) runs are assigned to ranks by :meth:`DistributedSpec.shares`; every rank gathers the others'
results and takes the identical step. The torch side is :mod:`ddspec.runtime.distributed`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ddspec.errors import Finding
from ddspec.spec.base import SpecModel

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

PATH = "runtime.distributed"


def launched_world(env: Mapping[str, str] | None = None) -> int:
    """The number of ranks torchrun (or ``srun`` with torchrun's variables) launched: ``WORLD_SIZE``, else 1."""
    env = os.environ if env is None else env
    try:
        return max(1, int(env.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def launched_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank under torchrun: ``RANK``, else 0."""
    env = os.environ if env is None else env
    try:
        return int(env.get("RANK", "0"))
    except ValueError:
        return 0


class DistributedSpec(SpecModel):
    """Scenario-parallel runs under torchrun.

    ``reduction``: ``ordered`` all-gathers every unit's loss and gradient (fixed-shape tensors), puts them back in
    unit order and sums Σ_s w_s g_s in that order on every rank, so the step is bit-for-bit the single-process
    one (memory: every rank holds all S gradients); ``all_reduce`` gathers the losses only (the risk's weights
    w_s = ∂R/∂ℓ_s need all of them), sums Σ_{s on this rank} w_s g_s locally and all-reduces one gradient per
    rank — less traffic and memory, equal to the single-process step to float rounding (≈1e-6 relative).
    ``split``: ``contiguous`` gives rank r units [r·S/N, (r+1)·S/N) (the first S mod N ranks one more),
    ``round_robin`` units r, r + N, r + 2N, …. ``backend``: ``auto`` is nccl on CUDA, gloo on CPU.
    ``timeout_s``: how long a rank waits for the rendezvous and for every collective before the run fails.
    """

    reduction: Literal["ordered", "all_reduce"] = "ordered"
    split: Literal["contiguous", "round_robin"] = "contiguous"
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    timeout_s: float = Field(600.0, gt=0, le=86400, description="Seconds a rank waits at the rendezvous and in "
                             "every collective before the run fails (DISTRIBUTED_RENDEZVOUS, DISTRIBUTED_LOST).")

    def shares(self, count: int, world: int) -> list[list[int]]:
        """The unit indices 0..count-1 of every rank 0..world-1 (uneven splits: some ranks get one more)."""
        if self.split == "round_robin":
            return [list(range(r, count, world)) for r in range(world)]
        base, extra = divmod(count, world)
        starts = [r * base + min(r, extra) for r in range(world + 1)]
        return [list(range(starts[r], starts[r + 1])) for r in range(world)]

    def describe(self, world: int, units: tuple[str, int] | None, evaluations: int) -> str:
        """What ``explain`` prints: the ranks, which of the backend's ``units`` (name, count) each rank runs, and
        the split of the ``evaluations`` (model, seed) runs."""
        if world == 1:
            return ("1 process (under torchrun --nproc_per_node=N the "
                    + (f"{units[1]} {units[0]}" if units else "evaluation runs") + " are split across ranks)")
        lines = [f"{world} ranks ({self.split}, reduction {self.reduction}, backend {self.backend})"]
        if units is None:
            lines.append("distillation replicated on every rank (this backend splits nothing)")
        else:
            name, count = units
            idle = idle_ranks(count, world, name)
            if idle is not None:
                lines.append(f"refused at run time [{idle.code}]: {idle.message}; fix: {idle.fix}")
            for rank, share in enumerate(self.shares(count, world)):
                lines.append(f"rank {rank}: {name} {_ranges(share)}")
        runs = [len(s) for s in self.shares(evaluations, world)]
        lines.append(f"evaluation: {evaluations} (model, seed) runs, {', '.join(map(str, runs))} per rank")
        return "\n              ".join(lines)

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """nccl moves CUDA tensors only: it needs ``runtime.device`` cuda (or auto on a GPU machine)."""
        if self.backend == "nccl" and analysis.problem.runtime.device == "cpu":
            yield Finding("NCCL_NEEDS_CUDA", f"{PATH}.backend", "nccl communicates CUDA tensors, but runtime.device "
                          "is cpu", f"set {PATH}.backend: gloo (or auto), or runtime.device: cuda")


def idle_ranks(count: int, world: int, what: str) -> Finding | None:
    """DISTRIBUTED_IDLE_RANKS when ``world`` ranks share fewer than ``world`` units of ``what``, else None."""
    if count >= world:
        return None
    return Finding("DISTRIBUTED_IDLE_RANKS", PATH, f"{world} ranks share {count} {what}: {world - count} rank(s) "
                   "would be idle", f"launch with torchrun --nproc_per_node={count} (or fewer), or raise the number "
                   f"of {what} to {world}")


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] → '0-2, 5' ('none' when empty)."""
    if not indices:
        return "none"
    parts, start = [], indices[0]
    for prev, cur in zip(indices, [*indices[1:], None]):
        if cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(parts)
