"""Scenario-parallel runs under ``torchrun --standalone --nproc_per_node=2`` (gloo, one thread per rank) give what one
process gives: every saved tensor ``torch.equal``, the same metrics; the error cases end with their code, message
and exit code. Each launch costs a few seconds of start-up, so the specs are tiny."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import ddspec
from ddspec.errors import RankFailed, RunError
from ddspec.runtime.artifacts import CHECKPOINT, DISTILLED, METRICS, load_distilled
from ddspec.runtime.distributed import Ranks, start
from ddspec.spec.distributed import DistributedSpec

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(name, None)


def torchrun(*args: str, nproc: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=nproc -m ddspec.cli ARGS`` (or a script when ARGS[0] ends in .py)."""
    target = list(args) if args[0].endswith(".py") else ["-m", "ddspec.cli", *args]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           *target], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


#: digits, one learned soft-labelled point per class, a 16-unit MLP trained K = 3 mini-batched steps with learned
#: inner lrs, 4 scenarios and CVaR_0.5; 3 evaluation seeds (split 2 + 1 across two ranks).
CVAR = {
    "name": "cvar4",
    "data": {"kind": "digits"},
    "synthetic": {"per_class": 1, "learn_labels": True},
    "model": {"kind": "mlp", "hidden": [16]},
    "task": {"kind": "test_error"},
    "train": {"steps": 3, "lr": 0.05, "batch_size": 6, "learn_lr": True},
    "scenarios": {"inits": 4},
    "risk": {"kind": "cvar", "alpha": 0.5},
    "optimize": {"kind": "gradient", "iterations": 3, "real_batch_per_class": 8},
    "evaluate": {"seeds": [0, 1, 2], "epochs": 3, "metrics": ["accuracy"]},
    "runtime": {"device": "cpu", "progress": False, "checkpoint_every": 2, "threads": 1},
}


#: digits, 8 x 8 ConvNet (width 8, depth 2), DSA augmentation; DM on 2 random networks per iteration, 1 image per
#: class; DC with 2 images per class, learned labels, 2 synthetic steps per iteration and 2 network steps between.
MATCHING = {
    "data": {"kind": "digits"},
    "model": {"kind": "convnet", "width": 8, "depth": 2},
    "optimize": {"kind": "gradient", "iterations": 2, "real_batch_per_class": 8},
    "train": {"kind": "gradient", "batch_size": 8},
    "evaluate": {"seeds": [0, 1], "epochs": 2, "metrics": ["accuracy"]},
    "runtime": {"device": "cpu", "progress": False, "threads": 1},
}


#: Laplace on the unit square, 4 data BCs on a 9 x 9 grid and 3 physics BCs per iteration (7 scenarios, 4 + 3 on two
#: ranks) with CVaR_0.5; 48 collocation points; a random-feature inner PINN (32 features).
PDE = {
    "name": "pde",
    "data": {"kind": "pde", "problem": {"kind": "laplace_square", "terms": 3}, "train_bcs": 4, "test_bcs": 4,
             "grid": 9, "points": "box"},
    "synthetic": {"total": 48, "init": "sobol"},
    "model": {"kind": "pinn_mlp", "width": 8, "depth": 2},
    "train": {"kind": "residual", "features": 32, "scale": 0.5, "ridge": 1e-3},
    "task": {"kind": "pde_solution", "physics_bcs": 3, "physics_grid": 5},
    "risk": {"kind": "cvar", "alpha": 0.5},
    "optimize": {"kind": "gradient", "optimizer": "adam", "lr": 0.01, "iterations": 3},
    "evaluate": {"seeds": [0, 1], "optimizer": "adam", "lr": 1e-3, "epochs": 2, "metrics": ["relative_l2"]},
    "runtime": {"device": "cpu", "progress": False, "threads": 1},
}


