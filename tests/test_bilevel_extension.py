"""The extension example of docs/backends/bilevel.md, run as written: a task and a hypergradient registered from
outside the package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import ddspec
from ddspec.components.training.unroll import InnerData, InnerRecipe, unrolled_hypergradient
from ddspec.registry import BACKENDS, DATA, HYPERGRADIENTS, TASKS
from ddspec.runtime.context import RunContext

DOC = Path(__file__).resolve().parents[1] / "docs" / "backends" / "bilevel.md"


@pytest.fixture
def registered():
    """The namespace of the doc's python blocks, executed in order; the kinds are removed afterwards."""
    section = DOC.read_text().split("## Adding a task or a hypergradient", 1)[1].split("\n## ", 1)[0]
    namespace: dict = {}
    for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL):
        exec(compile(block, str(DOC), "exec", dont_inherit=True), namespace)  # noqa: S102 - the documented example itself
    yield namespace
    TASKS.unregister("brier")
    HYPERGRADIENTS.unregister("last_step")


def test_the_documented_task_is_the_brier_score_and_runs_through_bilevel(registered, bilevel_spec, tmp_path) -> None:
    outputs, y = torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1])
    losses = registered["Brier"](2).per_sample(torch.zeros(2, 3), y)(outputs)
    p = 1 / (1 + torch.exp(torch.tensor(-2.0)))  # softmax of (2, 0), class 0
    assert losses.tolist() == pytest.approx([0.5, float(p**2 + p**2)])

    plan = ddspec.compile(ddspec.load({**bilevel_spec, "task": {"kind": "brier"}}))
    assert plan.backend == "bilevel" and "task `brier`" in plan.reason
    torch.manual_seed(0)
    ctx = RunContext(plan.problem, plan.analysis, DATA.build(plan.problem.data), torch.device("cpu"), tmp_path,
                     generator=torch.Generator().manual_seed(0))
    distilled = BACKENDS["bilevel"].run(ctx)
    assert distilled.x.shape == (20, 1, 8, 8) and all(0 < row["loss"] < 2 for row in ctx.loops[0].history)


@pytest.mark.usefixtures("float64")
def test_the_documented_hypergradient_is_the_one_step_truncation(registered) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3, requires_grad=True)
    data = InnerData(x, torch.tensor([0, 1, 0, 1, 1]), torch.full((4,), 0.1), [None] * 4,
                     torch.nn.functional.cross_entropy)
    recipe = InnerRecipe("sgd", 0.5, 0.0, 4)
    names = [n for n, _ in net.named_parameters()]
    xr, yr = torch.randn(8, 3), torch.randint(0, 2, (8,))

    def outer(params):
        return torch.nn.functional.cross_entropy(torch.func.functional_call(net, dict(zip(names, params)), (xr,)), yr)

    spec = registered["LastStepHypergradient"]()
    loss, grads = HYPERGRADIENTS.build(spec, recipe)(net, data, outer, None)
    expected = unrolled_hypergradient(net, data, recipe, outer, track_from=3)
    assert loss == expected[0] and torch.equal(grads[0], expected[1][0])
    assert spec.tracked_steps(4)[0] == 1 and HYPERGRADIENTS.has(spec, "unrolls")
