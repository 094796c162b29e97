"""The model pool (warm-started scenarios): its bookkeeping by hand, warm starts that continue training
exactly, spec rules, and a bilevel run with a pool that is deterministic and resumes bit-for-bit."""

from __future__ import annotations

import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ddspec
from ddspec.backends.bilevel import run as bilevel_run
from ddspec.components.training.model_pool import ModelPool, pool_slots
from ddspec.components.training.unroll import InnerData, InnerRecipe, unroll, unrolled_hypergradient
from ddspec.errors import RunError, WellPosednessError


def linear_pool(size: int, max_steps: int) -> ModelPool:
    torch.manual_seed(0)
    return ModelPool(lambda m: nn.Linear(3, 2), size, max_steps)


def test_lifetimes_are_staggered_and_models_reinitialise_at_their_lifetime() -> None:
    pool = linear_pool(4, 10)
    assert pool.lifetimes.tolist() == [3, 5, 8, 10]  # ⌈(m+1)·10/4⌉
    assert pool_slots(0, 3, 4) == [0, 1, 2] and pool_slots(1, 3, 4) == [3, 0, 1]
    trained = [torch.full_like(p, 7.0) for p in pool.params[1]]
    pool.record(1, lambda params: sum(p.sum() for p in params))(trained)
    pool.advance(4)  # model 1: age 4 < 5, keeps θ_K
    assert pool.ages.tolist() == [0, 4, 0, 0]
    assert all(torch.equal(p, t) for p, t in zip(pool.params[1], trained))
    pool.record(1, lambda params: params[0].sum())(trained)
    pool.advance(4)  # age 8 >= 5: a fresh initialisation, and from now on lifetime 10
    assert pool.ages.tolist() == [0, 0, 0, 0] and pool.lifetimes.tolist() == [3, 10, 8, 10]
    assert not torch.equal(pool.params[1][0], trained[0])


def test_state_dict_round_trip() -> None:
    pool = linear_pool(2, 6)
    pool.record(0, lambda params: params[0].sum())([p + 1 for p in pool.params[0]])
    pool.advance(2)
    copy = linear_pool(2, 6)
    copy.load_state_dict(pool.state_dict())
    assert copy.ages.tolist() == [2, 0] and copy.lifetimes.tolist() == pool.lifetimes.tolist()
    assert all(torch.equal(a, b) for a, b in zip(copy.params[0], pool.params[0]))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_warm_start_continues_the_training_run(momentum) -> None:
    """Plain SGD: K steps from θ^m after an earlier use of K steps = 2K steps from the initialisation. With
    momentum the buffers restart at zero, so the two differ (each use is a fresh optimizer)."""
    torch.manual_seed(1)
    x, y = torch.randn(6, 3, requires_grad=True), torch.tensor([0, 1, 0, 1, 0, 1])
    pool = linear_pool(1, 100)
    model, theta0 = pool.start(0)
    steps = 4
    recipe = InnerRecipe("sgd", momentum, 0.0, steps)
    xr, yr = torch.randn(10, 3), torch.randint(0, 2, (10,))

    def outer(params):
        return F.cross_entropy(torch.func.functional_call(model, dict(zip(["weight", "bias"], params)), (xr,)), yr)

    straight = unroll(model, InnerData(x, y, torch.full((2 * steps,), 0.1), [None] * 2 * steps, F.cross_entropy),
                      InnerRecipe("sgd", momentum, 0.0, 2 * steps), params0=theta0)
    data = InnerData(x, y, torch.full((steps,), 0.1), [None] * steps, F.cross_entropy)
    for _ in range(2):
        model, theta = pool.start(0)
        assert all(torch.equal(p, t) for p, t in zip(model.parameters(), theta))  # the module holds θ^m
        unrolled_hypergradient(model, data, recipe, pool.record(0, outer), params0=theta)
        pool.advance(steps)
    same = all(torch.allclose(a, b, atol=1e-6) for a, b in zip(pool.params[0], straight))
    assert same == (momentum == 0.0)
    assert pool.ages.tolist() == [2 * steps]


@pytest.fixture
def pool_spec(bilevel_spec) -> dict:
    """bilevel_spec (K = 3) with 6 iterations and a pool of 3 models living 7 steps, 2 used per iteration."""
    return {**bilevel_spec, "scenarios": {"inits": 2, "pool": {"size": 3, "max_steps": 7}},
            "optimize": {**bilevel_spec["optimize"], "iterations": 6}}


def run(spec: dict, out, resume: bool = False):
    return ddspec.compile(ddspec.load(spec)).run(out, resume=resume)


def test_pool_run_is_deterministic_and_resumes_bit_for_bit(pool_spec, tmp_path, monkeypatch) -> None:
    straight = run(pool_spec, tmp_path / "a")
    again = run(pool_spec, tmp_path / "b")
    assert torch.equal(straight.x, again.x)
    fresh = dict(pool_spec, scenarios={"inits": 2})
    assert not torch.equal(straight.x, run(fresh, tmp_path / "fresh").x)  # the pool changes the scenarios
    assert "pool of 3 models" in ddspec.compile(ddspec.load(pool_spec)).explain()

    advance, calls = bilevel_run.Objective.advance, []

    def advance_then_sigterm(self) -> None:
        advance(self)
        calls.append(1)
        if len(calls) == 4:  # SIGTERM inside iteration 3: it finishes, the checkpoint holds 4 iterations
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(bilevel_run.Objective, "advance", advance_then_sigterm)
    with pytest.raises(RunError) as err:
        run(pool_spec, tmp_path / "killed")
    assert err.value.findings[0].code == "INTERRUPTED"
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["state"]["pool"]["ages"].sum() > 0
    monkeypatch.setattr(bilevel_run.Objective, "advance", advance)
    resumed = run(pool_spec, tmp_path / "killed", resume=True)
    assert torch.equal(resumed.x, straight.x) and torch.equal(resumed.y, straight.y)


@pytest.mark.parametrize(("overrides", "code", "path"), [
    ({"scenarios": {"inits": 4, "pool": {"size": 3, "max_steps": 7}}}, "POOL_TOO_SMALL", "scenarios.pool.size"),
    ({"scenarios": {"pool": {"size": 3, "max_steps": 3}}}, "POOL_LIFETIME_TOO_SHORT", "scenarios.pool.max_steps"),
    ({"task": None, "distance": {"kind": "feature_mean"}}, "POOL_UNUSED", "scenarios.pool"),
])
def test_ill_posed_pools_are_refused_with_a_fix(pool_spec, overrides, code, path) -> None:
    spec = {**pool_spec, **overrides}
    with pytest.raises(WellPosednessError) as err:
        ddspec.compile(ddspec.load({k: v for k, v in spec.items() if v is not None}))
    finding = next(f for f in err.value.findings if f.code == code)
    assert finding.path == path and finding.fix
