"""Scenario-parallel runs on torch.distributed: the ranks torchrun launched, the split and the gathers.

Every rank holds the whole D̂ and draws every shared quantity (the real batch, the directions of a zero-order
step) from the run's generator exactly as a single process does; only the parallel units are split
(:meth:`~ddspec.spec.distributed.DistributedSpec.shares`): a backend's scenarios ω, objective evaluations, classes
or boundary conditions, and the evaluation's (model, seed) runs. Each unit's randomness is seeded from (run seed,
iteration, unit) (:meth:`~ddspec.runtime.context.RunContext.scenario`), so the split changes no draw.

:meth:`Ranks.risk_gradient` forms R_ω and its gradient Σ_s w_s g_s (w_s = ∂R/∂ℓ_s: CVaR and max need every ℓ_s):
``ordered`` all-gathers the per-unit losses and flat gradients (fixed shapes, padded to the largest share), puts
them back in unit order and sums in that order on every rank — the single-process arithmetic, bit for bit;
``all_reduce`` all-gathers the losses only and all-reduces each rank's partial sum (float rounding differs).
A single process is a :class:`Ranks` of world 1 whose gathers return their input: one code path for both.

Failures: every unit of work runs inside :meth:`Ranks.agree`, which all-gathers each rank's outcome; when a
rank failed, every rank stops — that rank with its own error, the others with ``RANK_FAILED`` quoting it — so
rank 0 reports the error and writes nothing more. A rank that disappears (killed) or a collective that outlasts
``runtime.distributed.timeout_s`` ends the others with ``DISTRIBUTED_LOST``.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar

import torch
import torch.distributed as dist

from ddspec.errors import DDSpecError, Finding, RankFailed, RunError, SpecError
from ddspec.spec.distributed import PATH, DistributedSpec, idle_ranks, launched_world

T = TypeVar("T")

RESUME_FIX = "see the failing rank's message; once fixed, continue with the same torchrun command and --resume"


class RiskStep(NamedTuple):
    """What :meth:`Ranks.risk_gradient` gives every rank: R_ω(ℓ), Σ_s w_s g_s (flat) and ℓ (float64, unit order)."""

    value: float
    gradient: torch.Tensor
    losses: torch.Tensor


@dataclass
class Ranks:
    """The processes of a run: this one's ``rank`` among ``world``, and the split of ``spec``."""

    spec: DistributedSpec = field(default_factory=DistributedSpec)
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""  # the process group's backend ("" for one process)
    owned: bool = False  # this object initialised the process group (and destroys it in close)

    @property
    def writer(self) -> bool:
        """Rank 0 alone writes artifacts and checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def mine(self, count: int) -> list[int]:
        """This rank's units among ``count``."""
        return self.spec.shares(count, self.world)[self.rank]

    def check_units(self, units: tuple[str, int] | None) -> None:
        """SpecError DISTRIBUTED_IDLE_RANKS when the backend's ``units`` (name, count) leave ranks without work."""
        finding = None if units is None or not self.active else idle_ranks(units[1], self.world, units[0])
        if finding is not None:
            raise SpecError([finding])

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: on CUDA the GPU ``LOCAL_RANK`` (made current), else ``device``."""
        if device.type != "cuda" or not self.active:
            return device
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    # -- agreement -------------------------------------------------------------------------------
    def agree(self, work: Callable[[], T], what: str = "the run") -> T:
        """``work()`` on every rank; when any rank raised, every rank raises (see the module docstring)."""
        try:
            value, failure = work(), None
        except Exception as exc:  # noqa: BLE001 - shipped to the other ranks, then re-raised here
            if not self.active:
                raise
            value, failure = None, exc
        if not self.active:
            return value
        shipped = None if failure is None else _findings(failure)
        outcomes: list[Any] = [None] * self.world
        with self._collective(what):
            dist.all_gather_object(outcomes, shipped)
        if failure is not None:
            raise failure
        failed = [(r, f) for r, f in enumerate(outcomes) if f is not None]
        if failed:
            rank, findings = failed[0]
            quoted = "; ".join(f"[{f.code}] {f.path or '<spec>'}: {f.message}" for f in findings)
            raise RankFailed([Finding("RANK_FAILED", PATH, f"rank {rank} of {self.world} failed during {what}: "
                                      f"{quoted}", findings[0].fix or RESUME_FIX)])
        return value

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on some rank (e.g. a stop request seen by one of them)."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=self._comm_device)
        with self._collective("a stop request"):
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self, what: str) -> None:
        if self.active:
            with self._collective(what):
                dist.barrier()

    # -- gathers ---------------------------------------------------------------------------------
    def gather_units(self, mine: torch.Tensor, count: int, what: str = "a gather") -> torch.Tensor:
        """The rows of all ranks in unit order: ``mine`` holds this rank's units' rows (``len(self.mine(count))``
        x …); the result is count x …, on ``mine``'s device. Exact (the rows are copied, not summed)."""
        if not self.active:
            return mine
        shares = self.spec.shares(count, self.world)
        width = max(len(s) for s in shares)
        padded = torch.zeros((width, *mine.shape[1:]), dtype=mine.dtype, device=self._comm_device)
        padded[: len(mine)] = mine.to(self._comm_device)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        with self._collective(what):
            dist.all_gather(parts, padded)
        out = torch.empty((count, *mine.shape[1:]), dtype=mine.dtype, device=self._comm_device)
        for share, part in zip(shares, parts):
            out[share] = part[: len(share)]
        return out.to(mine.device)

    def gather_objects(self, mine: list[T], count: int, what: str = "a gather") -> list[T]:
        """Python objects of all ranks in unit order (pickled; for small records such as evaluation runs)."""
        if not self.active:
            return mine
        parts: list[Any] = [None] * self.world
        with self._collective(what):
            dist.all_gather_object(parts, mine)
        out: list[Any] = [None] * count
        for share, part in zip(self.spec.shares(count, self.world), parts):
            for index, item in zip(share, part):
                out[index] = item
        return out

    def risk_gradient(self, count: int, unit: Callable[[int], tuple[float, torch.Tensor]],
                      risk: Callable[[torch.Tensor], torch.Tensor], what: str) -> RiskStep:
        """(R_ω(ℓ), Σ_s w_s g_s, ℓ) with w = ∂R/∂ℓ, from ``unit(s) = (ℓ_s, g_s flat)`` run for this rank's units;
        zero weights skip their term. ``ordered`` sums in unit order over the gathered gradients, ``all_reduce`` sums
        this rank's terms and all-reduces (see the module docstring)."""
        mine = self.mine(count)
        results = self.agree(lambda: [unit(s) for s in mine], what)
        device = results[0][1].device if results else torch.device("cpu")
        local = torch.tensor([loss for loss, _ in results], dtype=torch.float64, device=device)
        values = self.gather_units(local, count, what).detach().cpu().requires_grad_(True)
        total = risk(values)
        (weights,) = torch.autograd.grad(total, values)
        w = weights.tolist()
        if self.spec.reduction == "ordered" or not self.active:
            grads = self.gather_units(torch.stack([g for _, g in results]), count, what)
            terms = [(w[s], grads[s]) for s in range(count)]
        else:
            terms = [(w[s], g) for s, (_, g) in zip(mine, results)]
        combined = torch.zeros_like(results[0][1])
        for weight, g in terms:
            if weight != 0.0:
                combined += weight * g
        if self.active and self.spec.reduction == "all_reduce":
            reduced = combined.to(self._comm_device)
            with self._collective(what):
                dist.all_reduce(reduced)
            combined = reduced.to(combined.device)
        return RiskStep(float(total.detach()), combined, values.detach())

    # -- lifetime --------------------------------------------------------------------------------
    @property
    def _comm_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    @contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        """A collective that fails because a rank vanished or it timed out ends this rank with DISTRIBUTED_LOST."""
        try:
            yield
        except (RuntimeError, dist.DistError) as exc:
            raise RunError.one("DISTRIBUTED_LOST", PATH, f"rank {self.rank} lost the other ranks during {what} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                               f"a rank stopped or took longer than {PATH}.timeout_s ({self.spec.timeout_s:g} s): "
                               f"see the other ranks' messages; {RESUME_FIX}") from exc

    def close(self) -> None:
        """Leave the process group this object started, and collect the garbage it leaves while the interpreter is
        alive: left to interpreter shutdown, it aborted rank 0 at exit ("terminate called without an active
        exception") in about one run in six whose ranks had waited on each other for seconds (0 in 26 with the
        collection). The likely mechanism: gloo's finished work objects hold tensors, and freeing them during
        interpreter finalization needs a GIL that can no longer be taken."""
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
            gc.collect()
            self.owned = False


