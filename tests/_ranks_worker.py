"""Run under ``torchrun --nproc_per_node=2`` by tests/test_distributed.py: ``python tests/_ranks_worker.py OUT JOBS``.

Each rank joins the process group once (:func:`ddspec.runtime.distributed.start`), checks the collectives of
:class:`~ddspec.runtime.distributed.Ranks` on hand-made units, then runs every ``ddspec`` command line of the JSON
file JOBS (``{name: {"args": [...], "sigterm": [rank, iteration], "fail": [rank, iteration]}}``, both optional)
through :func:`ddspec.cli.main` — each run joins the same group, so the start-up (imports, rendezvous) is paid once;
with ``sigterm`` that rank sends itself SIGTERM once it has recorded that iteration; with ``fail`` that rank's
scenarios raise in that iteration — and writes what it saw (return codes, stdout, stderr) to ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, redirect_stderr, redirect_stdout
from pathlib import Path

import torch

from ddspec.cli import main as ddspec_main
from ddspec.components.objectives.scenarios import Objective
from ddspec.errors import RankFailed, RunError
from ddspec.runtime.distributed import Ranks, start
from ddspec.runtime.loop import Loop
from ddspec.spec.distributed import DistributedSpec


def unit(s: int) -> tuple[float, torch.Tensor]:
    """Scenario s's loss ℓ_s = s + 1/3 and gradient g_s (7 values of mixed magnitude), the same on any rank."""
    g = torch.randn(7, generator=torch.Generator().manual_seed(s)) * 10.0 ** torch.arange(-3, 4)
    return s + 1 / 3, g


def cvar(values: torch.Tensor) -> torch.Tensor:
    """The mean of the worst half (CVaR_0.5)."""
    return values.topk(len(values) // 2).values.mean()


def collectives(ranks: Ranks) -> dict[str, object]:
    """Gathers for both splits, both reductions of a CVaR step over 5 units, and a unit of work failing on rank 1."""
    seen: dict[str, object] = {}
    for split in ("contiguous", "round_robin"):
        ranks.spec = DistributedSpec(split=split)
        mine = torch.tensor([[float(i), -float(i)] for i in ranks.mine(5)])
        seen[f"gather_{split}"] = ranks.gather_units(mine, 5).tolist()
        seen[f"objects_{split}"] = ranks.gather_objects([f"run{i}" for i in ranks.mine(3)], 3)
        for reduction in ("ordered", "all_reduce"):
            ranks.spec = DistributedSpec(split=split, reduction=reduction)
            total, g, _ = ranks.risk_gradient(5, unit, cvar, "a test step")
            seen[f"risk_{split}_{reduction}"] = [total, g.tolist()]

    def fails_on_rank_1() -> int:
        if ranks.rank == 1:
            raise RunError.one("BROKEN", "train", "rank 1 cannot train", "fix rank 1")
        return 7
    try:
        ranks.agree(fails_on_rank_1, "a failing step")
    except RankFailed as err:
        seen["failure"] = ["RankFailed", err.render()]
    except RunError as err:
        seen["failure"] = ["RunError", err.render()]
    return seen


@contextmanager
def sigterm_after(iteration: int) -> Iterator[None]:
    """This process sends itself SIGTERM once an outer loop has recorded ``iteration`` (as ``kill`` would)."""
    record = Loop.record

    def recording(self: Loop, it: int, **values: float) -> None:
        record(self, it, **values)
        if it == iteration:
            os.kill(os.getpid(), signal.SIGTERM)
    Loop.record = recording
    try:
        yield
    finally:
        Loop.record = record


@contextmanager
def failing_in(iteration: int) -> Iterator[None]:
    """This process's scenarios of outer iteration ``iteration`` raise (a fault of one rank)."""
    scenario = Objective.scenario

    def broken(self: Objective, it: int, *args: object) -> object:
        if it == iteration:
            raise RuntimeError("injected fault")
        return scenario(self, it, *args)
    Objective.scenario = broken
    try:
        yield
    finally:
        Objective.scenario = scenario


def main(out: Path, jobs: Path) -> None:
    ranks = start(DistributedSpec(timeout_s=60), "cpu")
    seen = {"rank": ranks.rank, "world": ranks.world, **collectives(ranks)}
    for name, job in json.loads(jobs.read_text()).items():
        stdout, stderr = io.StringIO(), io.StringIO()
        kill, fail = job.get("sigterm"), job.get("fail")
        with redirect_stdout(stdout), redirect_stderr(stderr), \
                (sigterm_after(kill[1]) if kill and kill[0] == ranks.rank else nullcontext()), \
                (failing_in(fail[1]) if fail and fail[0] == ranks.rank else nullcontext()):
            code = ddspec_main(job["args"])
        seen[name] = {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
    ranks.close()
    (out / f"rank{ranks.rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