def specs() -> dict[str, dict]:
    """The specs the ranks run: 4 scenarios with CVaR; 5 scenarios split round robin (3 + 2); zero-order forward
    differences with M = 4 (5 perturbed points, 3 + 2 per rank, for each of 2 scenarios); 1 scenario on 2 ranks;
    nccl on a machine without a GPU; DM and DC with the 10 classes split (5 + 5, and round robin); the predictions
    task, whose teacher rank 0 trains and caches for both ranks; collocation's BCs split (4 + 3), with the
    random-feature and, round robin, the tangent inner PINN."""
    base, runtime = CVAR, CVAR["runtime"]
    return {
        "pde": PDE,
        "pde_tangent": {**PDE, "name": "pde_tangent", "train": {**PDE["train"], "inner": "tangent"},
                        "runtime": {**PDE["runtime"], "distributed": {"split": "round_robin"}}},
        "dm": {**MATCHING, "name": "dm", "synthetic": {"per_class": 1}, "distance": {"kind": "feature_mean"},
               "scenarios": {"inits": 2}},
        "dc": {**MATCHING, "name": "dc", "synthetic": {"per_class": 2, "learn_labels": True},
               "distance": {"kind": "gradient_match"}, "train": {**MATCHING["train"], "steps": 2},
               "optimize": {**MATCHING["optimize"], "outer_loop": 2},
               "runtime": {**MATCHING["runtime"], "distributed": {"split": "round_robin"}}},
        "teacher": {**base, "name": "teacher", "task": {"kind": "predictions", "teacher_epochs": 2},
                    "optimize": {**base["optimize"], "iterations": 2}},
        "cvar4": base,
        "cvar5": {**base, "name": "cvar5", "scenarios": {"inits": 5},
                  "runtime": {**runtime, "distributed": {"split": "round_robin"}}},
        "zo": {**base, "name": "zo", "synthetic": {"per_class": 2}, "train": {"steps": 3, "lr": 0.05},
               "scenarios": {"inits": 2}, "risk": {"kind": "mean"},
               "optimize": {"kind": "zero_order", "iterations": 3, "samples": 4, "estimator": "forward",
                            "real_batch_per_class": 8, "lr": 0.5},
               "evaluate": {"seeds": [0, 1], "epochs": 3, "metrics": ["accuracy"]}},
        "idle": {**base, "name": "idle", "scenarios": {"inits": 1}, "risk": {"kind": "mean"}},
        "nccl": {**base, "name": "nccl", "runtime": {**runtime, "device": "auto", "distributed": {"backend": "nccl"}}},
        "long": {**base, "name": "long", "optimize": {**base["optimize"], "iterations": 12},
                 "evaluate": {**base["evaluate"], "seeds": [0]}},
    }


#: ``ddspec evaluate`` of a one-process run of ``cvar4``, with more seeds than it was evaluated with.
REEVALUATE = ["evaluate.seeds=[0, 1, 2, 3, 4]"]


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> tuple[Path, dict[str, dict], list[dict]]:
    """One torchrun launch of tests/_ranks_worker.py: the collectives, then ``ddspec run`` of every spec of
    :func:`specs` into ``ranks/<name>``, and ``ddspec evaluate`` (:data:`REEVALUATE`) of a copy of a one-process
    run (``evaluated/ranks``; the original is ``evaluated/one``). Returns (folder, specs, what each rank saw)."""
    folder = tmp_path_factory.mktemp("distributed")
    all_specs = specs()
    shutil.copytree(single(all_specs["cvar4"], folder / "evaluated" / "one"), folder / "evaluated" / "ranks")
    jobs = {name: {"args": ["run", str(write(spec, folder)), "--out", str(folder / "ranks" / name)]}
            for name, spec in all_specs.items()}
    long = ["run", str(write(all_specs["long"], folder)), "--out", str(folder / "ranks" / "long")]
    jobs["long"] = {"args": long, "sigterm": [1, 4]}  # rank 1 is killed after iteration 4
    jobs["resumed"] = {"args": [*long, "--resume"]}
    broken = ["run", str(write({**all_specs["cvar4"], "name": "broken"}, folder)), "--out", str(folder / "broken")]
    jobs["broken"] = {"args": broken, "fail": [1, 1]}  # rank 1's scenarios raise in iteration 1
    jobs["evaluate"] = {"args": ["evaluate", str(folder / "evaluated" / "ranks"),
                                 *(arg for o in REEVALUATE for arg in ("--set", o))]}
    (folder / "jobs.json").write_text(json.dumps(jobs))
    done = torchrun(str(ROOT / "tests" / "_ranks_worker.py"), str(folder), str(folder / "jobs.json"))
    assert done.returncode == 0, done.stderr
    return folder, all_specs, [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]


