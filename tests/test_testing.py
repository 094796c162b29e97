"""ddspec.testing: each check passes on a correct kind or spec and catches a planted defect — a distance whose
hand-written gradient is off by a factor 2, MMD's gradient doubled behind its held bandwidth, a zero-order estimate
doubled, a wrong gradient where the objective is flat, an objective that ignores the learned tensors, a kind that
draws from NumPy's global RNG, a kind without a docstring or with a capability it does not honour (a builder that
raises, a distance that is constant, a metric or a risk that is not finite, data whose targets do not match its
inputs), an ill-posed spec, a metric that writes NaN; shrinking keeps every example's backend; the pytest plugin
collects a folder of good and bad specs; and a user project checks its plugin kind and specs exactly as
docs/testing.md shows."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import yaml

import ddspec
from ddspec.backends.base import Backend, NoOuterGradient, OuterGradient
from ddspec.registry import DATA, DISTANCES, METRICS, MODELS, RISKS
from ddspec.spec.base import SpecModel
from ddspec.spec.data import DataBase, DataInfo
from ddspec.spec.distance import MatchingDistance
from ddspec.spec.evaluate import MetricSpec
from ddspec.spec.model import ModelBase
from ddspec.testing import (
    ArtifactContractBroken,
    HypergradientMismatch,
    KindCheckFailed,
    NotApplicable,
    NotDeterministic,
    NotWellPosed,
    ShrinkFailed,
    assert_well_posed,
    check_artifacts,
    check_determinism,
    check_hypergradient,
    check_kind,
    check_resume,
    run_smoke,
    shrink,
)
from ddspec.testing.gradients import check_outer_gradient
from tests.conftest import ROOT


# -- test-only kinds ---------------------------------------------------------------------------------
def mean_gap(factor: float = 1.0) -> Any:
    """½‖mean φ(real) − mean φ(syn)‖² with a hand-written backward, ``factor`` times the true gradient."""
    import torch

    class MeanGap(torch.autograd.Function):
        @staticmethod
        def forward(context: Any, real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
            gap = syn.flatten(1).mean(0) - real.flatten(1).mean(0)
            context.save_for_backward(gap)
            context.rows = syn.shape
            return 0.5 * (gap**2).sum()

        @staticmethod
        def backward(context: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
            (gap,) = context.saved_tensors
            n = context.rows[0]
            return None, (factor * grad * gap / n).expand(n, -1).reshape(context.rows)

    return MeanGap.apply


class GapDistance(MatchingDistance):
    """½‖mean φ(R_c) − mean φ(S_c)‖² with a hand-written gradient (test-only kind)."""

    kind: Literal["test_gap"] = "test_gap"
    approximates: ClassVar[str] = "test_error after training on D̂: equal class-wise embedding means"


class DoubledGapDistance(GapDistance):
    """The same, its backward twice the true gradient (test-only kind: the planted defect)."""

    kind: Literal["test_doubled_gap"] = "test_doubled_gap"  # type: ignore[assignment]


class NoisyGapDistance(GapDistance):
    """The same on embeddings jittered by NumPy's global RNG (test-only kind: the planted defect)."""

    kind: Literal["test_noisy_gap"] = "test_noisy_gap"  # type: ignore[assignment]


def build_noisy_gap(spec: Any, ctx: Any) -> Any:
    import numpy as np
    import torch

    gap = mean_gap()
    return lambda real, syn: gap(real, syn + float(np.random.normal()) * torch.ones_like(syn))


class UndocumentedGap(GapDistance):
    kind: Literal["test_undocumented"] = "test_undocumented"  # type: ignore[assignment]


UndocumentedGap.__doc__ = None


