"""The matching backend: verdicts, resolved defaults, the objectives' math, determinism and resume."""

from __future__ import annotations

import dataclasses
import itertools
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import ddspec
from ddspec.analysis.facts import analyse
from ddspec.backends.base import Distilled
from ddspec.backends.matching import MatchingBackend
from ddspec.backends.matching.run import Matcher, class_gradient_distance
from ddspec.components.synthetic.set import label_scale
from ddspec.errors import BackendUnavailableError, DivergenceError, RunError, SpecError
from ddspec.registry import DATA, DISTANCES, RISKS
from ddspec.runtime.context import RunContext
from ddspec.spec.distance import dc_schedule

BACKEND = MatchingBackend()


pytestmark = pytest.mark.usefixtures("one_thread")


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, recursively for nested sections of the same ``kind``."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        same = isinstance(value, dict) and isinstance(old, dict) and value.get("kind", old.get("kind")) == old.get("kind")
        out[key] = merge(old, value) if same else value
    return out


def spec(distance: str | None = "feature_mean", **sections: Any) -> dict[str, Any]:
    """A tiny digits problem: ConvNet width 8 depth 2, 2 images per class, 4 iterations."""
    base: dict[str, Any] = {
        "data": {"kind": "digits"},
        "model": {"kind": "convnet", "width": 8, "depth": 2},
        "synthetic": {"per_class": 2},
        "optimize": {"kind": "gradient", "iterations": 4, "real_batch_per_class": 16},
        "train": {"kind": "gradient", "batch_size": 8},
        "runtime": {"progress": False, "checkpoint_every": 2},
    }
    if distance is not None:
        base["distance"] = {"kind": distance}
    return merge(base, sections)


def analyse_spec(raw: dict[str, Any]) -> Any:
    return analyse(ddspec.load(raw))


def context(raw: dict[str, Any], out: Path, resume: bool = False) -> RunContext:
    """Compile ``raw`` and seed as a run does: torch's global RNG and the generator from runtime.seed."""
    plan = ddspec.compile(ddspec.load(raw))
    p = plan.problem
    torch.manual_seed(p.runtime.seed)
    generator = torch.Generator().manual_seed(p.runtime.seed)
    return RunContext(p, plan.analysis, DATA.build(p.data), torch.device("cpu"), out, resume, generator)


def distill(raw: dict[str, Any], out: Path) -> tuple[Distilled, RunContext]:
    ctx = context(raw, out)
    return BACKEND.run(ctx), ctx


def assert_same(a: Distilled, b: Distilled) -> None:
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    torch.testing.assert_close(a.y, b.y, rtol=0, atol=0)


# -- verdicts and defaults ------------------------------------------------------------------------
def test_module_is_light_at_import() -> None:
    code = "import sys, ddspec.backends.matching, ddspec.backends.coreset; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_can_lower_accepts_surrogates() -> None:
    for distance in ("feature_mean", "mmd", "gradient_match"):
        ok, why = BACKEND.can_lower(analyse_spec(spec(distance)))
        assert ok and distance in why


@pytest.mark.parametrize(("fact", "reason"), [
    ("distance:surrogate", "the distance `feature_mean` is not a matching surrogate"),
    ("model:differentiable", "the model `convnet` is not a differentiable model"),
    ("train:differentiable", "the train `gradient` is not differentiable training"),
    ("optimize:gradient", "the optimize `gradient` is not a gradient optimizer"),
])
def test_can_lower_names_the_failing_condition(fact: str, reason: str) -> None:
    analysis = analyse_spec(spec())
    ok, why = BACKEND.can_lower(dataclasses.replace(analysis, facts=analysis.facts - {fact}))
    assert not ok and why.startswith(reason)


def test_can_lower_declines_selection_and_missing_distance() -> None:
    ok, why = BACKEND.can_lower(analyse_spec(spec(None, optimize={"kind": "select"})))
    assert not ok
    assert why == ("the optimize `select` is not a gradient optimizer (matching needs optimize.kind: gradient); "
                   "no distance is declared")


def test_algorithm_and_risk_are_chosen_by_capability() -> None:
    """Without `embedding` (or `needs_network_training`) a surrogate has no loop here; without `expectation` (or
    `groups`) the risk is refused; the built-in kinds declare them."""
    assert {"surrogate", "embedding"} <= DISTANCES["mmd"].capabilities
    assert "needs_network_training" in DISTANCES["gradient_match"].capabilities
    assert "expectation" in RISKS["mean"].capabilities and "groups" in RISKS["group_cvar"].capabilities
    analysis = analyse_spec(spec())
    ok, why = BACKEND.can_lower(dataclasses.replace(analysis, facts=analysis.facts - {"distance:embedding"}))
    assert not ok and why.startswith("the surrogate `feature_mean` compares neither embeddings")
    ok, why = BACKEND.can_lower(dataclasses.replace(analysis, facts=analysis.facts - {"risk:expectation"}))
    assert not ok and why.startswith("the risk `mean` is not supported")