def write(spec: dict, folder: Path) -> Path:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def single(spec: dict, out: Path) -> Path:
    """The run of ``spec`` in this process (one rank)."""
    ddspec.compile(ddspec.load(spec)).run(out)
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """Every distilled tensor torch.equal, and the same values of every figure (accuracy, relL2, ...)."""
    ta, tb = load_distilled(a / DISTILLED), load_distilled(b / DISTILLED)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name
    ma, mb = (json.loads((d / METRICS).read_text()) for d in (a, b))
    figures = {k for k, v in ma.items() if isinstance(v, dict) and "values" in v}
    assert figures and all(ma[k]["values"] == mb[k]["values"] for k in figures)


@pytest.mark.parametrize("name", ["cvar4", "cvar5", "zo", "dm", "dc", "teacher", "pde", "pde_tangent"])
def test_runs_split_across_two_ranks_equal_one_process(launched, name, tmp_path) -> None:
    """cvar4: 4 scenarios with CVaR and 3 evaluation seeds (2 + 1); cvar5: an uneven split, round robin; zo:
    zero-order evaluations split across the ranks; dm, dc: matching's classes split (the DC networks trained on
    both ranks); teacher: rank 0 trains and caches the teacher, both ranks read it; pde, pde_tangent:
    collocation's BCs split. Rank 0 alone prints the figures."""
    folder, all_specs, seen = launched
    assert [s[name]["code"] for s in seen] == [0, 0], seen[0][name]["stderr"] + seen[1][name]["stderr"]
    assert "distill_seconds" in seen[0][name]["stdout"] and seen[1][name]["stdout"] == ""
    assert_same_run(single(all_specs[name], tmp_path / "one"), folder / "ranks" / name)


def test_evaluate_split_across_two_ranks_equals_one_process(launched) -> None:
    """``ddspec evaluate DIR --set evaluate.seeds=[0..4]`` under torchrun (3 + 2 runs): rank 0 prints and writes
    the metrics and spec.yaml, which equal the one-process re-evaluation's."""
    from ddspec.runtime.runner import reevaluate

    folder, _, seen = launched
    assert [s["evaluate"]["code"] for s in seen] == [0, 0], seen[0]["evaluate"]["stderr"] + seen[1]["evaluate"]["stderr"]
    assert "accuracy" in seen[0]["evaluate"]["stdout"] and "(n=5)" in seen[0]["evaluate"]["stdout"]
    assert seen[1]["evaluate"]["stdout"] == ""
    one, ranks = folder / "evaluated" / "one", folder / "evaluated" / "ranks"
    metrics = reevaluate(one, REEVALUATE)
    assert json.loads((ranks / METRICS).read_text())["accuracy"]["values"] == metrics["accuracy"]["values"]
    assert len(metrics["accuracy"]["values"]) == 5
    assert (ranks / "spec.yaml").read_text() == (one / "spec.yaml").read_text()


def test_more_ranks_than_scenarios_is_refused_with_the_idle_count(launched) -> None:
    folder, _, seen = launched
    assert [s["idle"]["code"] for s in seen] == [2, 2]  # a spec error on every rank: exit 2
    assert "[DISTRIBUTED_IDLE_RANKS] runtime.distributed: 2 ranks share 1 scenarios: 1 rank(s) would be idle" \
        in seen[0]["idle"]["stderr"]
    assert "fix: launch with torchrun --nproc_per_node=1 (or fewer)" in seen[0]["idle"]["stderr"]
    assert seen[1]["idle"]["stderr"] == ""  # rank 0 alone prints a spec error
    assert not (folder / "ranks" / "idle").exists()


def test_nccl_without_a_gpu_is_a_spec_error(launched) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _, all_specs, seen = launched
    assert [s["nccl"]["code"] for s in seen] == [2, 2]
    assert "[NCCL_NEEDS_CUDA] runtime.distributed.backend: nccl communicates CUDA tensors, but torch sees no GPU" \
        in seen[0]["nccl"]["stderr"]
    spec = all_specs["nccl"]
    with pytest.raises(ddspec.errors.WellPosednessError, match="NCCL_NEEDS_CUDA"):  # device: cpu is caught at validate
        ddspec.compile(ddspec.load({**spec, "runtime": {**spec["runtime"], "device": "cpu"}}))