class DetachedMLPSpec(ModelBase):
    """A linear model whose outputs are detached from the graph (test-only kind: declares `differentiable`)."""

    kind: Literal["test_detached"] = "test_detached"

    def cost(self, shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
        d = math.prod(shape)
        return (d + 1) * num_classes, 2 * d * num_classes, d + num_classes


def build_detached(spec: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
    from torch import nn

    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(math.prod(input_shape), num_classes)

        def forward(self, x: Any) -> Any:
            return self.linear(x.flatten(1)).detach()

    return Detached()


class NaNMetric(MetricSpec):
    """Always NaN (test-only kind: the planted defect)."""

    kind: Literal["test_nan"] = "test_nan"


def build_nan(spec: Any) -> Any:
    from ddspec.evaluate.metrics import Metric

    class NaN(Metric):
        def __call__(self, outputs: Any, data: Any) -> float:
            return float("nan")

    return NaN(spec)


class ConstantGapDistance(GapDistance):
    """A distance that ignores the synthetic data: 0·Σ S (test-only kind: the planted defect)."""

    kind: Literal["test_constant_gap"] = "test_constant_gap"  # type: ignore[assignment]


class RaisingGapDistance(GapDistance):
    """A distance whose builder raises (test-only kind: the planted defect)."""

    kind: Literal["test_raising_gap"] = "test_raising_gap"  # type: ignore[assignment]


def build_raising(spec: Any, ctx: Any) -> Any:
    raise RuntimeError("the builder is broken")


class HalfRisk(SpecModel):
    """Half the mean scenario loss, computed off the graph (test-only kind: the planted defect)."""

    kind: Literal["test_half"] = "test_half"


def build_half(spec: Any) -> Any:
    from ddspec.components.objectives.risks import ScenarioRisk

    return ScenarioRisk(lambda losses: 0.5 * losses.detach().mean())


class ShortTargetsData(DataBase):
    """Random data whose test targets are one short of its test inputs (test-only kind: the planted defect)."""

    kind: Literal["test_short_targets"] = "test_short_targets"

    def describe(self) -> DataInfo:
        return DataInfo("short", (4,), 2, (10, 10), 20)


def build_short(spec: Any) -> Any:
    import torch

    from ddspec.components.data.base import Dataset

    gen = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(20, 4, generator=gen), torch.randn(20, 4, generator=gen)
    return Dataset("short", x_train, torch.arange(20) % 2, x_test, torch.arange(19) % 2, 2)


@pytest.fixture
def kinds() -> Iterator[None]:
    """The test-only kinds, registered through the public API and removed afterwards."""
    surrogate = ("surrogate", "embedding")
    ddspec.register("distance", GapDistance, builder=lambda spec, ctx: mean_gap(), capabilities=surrogate)
    ddspec.register("distance", DoubledGapDistance, builder=lambda spec, ctx: mean_gap(2.0), capabilities=surrogate)
    ddspec.register("distance", NoisyGapDistance, builder=build_noisy_gap, capabilities=surrogate)
    ddspec.register("distance", UndocumentedGap, builder=lambda spec, ctx: mean_gap(), capabilities=surrogate)
    ddspec.register("distance", ConstantGapDistance, builder=lambda spec, ctx: lambda real, syn: (0 * syn).sum(),
                    capabilities=surrogate)
    ddspec.register("distance", RaisingGapDistance, builder=build_raising, capabilities=surrogate)
    ddspec.register("model", DetachedMLPSpec, builder=build_detached, capabilities=("differentiable",))
    ddspec.register("metric", NaNMetric, builder=build_nan, capabilities=("targets:classes",))
    ddspec.register("risk", HalfRisk, builder=build_half)
    ddspec.register("data", ShortTargetsData, builder=build_short)
    try:
        yield
    finally:
        for kind in ("test_gap", "test_doubled_gap", "test_noisy_gap", "test_undocumented", "test_constant_gap",
                     "test_raising_gap"):
            DISTANCES.unregister(kind)
        MODELS.unregister("test_detached")
        METRICS.unregister("test_nan")
        RISKS.unregister("test_half")
        DATA.unregister("test_short_targets")


def wine(**sections: Any) -> dict[str, Any]:
    """A matching problem on wine (13 features, 3 classes) small enough to run in a second."""
    spec: dict[str, Any] = {
        "name": "wine", "data": {"kind": "tabular", "name": "wine"}, "synthetic": {"per_class": 2},
        "model": {"kind": "mlp", "hidden": [8]}, "distance": {"kind": "test_gap"},
        "optimize": {"kind": "gradient", "iterations": 20, "real_batch_per_class": 16},
        "evaluate": {"seeds": [0, 1], "epochs": 30, "metrics": ["accuracy"]},
        "runtime": {"progress": False},
    }
    spec.update(sections)
    return spec


# -- assert_well_posed and shrink -----------------------------------------------------------------
def test_assert_well_posed_reports_codes_paths_and_fixes(kinds: None) -> None:
    plan = assert_well_posed(wine())
    assert plan.backend == "matching"  # the note SURROGATE_OBJECTIVE is not counted unless expected
    assert assert_well_posed(wine(), expect=["SURROGATE_OBJECTIVE"]).backend == "matching"
    bad = wine(synthetic={"per_class": 500})
    with pytest.raises(NotWellPosed) as err:
        assert_well_posed(bad)
    assert err.value.codes == ["CLASS_TOO_SMALL", "SYNTHETIC_NOT_SMALLER"]
    assert "[CLASS_TOO_SMALL] synthetic.per_class:" in str(err.value) and "fix: use at most" in str(err.value)
    assert isinstance(err.value, AssertionError)
    assert assert_well_posed(bad, expect=["CLASS_TOO_SMALL", "SYNTHETIC_NOT_SMALLER"]) is None
    with pytest.raises(NotWellPosed, match=r"expected \['CLASS_TOO_SMALL'\], found"):
        assert_well_posed(bad, expect=["CLASS_TOO_SMALL"])
    typo = wine(model={"kind": "mlp", "widht": 3})
    assert assert_well_posed(typo, expect=["UNKNOWN_KEY"]) is None


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_shrink_keeps_the_backend_and_cuts_the_budgets(path: Path) -> None:
    small = shrink(path)
    assert ddspec.compile(small).backend == ddspec.compile(ddspec.load(path)).backend
    assert len(small.evaluate.seeds) == 1 and small.evaluate.epochs <= 2 and not small.runtime.progress
    assert (small.optimize.outer_iterations() or 0) <= 2
    assert (getattr(small.train, "steps", None) or 0) <= 2
    full = ddspec.load(path)
    kinds = [[None if s is None else s.kind for s in (p.data, p.model, p.train, p.optimize)] for p in (small, full)]
    assert small.synthetic == full.synthetic and kinds[0] == kinds[1]  # the same problem, at smoke size


def test_shrink_refuses_budgets_that_change_the_problem(monkeypatch) -> None:
    from ddspec.spec.scenarios import ModelPoolSpec, ScenariosSpec
    from ddspec.testing.shrink import same_problem

    krr = ROOT / "examples" / "digits_krr.yaml"
    monkeypatch.setattr(ScenariosSpec, "smoke", {"pool": ModelPoolSpec(size=2, max_steps=10)})  # a pool: not one scenario
    with pytest.raises(ShrinkFailed, match=r"at smoke size is not well posed.*BACKEND_CANNOT_LOWER|scenarios.pool"):
        shrink(krr)
    monkeypatch.undo()
    herding = ddspec.load(ROOT / "examples" / "digits_herding.yaml")
    with pytest.raises(ShrinkFailed, match="compiles to backend `coreset`.*the original to `matching`"):
        same_problem("x", ddspec.compile(ddspec.load(ROOT / "examples" / "digits_dm.yaml")), herding, "changed")


def test_shrink_caps_a_list_of_shrunk_sections_and_unrolled_keeps_its_budgets(kinds: None, monkeypatch) -> None:
    from ddspec.spec.evaluate import EvaluateSpec
    from ddspec.spec.optimize import UnrolledHypergradient

    attack = {"kind": "adversarial", "steps": 40, "samples": 500}
    monkeypatch.setattr(EvaluateSpec, "smoke", {**EvaluateSpec.smoke, "metrics": 1})
    small = ddspec.load(wine(evaluate={"metrics": [attack, "accuracy"]})).shrunk()
    (metric,) = small.evaluate.metrics
    assert (metric.kind, metric.steps, metric.samples) == ("adversarial", 2, 20)  # capped, and shrunk itself
    monkeypatch.setattr(UnrolledHypergradient, "smoke", {"normalize": False})
    unrolled = UnrolledHypergradient(truncate=5, checkpoint_every=3, normalize=True).shrunk()
    assert (unrolled.truncate, unrolled.checkpoint_every, unrolled.normalize) == (1, 1, False)


# -- run_smoke and the artifact contract ----------------------------------------------------------
def test_run_smoke_checks_the_artifact_contract(kinds: None, tmp_path: Path) -> None:
    from ddspec.runtime import artifacts as art

    result = run_smoke(wine(), tmp_path / "run")
    assert result.metrics["seeds"] == [0] and 0 <= result.metrics["accuracy"]["mean"] <= 1
    assert len(art.read_json(tmp_path / "run" / art.HISTORY)["rows"]) == 2  # shrunk: 2 iterations
    tensors = art.load_distilled(tmp_path / "run" / art.DISTILLED)
    tensors["x"][1, 3] = float("nan")
    art.save_distilled(tmp_path / "run" / art.DISTILLED, tensors["x"], tensors["y"])
    (tmp_path / "run" / art.CHECKPOINT).write_bytes(b"")
    with pytest.raises(ArtifactContractBroken) as err:
        check_artifacts(tmp_path / "run")
    assert err.value.problems == ["checkpoint.pt was left behind (a finished run deletes it)"]
    (tmp_path / "run" / art.CHECKPOINT).unlink()
    with pytest.raises(ArtifactContractBroken, match=r"distilled tensor `x` holds 1 non-finite value"):
        check_artifacts(tmp_path / "run")


def test_run_smoke_fails_on_a_metric_that_writes_nan(kinds: None, tmp_path: Path) -> None:
    spec = wine(evaluate={"seeds": [0], "metrics": ["accuracy", "test_nan"]})
    with pytest.raises(ArtifactContractBroken, match=r"`test_nan` holds a non-finite value"):
        run_smoke(spec, tmp_path / "run")


# -- check_hypergradient --------------------------------------------------------------------------
def test_check_hypergradient_catches_a_gradient_off_by_a_factor_two(kinds: None) -> None:
    report = check_hypergradient(wine(), coordinates=16, directions=2)
    assert report.backend == "matching" and report.relative_error < 1e-6 and report.dim == 3 * 13
    with pytest.raises(HypergradientMismatch) as err:
        check_hypergradient(wine(distance={"kind": "test_doubled_gap"}), coordinates=16, directions=2)
    assert err.value.relative_error == pytest.approx(0.5, abs=1e-4)  # ‖2g − g‖ / ‖2g‖
    assert re.search(r"relative error 0\.5 > rtol 0\.0001 .* worst .*gradient", str(err.value))


def test_the_failure_text_of_docs_testing_is_the_real_message(kinds: None) -> None:
    """docs/testing.md shows the failure of the worked example's planted defect: its text is the real message."""
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    shown = re.search(r"^    (HypergradientMismatch: .*?)(?=\n\n)", text, flags=re.MULTILINE | re.DOTALL).group(1)
    shown = " ".join(shown.split())
    with pytest.raises(HypergradientMismatch) as err:
        check_hypergradient(wine(distance={"kind": "test_doubled_gap"}))
    real = f"HypergradientMismatch: {err.value}".replace("spec `wine`", "spec specs/wine_mean_gap.yaml")
    prefix = shown.removesuffix("...").rstrip()
    assert shown.endswith("...") and " ".join(real.split()).startswith(prefix), (shown, real)


def test_check_hypergradient_on_bilevel_zero_order_and_where_it_does_not_apply() -> None:
    bilevel = {"name": "bilevel", "data": {"kind": "tabular", "name": "wine"}, "synthetic": {"per_class": 1,
               "learn_labels": True}, "model": {"kind": "mlp", "hidden": [8]}, "task": {"kind": "test_error"},
               "train": {"steps": 3, "lr": 0.05, "learn_lr": True}, "optimize": {"kind": "gradient"}}
    report = check_hypergradient(bilevel, coordinates=16, directions=2)
    assert report.backend == "bilevel" and report.relative_error < 1e-4 and report.dim == 3 * 13 + 3 * 3 + 2
    with pytest.raises(NotApplicable, match="steps along no outer gradient"):
        check_hypergradient(ROOT / "examples" / "digits_herding.yaml")
    with pytest.raises(NotApplicable, match="trained body θ_K is held constant"):
        check_hypergradient(ROOT / "examples" / "digits_bilevel_ridge_head.yaml")


ZERO_ORDER = {"name": "zero-order", "data": {"kind": "tabular", "name": "wine"}, "synthetic": {"per_class": 1},
              "model": {"kind": "mlp", "hidden": [8]}, "task": {"kind": "test_error"},
              "train": {"steps": 2, "lr": 0.05}, "optimize": {"kind": "zero_order"}}


def test_check_hypergradient_on_zero_order_catches_an_estimate_off_by_two(monkeypatch) -> None:
    from ddspec.components import zero_order

    report = check_hypergradient(ZERO_ORDER)
    assert report.stochastic and report.samples >= 4096 and report.coordinates == report.dim == 39
    assert report.relative_error < report.rtol == pytest.approx(5 * math.sqrt(2 / report.samples))
    with pytest.raises(ValueError, match=r"samples = 64 .* tolerance 5√\(2/M\) = 0\.88.* samples >= 800"):
        check_hypergradient(ZERO_ORDER, samples=64)
    estimate = zero_order.estimate
    monkeypatch.setattr(zero_order, "estimate", lambda *a, **k: (2 * estimate(*a, **k)[0], estimate(*a, **k)[1]))
    with pytest.raises(HypergradientMismatch, match=r"the zero-order estimate \(M = \d+ directions\)") as err:
        check_hypergradient(ZERO_ORDER)
    assert err.value.relative_error == pytest.approx(0.5, abs=0.1)


def quadratic(wrong: float = 0.0, kink: bool = False) -> OuterGradient:
    """L(w) = Σ a_i w_i² + bᵀw (+ |w_0| with ``kink``) at w = 0: a gradient b that is zero at w[1], w[2], w[4],
    w[5]; ``wrong`` is added to the gradient at w[2], where the objective is flat."""
    import torch

    a = torch.arange(1.0, 7.0, dtype=torch.float64)
    b = torch.tensor([1.0, 0.0, 0.0, 2.0, 0.0, 0.0], dtype=torch.float64)

    def objective(t: dict[str, torch.Tensor]) -> float:
        w = t["w"]
        return float((a * w**2).sum() + b @ w + (w[0].abs() if kink else 0.0))

    def gradient(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        g = 2 * a * t["w"] + b
        g[2] += wrong
        return {"w": g}

    return OuterGradient({"w": torch.zeros(6, dtype=torch.float64)}, objective, gradient)


def test_a_wrong_gradient_where_the_objective_is_flat_fails_and_kinks_are_named() -> None:
    report = check_outer_gradient(quadratic(), coordinates=6, directions=2)
    assert report.relative_error < 1e-6 and report.skipped == 0 and report.coordinates == 6
    with pytest.raises(HypergradientMismatch, match=r"worst coordinate w\[2\]: gradient 0\.3, finite difference 0"):
        check_outer_gradient(quadratic(wrong=0.3), coordinates=6, directions=0)
    report = check_outer_gradient(quadratic(kink=True), coordinates=6, directions=0)
    assert report.skipped_at == ("w[0]", "the gradient's own direction") and report.coordinates == 5  # |w_0| bends
    with pytest.raises(HypergradientMismatch, match=r"skipped where not differentiable: w\[0\]"):
        check_outer_gradient(quadratic(wrong=0.3, kink=True), coordinates=6, directions=0)


def test_an_objective_that_ignores_the_learned_tensors_fails(kinds: None) -> None:
    import torch

    flat = OuterGradient({"w": torch.ones(3, dtype=torch.float64)}, lambda t: 1.0, lambda t: {"w": 0 * t["w"]})
    with pytest.raises(HypergradientMismatch, match="the objective does not depend on the learned tensors"):
        check_outer_gradient(flat)
    with pytest.raises(HypergradientMismatch, match="does not depend on the learned tensors.*at all 16 coordinates"):
        check_hypergradient(wine(distance={"kind": "test_constant_gap"}), coordinates=16, directions=1)


def test_mmd_is_checked_with_its_median_bandwidth_held(monkeypatch) -> None:
    """MMD's gradient holds its median bandwidth constant: it is checked against the objective with the bandwidth
    held (the approximation it states), and a backward pass doubled behind it is caught."""
    from ddspec.components.objectives import distances

    mmd = ROOT / "examples" / "mnist1d_mmd.yaml"
    report = check_hypergradient(mmd, coordinates=8, directions=1)
    assert report.relative_error < 1e-6 and report.approximation.startswith("the median bandwidth is held")
    assert report.approximation_error > 1e-3  # the bandwidth moves with D̂: against the true objective, it differs
    rbf = distances.rbf_mmd2
    monkeypatch.setattr(distances, "rbf_mmd2", lambda x, y, s: rbf(x, y, s) + rbf(x, y, s) - rbf(x, y.detach(), s))
    with pytest.raises(HypergradientMismatch, match=r"as the backend states it \(the median bandwidth is held.*relative "
                       r"error 0\.5"):
        check_hypergradient(mmd, coordinates=8, directions=1)


#: One example per gradient backend (bilevel, convex, KIP, DC, DM), each on few coordinates (seconds in all);
#: zero-order and MMD are checked above.
ONE_PER_BACKEND = ["diabetes_bilevel", "breast_cancer_convex_l1", "digits_kip", "mnist1d_dc", "mnist1d_dm"]


@pytest.mark.parametrize("name", ONE_PER_BACKEND)
def test_check_hypergradient_on_one_example_per_gradient_backend(name: str) -> None:
    report = check_hypergradient(ROOT / "examples" / f"{name}.yaml", coordinates=6, directions=1)
    assert report.relative_error <= report.rtol and report.coordinates + report.skipped == 6


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_check_hypergradient_on_every_example(path: Path) -> None:
    try:
        report = check_hypergradient(path)
    except NotApplicable as err:
        pytest.skip(str(err))
    assert report.relative_error <= report.rtol


def test_a_backend_without_an_outer_gradient_module_has_none() -> None:
    with pytest.raises(NoOuterGradient, match=f"has no module {__name__}.run"):
        type("Plugin", (Backend,), {"name": "plugin", "__module__": __name__})().outer_gradient(None)


# -- check_determinism and check_resume -----------------------------------------------------------
def test_check_determinism_catches_a_kind_that_reads_the_global_rng(kinds: None) -> None:
    check_determinism(wine(runtime={"device": "cuda", "progress": False}))  # runs on the CPU whatever the spec says
    with pytest.raises(NotDeterministic, match=r"tensor `x`: \d+ of 78 entries differ.*numpy\.random"):
        check_determinism(wine(distance={"kind": "test_noisy_gap"}))


def test_check_resume_equals_an_uninterrupted_run(kinds: None) -> None:
    result = check_resume(wine())
    assert result.metrics["seeds"] == [0]
    with pytest.raises(NotApplicable, match="without a checkpointed loop"):
        check_resume(ROOT / "examples" / "digits_krr.yaml")
    with pytest.raises(NotApplicable, match="1 outer iteration at smoke size"):
        check_resume(wine(optimize={"kind": "gradient", "iterations": 1, "real_batch_per_class": 16}))


# -- check_kind -----------------------------------------------------------------------------------
def test_check_kind_catches_a_missing_docstring_and_a_capability_not_honoured(kinds: None) -> None:
    check_kind(GapDistance)
    check_kind(GapDistance, "distance", checks=["docstring"])
    with pytest.raises(KindCheckFailed) as err:
        check_kind(UndocumentedGap)
    assert [c for c, _ in err.value.failures] == ["docstring"]
    assert "has no docstring of its own" in str(err.value)
    with pytest.raises(KindCheckFailed) as err:
        check_kind(DetachedMLPSpec)
    assert err.value.failures == [("capabilities", "capability `differentiable`, but its outputs carry no gradient")]
    with pytest.raises(KindCheckFailed, match="is not registered on any axis"):
        check_kind(MatchingDistance)


@pytest.mark.parametrize(("kind_class", "found"), [
    ("RaisingGapDistance", "embedding distance: RuntimeError: the builder is broken"),
    ("ConstantGapDistance", ("the gradient of d(real embeddings (8 x 6), synthetic embeddings (4 x 6)) with respect "
                             "to the synthetic side is zero")),
    ("NaNMetric", "on random classes outputs its value (or a nested figure) is not finite: [nan]"),
    ("HalfRisk", "over_scenarios carries no gradient to the scenario losses (the backends take it as their weights)"),
    ("ShortTargetsData", "test targets: 19, not 20 (one per test input)"),
])
def test_check_kind_runs_what_the_builder_builds(kinds: None, kind_class: str, found: str) -> None:
    with pytest.raises(KindCheckFailed) as err:
        check_kind(globals()[kind_class])
    assert err.value.failures == [("capabilities", found)]


def test_check_kind_fails_without_a_reference_section(kinds: None, monkeypatch) -> None:
    from ddspec.testing import kinds as kind_checks

    monkeypatch.setitem(kind_checks.SECTION, "distance", "distances")
    with pytest.raises(KindCheckFailed, match=r"reference: the generated reference has no section `## distances`"):
        check_kind(GapDistance, checks=["reference"])


# -- the pytest plugin ----------------------------------------------------------------------------
GOOD = {"name": "good", "data": {"kind": "tabular", "name": "wine"}, "synthetic": {"per_class": 2},
        "model": {"kind": "mlp", "hidden": [8]}, "distance": {"kind": "feature_mean"},
        "optimize": {"kind": "gradient", "iterations": 50}, "evaluate": {"seeds": [0, 1, 2], "epochs": 50}}


def _pytest(cwd: Path, *args: str, autoload: bool = True, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **variables}
    env.pop("PYTEST_ADDOPTS", None)
    if not autoload:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_pytest_plugin_collects_every_spec_and_reports_the_bad_ones(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "good.yaml").write_text(yaml.safe_dump(GOOD), encoding="utf-8")
    (specs / "ill_posed.yaml").write_text(yaml.safe_dump({**GOOD, "synthetic": {"per_class": 500}}), encoding="utf-8")
    (specs / "typo.yml").write_text(yaml.safe_dump({**GOOD, "model": {"kind": "mlp", "widht": 3}}), encoding="utf-8")
    (specs / "notes.txt").write_text("not a spec", encoding="utf-8")
    (tmp_path / "test_fixture.py").write_text(
        "def test_run_dir(ddspec_run_dir):\n    assert ddspec_run_dir.name == 'run' and ddspec_run_dir.parent.is_dir()\n",
        encoding="utf-8")
    temp = tmp_path / "temp"
    temp.mkdir()
    out = _pytest(tmp_path, "-v", "--ddspec-specs", "specs", "-p", "ddspec.testing.pytest_plugin", autoload=False,
                  TMPDIR=str(temp))
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert not list(temp.glob("ddspec-*"))  # the spec items' run folders are deleted
    assert re.search(r"specs/good\.yaml::good PASSED", text) and re.search(r"test_fixture\.py::test_run_dir PASSED", text)
    assert "specs/ill_posed.yaml::ill_posed FAILED" in text and "specs/typo.yml::typo FAILED" in text
    assert "[SYNTHETIC_NOT_SMALLER] synthetic:" in text and "[CLASS_TOO_SMALL] synthetic.per_class:" in text
    assert "[UNKNOWN_KEY] model.widht: unknown key `widht`" in text and "fix: allowed keys here" in text
    assert "2 failed, 2 passed" in text and "Traceback" not in text
    without = _pytest(tmp_path, "-q", "test_fixture.py", "-p", "ddspec.testing.pytest_plugin", autoload=False)
    assert "1 passed" in without.stdout, without.stdout + without.stderr  # opt-in: no spec items without the option


def test_a_user_project_checks_its_plugin_kind_and_specs(tmp_path: Path) -> None:
    """The worked example of docs/testing.md, file by file, run as a user's CI runs it."""
    assert any(e.value == "ddspec.testing.pytest_plugin" for e in entry_points(group="pytest11")), \
        "the pytest11 entry point is missing: reinstall ddspec (pip install -e .)"
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    files = re.findall(r"^\*\*`([^`]+)`\*\*\n\n```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert [name for name, _ in files] == ["my_kinds.py", "specs/wine_mean_gap.yaml", "conftest.py",
                                           "tests/test_my_kinds.py"]
    for name, body in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body, encoding="utf-8")
    out = _pytest(tmp_path, "-q", "--ddspec-specs", "specs/")
    assert out.returncode == 0 and "3 passed" in out.stdout, out.stdout + out.stderr