def start(spec: DistributedSpec, device: str) -> Ranks:
    """The ranks of this run: one process unless torchrun set ``WORLD_SIZE`` > 1; then join the process group
    (``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` from the environment; gloo on CPU, nccl on CUDA)
    within ``spec.timeout_s``. SpecError NCCL_NEEDS_CUDA (nccl without a GPU); RunError DISTRIBUTED_RENDEZVOUS
    (the other ranks did not join in time, or the address cannot be reached)."""
    world = launched_world()
    if world == 1:
        return Ranks(spec)
    env = os.environ
    rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    backend = spec.backend if spec.backend != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl" and not torch.cuda.is_available():
        raise SpecError.one("NCCL_NEEDS_CUDA", f"{PATH}.backend", "nccl communicates CUDA tensors, but torch sees no GPU",
                            f"set {PATH}.backend: gloo (or auto) on a CPU machine")
    if dist.is_initialized():  # a caller (e.g. a user's script) started the group: use it as it is
        return Ranks(spec, dist.get_rank(), dist.get_world_size(), local, dist.get_backend())
    where = f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"
    if backend == "nccl":
        torch.cuda.set_device(local)  # before the first collective: nccl's object gathers use the current device
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=spec.timeout_s), world_size=world, rank=rank,
                                device_id=torch.device("cuda", local) if backend == "nccl" else None)
    except (RuntimeError, ValueError, dist.DistError) as exc:
        raise RunError.one("DISTRIBUTED_RENDEZVOUS", PATH, f"rank {rank} of {world} could not join the others at "
                           f"{where} within {spec.timeout_s:g} s ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})",
                           "start every rank with the same torchrun command (same --nnodes and --rdzv-endpoint "
                           "or MASTER_ADDR/MASTER_PORT reachable from every node), or raise "
                           f"{PATH}.timeout_s") from exc
    return Ranks(spec, rank, world, local, backend, owned=True)


def _findings(exc: BaseException) -> list[Finding]:
    """What a failing rank tells the others: its findings, or its exception in one finding."""
    if isinstance(exc, DDSpecError):
        return list(exc.findings)
    return [Finding("INTERNAL", "", f"{type(exc).__name__}: {exc}", "run that rank with --debug for the traceback")]