def test_ranks_gather_in_unit_order_and_report_a_failing_rank(launched) -> None:
    """Hand-made units (tests/_ranks_worker.py): gathers in unit order for both splits; ``ordered`` equals the
    one-process step exactly, ``all_reduce`` to 1e-6 relative; a rank that fails inside ``agree`` raises its own
    error, and rank 0 raises RANK_FAILED quoting it."""
    from tests._ranks_worker import cvar as cvar_risk
    from tests._ranks_worker import unit

    total, g, losses = Ranks().risk_gradient(5, unit, cvar_risk, "reference")
    assert losses.tolist() == [s + 1 / 3 for s in range(5)]
    _, _, seen = launched
    for r, s in enumerate(seen):
        assert s["rank"] == r and s["world"] == 2
        for split in ("contiguous", "round_robin"):
            assert s[f"gather_{split}"] == [[float(i), -float(i)] for i in range(5)]
            assert s[f"objects_{split}"] == ["run0", "run1", "run2"]
            assert s[f"risk_{split}_ordered"] == [total, g.tolist()]
            t, reduced = s[f"risk_{split}_all_reduce"]
            assert t == total and torch.allclose(torch.tensor(reduced), g, rtol=1e-6, atol=0)
    assert seen[1]["failure"][0] == "RunError" and "[BROKEN]" in seen[1]["failure"][1]
    assert seen[0]["failure"][0] == RankFailed.__name__
    message = seen[0]["failure"][1]
    assert "[RANK_FAILED]" in message and "rank 1 of 2 failed during a failing step" in message
    assert "rank 1 cannot train" in message and "fix: fix rank 1" in message


def test_a_rank_killed_then_resumed_equals_an_uninterrupted_run(launched, tmp_path) -> None:
    """Rank 1 gets SIGTERM after iteration 4: both ranks stop after iteration 5 (the stop request is agreed), rank 0
    writes the checkpoint, both exit 1 with INTERRUPTED; ``--resume`` on both ranks finishes the run, which equals
    an uninterrupted one-process run."""
    folder, all_specs, seen = launched
    assert [s["long"]["code"] for s in seen] == [1, 1]
    assert "[INTERRUPTED] <spec>: interrupted after iteration 5 of 12" in seen[0]["long"]["stderr"]
    assert [s["resumed"]["code"] for s in seen] == [0, 0], seen[0]["resumed"]["stderr"] + seen[1]["resumed"]["stderr"]
    assert_same_run(single(all_specs["long"], tmp_path / "one"), folder / "ranks" / "long")


def test_a_failure_on_one_rank_ends_the_run_with_its_error_on_rank_0(launched) -> None:
    """Rank 1's scenarios raise in iteration 1: rank 1 reports its own error, rank 0 RANK_FAILED quoting it; both
    exit 1, and the folder holds no distilled data, metrics or checkpoint (checkpoint_every 2 is not reached)."""
    folder, _, seen = launched
    assert [s["broken"]["code"] for s in seen] == [1, 1]
    assert "[rank 1] " in seen[1]["broken"]["stderr"] and "RuntimeError: injected fault" in seen[1]["broken"]["stderr"]
    rank0 = seen[0]["broken"]["stderr"]
    assert "[RANK_FAILED] runtime.distributed: rank 1 of 2 failed during a bilevel step: [INTERNAL] <spec>: " \
           "RuntimeError: injected fault" in rank0
    assert sorted(p.name for p in (folder / "broken").iterdir()) == ["plan.json", "spec.yaml"]