#: Regression data (442 rows, one real target) with a linear model.
DIABETES = {"data": {"kind": "tabular", "name": "diabetes"}, "model": {"kind": "linear"}, "synthetic": {"per_class": 4}}


def test_real_valued_targets_are_refused_naming_the_regression_backends() -> None:
    """Matching compares classes: real targets are refused with the reason, and the compiler names a backend that
    can take the problem (bilevel, for the test error)."""
    with pytest.raises(BackendUnavailableError) as err:
        ddspec.compile(ddspec.load({**DIABETES, "distance": {"kind": "feature_mean"}, "backend": "matching"}))
    assert err.value.findings[0].message == (
        "backend `matching` cannot run this spec: the data's targets are not classes (real targets (1 per row)), and "
        "matching compares the real and synthetic data class by class (for regression use bilevel, krr or convex)"
    )
    with pytest.raises(BackendUnavailableError) as err:
        ddspec.compile(ddspec.load({**DIABETES, "task": {"kind": "test_error"}, "backend": "matching"}))
    assert "the data's targets are not classes (real targets" in err.value.findings[0].message
    assert err.value.findings[0].fix == "backends that can: bilevel; or set backend: auto"


def test_dc_schedule() -> None:
    assert dc_schedule(1) == (1, 1) and dc_schedule(10) == (10, 50) and dc_schedule(50) == (50, 10)
    assert dc_schedule(20) == (20, 25) and dc_schedule(25) == (25, 22)
    assert dc_schedule(5) == (5, round(1 + 49 * 4 / 9))
    assert dc_schedule(0.5) == (1, 1) and dc_schedule(200) == (50, 10)


def test_resolve_and_compile_defaults() -> None:
    gm = ddspec.compile(ddspec.load(spec("gradient_match", synthetic={"per_class": 10})))
    assert gm.defaults["optimize.lr"] == 0.1
    assert (gm.problem.optimize.outer_loop, gm.problem.train.steps) == (10, 50)
    assert gm.problem.optimize.augmentation.enabled is True
    dm = ddspec.compile(ddspec.load(spec("mmd", optimize={"lr": 0.5})))
    assert "optimize.lr" not in dm.defaults and dm.problem.optimize.lr == 0.5
    assert (dm.problem.optimize.outer_loop, dm.problem.train.steps) == (1, 1)
    table = ddspec.compile(ddspec.load(spec(data={"kind": "tabular", "name": "wine"}, model={"kind": "linear"})))
    assert table.problem.optimize.lr == 1.0 and table.problem.optimize.augmentation.enabled is False


def test_estimate() -> None:
    gm = ddspec.compile(ddspec.load(spec("gradient_match"))).estimate
    dm = ddspec.compile(ddspec.load(spec("feature_mean"))).estimate
    assert gm.seconds > dm.seconds > 0
    assert dm.memory_bytes > 4 * 1797 * 64 and "4 iterations" in dm.detail


# -- the objectives --------------------------------------------------------------------------------
def test_dm_step_shrinks_the_mean_gap_analytically(tmp_path: Path) -> None:
    """Linear model: φ(x) = x, so L = Σ_c ‖μ_c − mean S_c‖² and one SGD step (lr η, m per class)
    multiplies each gap by (1 − 2η/m): L_t = (1 − 2η/m)^(2t) L_0."""
    raw = spec(data={"kind": "tabular", "name": "wine"}, model={"kind": "linear"},
               optimize={"lr": 0.25, "momentum": 0.0, "real_batch_per_class": 1000})
    _, ctx = distill(raw, tmp_path)
    losses = torch.tensor([row["loss"] for row in ctx.loops[0].history])
    torch.testing.assert_close(losses[1:] / losses[:-1], torch.full((3,), 0.75**2), rtol=1e-4, atol=0)


def test_cosine_lr_schedule_shrinks_the_gap_by_each_steps_lr(tmp_path: Path) -> None:
    """The same linear case under optimize.lr_schedule cosine: step t has η_t = η·½(1 + cos(πt/T)), so
    L_{t+1}/L_t = (1 − 2η_t/m)² with m = 2, T = 4."""
    raw = spec(data={"kind": "tabular", "name": "wine"}, model={"kind": "linear"},
               optimize={"lr": 0.25, "momentum": 0.0, "real_batch_per_class": 1000, "lr_schedule": "cosine"})
    _, ctx = distill(raw, tmp_path)
    losses = torch.tensor([row["loss"] for row in ctx.loops[0].history])
    eta = [0.25 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(3)]
    torch.testing.assert_close(losses[1:] / losses[:-1], torch.tensor([(1 - e) ** 2 for e in eta]), rtol=1e-4, atol=0)


