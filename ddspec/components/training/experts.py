"""Models trained on the real data once per run and cached in the run directory: the teacher of the
``predictions`` task and the expert trajectories of ``trajectory`` matching (:class:`ExpertTrajectories`, what
the distance's builder returns: each scenario starts a student at an expert checkpoint).

Each is trained from its own seed inside ``torch.random.fork_rng``, so the run's global RNG is left
as it was; the cache (safetensors, written atomically) records the seconds its training took, so a
resumed run reports the same preparation time without retraining. Every process reads the models from the cache
(:func:`_cached`): under torchrun rank 0 alone trains and writes it while the others wait, so every rank holds the
same bits and no two processes write one file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ddspec.components.training.fit import fit
from ddspec.components.training.regularizers import build_regularizers
from ddspec.io import atomic_write_bytes

TEACHER = "teacher.safetensors"
EXPERTS = "experts.safetensors"
#: Offset between the run seed and the seeds of teachers / experts (expert e uses seed + OFFSET + e).
SEED_OFFSET = 1000


@dataclass(frozen=True)
class Recipe:
    """A plain training recipe for :func:`~ddspec.components.training.fit.fit`."""

    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    optimizer: str = "sgd"
    lr_drop_at_half: bool = False


def _save(path: Path, tensors: dict[str, torch.Tensor], seconds: float) -> None:
    from safetensors.torch import save

    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(data, metadata={"seconds": repr(seconds)}))


def _load(path: Path, device: torch.device) -> tuple[dict[str, torch.Tensor], float]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        tensors = {k: f.get_tensor(k).to(device) for k in f.keys()}  # noqa: SIM118  (safe_open has no __iter__)
        seconds = float((f.metadata() or {}).get("seconds", "0"))
    return tensors, seconds


def _cached(ctx: Any, path: Path, train: Callable[[], tuple[dict[str, torch.Tensor], float]]
            ) -> tuple[dict[str, torch.Tensor], float]:
    """(the tensors cached at ``path``, the seconds training them took): when the file is missing, rank 0 (the
    only process without torchrun) runs ``train()`` — inside ``fork_rng``, so the global RNG stays where every rank
    has it — and writes it; once every rank has agreed that this succeeded, each one reads it."""
    def write() -> None:
        if ctx.ranks.writer and not path.exists():
            with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
                tensors, seconds = train()
            _save(path, tensors, seconds)
    ctx.ranks.agree(write, f"training {path.name} (rank 0; raise runtime.distributed.timeout_s if it takes longer)")
    return _load(path, ctx.device)


def teacher(ctx: Any) -> tuple[nn.Module, float]:
    """(the teacher of ``task: predictions``, seconds its training took): the problem's model trained on the
    real training data with the task's recipe (lr × 0.1 at half) and the targets' loss (with ``train.regularizers``:
    the squeeze step of GUARD), cached as :data:`TEACHER`."""
    task = ctx.problem.task
    model = ctx.new_model_seeded(ctx.problem.runtime.seed + SEED_OFFSET)

    def train() -> tuple[dict[str, torch.Tensor], float]:
        recipe = Recipe(task.teacher_epochs, task.teacher_lr, task.teacher_momentum, task.teacher_weight_decay,
                        task.teacher_batch_size, lr_drop_at_half=True)
        start = time.perf_counter()
        order = torch.Generator().manual_seed(ctx.problem.runtime.seed + SEED_OFFSET)
        fit(model, ctx.data.x_train, ctx.data.y_train, recipe, order, loss=ctx.data.targets.loss,
            regularizers=build_regularizers(ctx.problem.train, ctx.data))
        return model.state_dict(), time.perf_counter() - start

    state, seconds = _cached(ctx, ctx.out / TEACHER, train)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False), seconds


def expert_trajectories(ctx: Any) -> tuple[list[list[list[torch.Tensor]]], float]:
    """(θ*[e][t] — parameter lists of expert e after t = 0..E epochs —, seconds of training): experts of the
    problem's model trained on the real data with the ``trajectory`` distance's recipe and the targets' loss
    (cross-entropy for classes, squared error for real-valued targets) with ``train.regularizers``, cached as
    :data:`EXPERTS`."""
    d = ctx.problem.distance
    names = [n for n, _ in ctx.new_model_seeded(0).named_parameters()]

    def train() -> tuple[dict[str, torch.Tensor], float]:
        recipe = Recipe(d.expert_epochs, d.expert_lr, d.expert_momentum, 0.0, d.expert_batch_size)
        regularizers = build_regularizers(ctx.problem.train, ctx.data)
        start = time.perf_counter()
        trajectories = []
        for e in range(d.experts):
            seed = ctx.problem.runtime.seed + SEED_OFFSET + e
            model = ctx.new_model_seeded(seed)
            snapshots = [[p.detach().clone() for p in model.parameters()]]
            fit(model, ctx.data.x_train, ctx.data.y_train, recipe, torch.Generator().manual_seed(seed),
                on_epoch=lambda _, m, out=snapshots: out.append([p.detach().clone() for p in m.parameters()]),
                loss=ctx.data.targets.loss, regularizers=regularizers)
            trajectories.append(snapshots)
        flat = {f"{e}.{t}.{n}": p for e, traj in enumerate(trajectories) for t, ps in enumerate(traj)
                for n, p in zip(names, ps)}
        return flat, time.perf_counter() - start

    flat, seconds = _cached(ctx, ctx.out / EXPERTS, train)
    return [[[flat[f"{e}.{t}.{n}"] for n in names] for t in range(d.expert_epochs + 1)]
            for e in range(d.experts)], seconds


Tensors = list[torch.Tensor]


def trajectory_loss(start: Tensors, target: Tensors) -> Callable[[Tensors], torch.Tensor]:
    """ℓ(θ) = ‖θ − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖² (sums over all parameter tensors)."""
    norm = sum(((s - t) ** 2).sum() for s, t in zip(start, target))
    return lambda params: sum(((p - t) ** 2).sum() for p, t in zip(params, target)) / norm


@dataclass(frozen=True)
class ExpertTrajectories:
    """Distance ``trajectory`` built: θ*[e][t], expert e's parameters after epoch t, and the seconds training them
    took (as the cache recorded them, when loaded)."""

    spec: Any
    trajectories: list[list[Tensors]]
    prepare_seconds: float

    def draw(self, generator: torch.Generator) -> tuple[Callable[[Tensors], torch.Tensor], Tensors]:
        """(ℓ, θ*_t) of one scenario: expert e uniform, start epoch t uniform in [0, min(max_start_epoch,
        expert_epochs − M)], ℓ = :func:`trajectory_loss` towards θ*_{t+M}."""
        d = self.spec
        e = int(torch.randint(len(self.trajectories), (), generator=generator))
        t = int(torch.randint(min(d.max_start_epoch, d.expert_epochs - d.expert_span) + 1, (), generator=generator))
        start, target = self.trajectories[e][t], self.trajectories[e][t + d.expert_span]
        return trajectory_loss(start, target), start


def trajectory(spec: Any, ctx: Any) -> ExpertTrajectories:
    """The builder of distance ``trajectory``: the experts of :func:`expert_trajectories` (trained or loaded)."""
    trajectories, seconds = expert_trajectories(ctx)
    return ExpertTrajectories(spec, trajectories, seconds)