@pytest.mark.slow
def test_killed_then_resumed_under_torchrun_equals_an_uninterrupted_run(tmp_path) -> None:
    """``torchrun ... -m ddspec.cli run`` stopped by SIGTERM (torchrun forwards it to both ranks, which stop after
    the same iteration; rank 0 writes the checkpoint), then the same command with --resume."""
    spec = {**CVAR, "name": "long", "optimize": {**CVAR["optimize"], "iterations": 150},
            "evaluate": {**CVAR["evaluate"], "seeds": [0]}}
    path, out = write(spec, tmp_path), tmp_path / "ranks"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddspec.cli",
              "run", str(path), "--out", str(out)]
    proc = subprocess.Popen(launch, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not (out / CHECKPOINT).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "[INTERRUPTED]" in err, err
    assert (out / CHECKPOINT).exists() and not (out / DISTILLED).exists()
    resumed = torchrun("run", str(path), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(single(spec, tmp_path / "one"), out)


def test_a_rank_that_cannot_reach_the_rendezvous_fails_within_the_timeout(monkeypatch) -> None:
    """Rank 1 of 2 alone, pointed at a port nobody listens on: DISTRIBUTED_RENDEZVOUS after timeout_s."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    begin = time.monotonic()
    with pytest.raises(RunError) as err:
        start(DistributedSpec(timeout_s=1), "cpu")
    assert time.monotonic() - begin < 30
    assert f"[DISTRIBUTED_RENDEZVOUS] runtime.distributed: rank 1 of 2 could not join the others at 127.0.0.1:{port} " \
           "within 1 s" in err.value.render()
    assert "fix: start every rank with the same torchrun command" in err.value.render()


@pytest.mark.parametrize("inner", ["random_features", "tangent"])
def test_collocation_step_is_the_gradient_of_the_risk_over_its_bcs(inner: str, tmp_path: Path) -> None:
    """The split step's decomposition: each BC's d_s differentiated in the inner PINN's fitted coefficients, combined
    by the CVaR weights and sent through the closed-form fit once, equals autograd's gradient of R_ω(d_1..d_S) with
    respect to the points, taken directly (float64)."""
    from ddspec.backends.collocation import run as collocation
    from ddspec.components.pde.inner import fit_inner
    from ddspec.runtime.context import RunContext

    plan = ddspec.compile(ddspec.load({**PDE, "train": {**PDE["train"], "inner": inner}}))
    ctx = RunContext.start(plan.problem, plan.analysis, tmp_path)
    points, objective, risk = collocation.setup(ctx)
    draws = ctx.generator.get_state()
    values = collocation.step(ctx, points, objective, risk)
    ctx.generator.set_state(draws)
    fitted, physics = fit_inner(ctx, points.x), objective.draw_physics(ctx.generator)
    losses = torch.stack([objective.loss(fitted, s, physics) for s in range(objective.count)])
    total = risk.over_scenarios(losses)
    (direct,) = torch.autograd.grad(total, points.z)
    assert points.z.dtype == torch.float64 and objective.count == 7
    assert values["loss"] == pytest.approx(float(total.detach()), rel=1e-12)
    assert values["data_rel_l2"] == pytest.approx(float(losses[:4].detach().mean()), rel=1e-12)
    torch.testing.assert_close(points.z.grad, direct, rtol=1e-9, atol=1e-12)


def test_shares_split_every_unit_once() -> None:
    for split in ("contiguous", "round_robin"):
        spec = DistributedSpec(split=split)
        for count in range(0, 9):
            for world in range(1, 5):
                shares = spec.shares(count, world)
                assert sorted(i for s in shares for i in s) == list(range(count))
                assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert DistributedSpec().shares(5, 2) == [[0, 1, 2], [3, 4]]
    assert DistributedSpec(split="round_robin").shares(5, 2) == [[0, 2, 4], [1, 3]]


def test_explain_shows_the_ranks_and_the_split() -> None:
    plan = ddspec.compile(ddspec.load(CVAR))
    assert "ranks       1 process (under torchrun --nproc_per_node=N the 4 scenarios are split" in plan.explain()
    plan.ranks = 3
    text = plan.explain()
    assert "ranks       3 ranks (contiguous, reduction ordered, backend auto)" in text
    for line in ("rank 0: scenarios 0-1", "rank 1: scenarios 2", "rank 2: scenarios 3",
                 "evaluation: 3 (model, seed) runs, 1, 1, 1 per rank"):
        assert line in text
    plan.ranks = 5
    assert "[DISTRIBUTED_IDLE_RANKS]" in plan.explain()
    plan = ddspec.compile(ddspec.load(specs()["dc"]))
    plan.ranks = 2
    assert "rank 0: classes 0, 2, 4, 6, 8" in plan.explain() and "rank 1: classes 1, 3, 5, 7, 9" in plan.explain()