@pytest.mark.parametrize("distance", ["feature_mean", "mmd"])
def test_distribution_matching_lowers_its_objective(distance: str, tmp_path: Path) -> None:
    raw = spec(distance, data={"kind": "tabular", "name": "wine"}, model={"kind": "linear"},
               optimize={"lr": 0.05, "iterations": 6, "real_batch_per_class": 1000})
    _, ctx = distill(raw, tmp_path)
    losses = [row["loss"] for row in ctx.loops[0].history]
    assert all(b < a for a, b in itertools.pairwise(losses))


def test_gradient_match_of_the_real_batch_itself_is_zero(tmp_path: Path) -> None:
    """Synthetic class = the whole real class (the real batch, reordered) under the same augmentation
    draw: equal gradients, distance ≈ 0; under different draws it is clearly positive."""
    ctx = context(spec("gradient_match", optimize={
        "real_batch_per_class": 1000, "augmentation": {"ops": ["crop", "scale", "rotate"]},
    }), tmp_path)
    data, c = ctx.data, 3
    rows = data.strata()[c]
    x, y = data.x_train[rows], data.y_train[rows]
    net = ctx.new_model()
    assert class_gradient_distance(Matcher.starting_at(ctx, x, y), net, c).item() < 1e-3

    class Unpaired(Matcher):
        def aug(self, x: torch.Tensor, seed: int) -> torch.Tensor:
            return super().aug(x, seed + int(x.requires_grad))

    assert class_gradient_distance(Unpaired.starting_at(ctx, x, y), net, c).item() > 0.05


def test_synthetic_steps_are_taken_in_standardized_units(tmp_path: Path) -> None:
    """x = μ + σ·z per channel: z of the real data has mean 0 and std 1, and x round-trips."""
    ctx = context(spec(), tmp_path)
    s = Matcher.starting_at(ctx, ctx.data.x_train, ctx.data.y_train).synthetic
    torch.testing.assert_close(s.z.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.z.std(unbiased=False), torch.tensor(1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.x, ctx.data.x_train, atol=1e-5, rtol=0)


def test_learned_labels_are_probabilities_with_a_gradient(tmp_path: Path) -> None:
    raw = spec("gradient_match", synthetic={"per_class": 2, "learn_labels": True}, optimize={"iterations": 1})
    ctx = context(raw, tmp_path)
    m = Matcher.create(ctx)
    logits = m.synthetic.learned
    assert torch.softmax(logits, 1).max(1).values.sub(0.9).abs().max() < 1e-6
    assert label_scale(10) == pytest.approx(torch.log(torch.tensor(81.0)).item())
    class_gradient_distance(m, ctx.new_model(), 4).backward()
    assert logits.grad is not None and logits.grad[m.synthetic.slices[4]].abs().sum() > 0
    out, _ = distill(raw, tmp_path / "run")
    assert out.y.dtype == torch.float32 and out.y.shape == (20, 10)
    torch.testing.assert_close(out.y.sum(1), torch.ones(20))
    assert not torch.allclose(out.y, torch.softmax(logits.detach(), 1))


# -- runs: determinism, resume, divergence ---------------------------------------------------------
RUNS = {
    "dm": spec("feature_mean", scenarios={"inits": 2}),
    "gm": spec("gradient_match", synthetic={"per_class": 2, "learn_labels": True}, optimize={"optimizer": "adam", "lr": 0.01}),
    "mmd-1d": spec("mmd", data={"kind": "mnist1d"}, model={"kind": "convnet1d", "width": 8, "depth": 2}),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_same_seed_same_tensors_and_resume_continues_bit_for_bit(
    name: str, tmp_path: Path, interrupt_after,
) -> None:
    straight, _ = distill(RUNS[name], tmp_path / "a")
    assert_same(straight, distill(RUNS[name], tmp_path / "b")[0])
    assert not torch.equal(straight.x, distill(merge(RUNS[name], {"runtime": {"seed": 1}}), tmp_path / "c")[0].x)

    disarm = interrupt_after(1)
    with pytest.raises(RunError, match="INTERRUPTED"):
        distill(RUNS[name], tmp_path / "d")
    disarm()
    resumed = context(RUNS[name], tmp_path / "d", resume=True)
    out = BACKEND.run(resumed)
    assert resumed.loops[0].start == 2
    assert_same(straight, out)


def test_divergence_names_the_learning_rate(tmp_path: Path) -> None:
    ctx = context(spec(), tmp_path)
    bad = ctx.data.x_train.clone()
    bad[ctx.data.y_train == 0] = float("nan")
    ctx.data = dataclasses.replace(ctx.data, x_train=bad)
    with pytest.raises(DivergenceError) as err:
        BACKEND.run(ctx)
    assert "optimize.lr (now 1)" in err.value.findings[0].fix


def test_augmentation_on_flat_inputs_is_an_error(tmp_path: Path) -> None:
    raw = spec(data={"kind": "tabular", "name": "wine"}, model={"kind": "linear"},
               optimize={"augmentation": {"enabled": True}})
    with pytest.raises(SpecError, match="AUGMENT_UNSUPPORTED"):
        distill(raw, tmp_path)
