"""The checkpointed loop: periodic checkpoints, bit-exact resume, interrupts, divergence."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch

from ddspec.components.training.optimizers import lr_scheduler
from ddspec.errors import DivergenceError, RunError
from ddspec.runtime.loop import Loop


def make_state() -> dict:
    x = torch.zeros(3, requires_grad=True)
    return {"x": x, "opt": torch.optim.Adam([x], lr=0.1), "gen": torch.Generator().manual_seed(1)}


def step(state: dict) -> float:
    """One noisy optimisation step drawing from the generator and the global RNG."""
    x, opt, gen = state["x"], state["opt"], state["gen"]
    target = torch.randn(3, generator=gen) + torch.randn(3)
    loss = ((x - target) ** 2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def run(path, total: int, stop_at: int | None = None, resume: bool = False) -> tuple[dict, Loop]:
    torch.manual_seed(0)
    state = make_state()
    loop = Loop(path, total, every=3, state=state, show=False, resume=resume)
    for it in loop:
        loop.record(it, loss=step(state))
        if stop_at is not None and it + 1 == stop_at:
            break
    return state, loop


def test_resume_is_bit_exact(tmp_path) -> None:
    straight, loop = run(tmp_path / "a.pt", 10)
    assert [r["iteration"] for r in loop.history] == list(range(10))
    ckpt = tmp_path / "b.pt"
    run(ckpt, 10, stop_at=7)  # a kill after iteration 7: the last checkpoint is at 6
    assert torch.load(ckpt, weights_only=True)["iteration"] == 6
    resumed, loop2 = run(ckpt, 10, resume=True)
    assert loop2.start == 6
    assert torch.equal(resumed["x"], straight["x"])
    assert [r["loss"] for r in loop2.history] == [r["loss"] for r in loop.history]


def test_interrupt_finishes_the_iteration_and_saves(tmp_path) -> None:
    state = make_state()
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    loop = Loop(tmp_path / "c.pt", 100, every=50, state=state, show=False)
    with pytest.raises(RunError) as info:
        for it in loop:
            loop.record(it, loss=step(state))
            if it == 4:
                os.kill(os.getpid(), signal.SIGINT)
    assert info.value.findings[0].code == "INTERRUPTED" and "--resume" in info.value.findings[0].fix
    assert torch.load(tmp_path / "c.pt", weights_only=True)["iteration"] == 5
    assert signal.getsignal(signal.SIGINT) is before


def test_nan_loss_stops_with_the_iteration(tmp_path) -> None:
    loop = Loop(tmp_path / "d.pt", 10, every=5, state={}, show=False, fix="lower optimize.lr (now 1.0)")
    with pytest.raises(DivergenceError) as info:
        for it in loop:
            loop.record(it, loss=float("nan") if it == 3 else 1.0)
    (finding,) = info.value.findings
    assert "iteration 3" in finding.message and "optimize.lr" in finding.fix


def test_check_finite_names_the_tensor(tmp_path) -> None:
    loop = Loop(tmp_path / "e.pt", 1, every=1, state={}, show=False)
    with pytest.raises(DivergenceError, match="`x` holds NaN/inf after iteration 0"):
        loop.check_finite(0, x=torch.tensor([1.0, float("inf")]))


def scheduled_run(path, stop_at: int | None = None, resume: bool = False) -> tuple[dict, list[float]]:
    """8 iterations of :func:`step` under a cosine schedule; returns the state and the lr each iteration saw."""
    torch.manual_seed(0)
    state, seen = make_state(), []
    scheduler = lr_scheduler(state["opt"], "cosine", 8)
    loop = Loop(path, 8, every=3, state={**state, "lr_schedule": scheduler}, show=False, resume=resume,
                after_each=scheduler.step)
    for it in loop:
        seen.append(state["opt"].param_groups[0]["lr"])
        loop.record(it, loss=step(state))
        if stop_at is not None and it + 1 == stop_at:
            break
    return state, seen


def test_cosine_schedule_sets_each_lr_and_survives_resume(tmp_path) -> None:
    """lr_t = 0.1 · ½(1 + cos(πt/8)); a run killed after iteration 5 resumes at 3 with the same lrs and result."""
    straight, lrs = scheduled_run(tmp_path / "a.pt")
    assert lrs == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)])
    assert lrs[0] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.05)
    scheduled_run(tmp_path / "b.pt", stop_at=5)
    resumed, lrs2 = scheduled_run(tmp_path / "b.pt", resume=True)
    assert lrs2 == pytest.approx(lrs[3:])
    assert torch.equal(resumed["x"], straight["x"])


def test_constant_schedule_leaves_the_lr() -> None:
    opt = make_state()["opt"]
    scheduler = lr_scheduler(opt, "constant", 8)
    for _ in range(5):
        opt.step()
        scheduler.step()
    assert opt.param_groups[0]["lr"] == 0.1
