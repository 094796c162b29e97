"""Extending ddspec from outside the package: kinds registered at run time, plugin packages found through the
``ddspec.plugins`` entry points, and the backend named in a spec checked against the registered ones."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pytest
import yaml

import ddspec
from ddspec.cli import main
from ddspec.errors import SpecError
from ddspec.registry import DATA, MODELS, RISKS, register_backend, unregister_backend
from ddspec.spec.base import PositiveInt, SpecModel
from ddspec.spec.data import DataBase, DataInfo
from ddspec.spec.model import ModelBase
from ddspec.spec.problem import problem_model
from ddspec.spec.task import TaskBase

if TYPE_CHECKING:
    from ddspec.components.data.base import Dataset
    from ddspec.components.models.networks import Classifier

ROOT = Path(__file__).resolve().parents[1]

#: Three 2-D Gaussian blobs (centres below, σ = 0.3): 20 train and 10 test points per class.
CENTRES = ((0.0, 0.0), (3.0, 0.0), (0.0, 3.0))
PER_CLASS = (20, 10)


class BlobsData(DataBase):
    """Three Gaussian blobs in the plane (test-only kind): x ~ N(centre_y, 0.3² I), y uniform over 3 classes."""

    kind: Literal["test_blobs"] = "test_blobs"
    seed: int = 0

    def describe(self) -> DataInfo:
        return DataInfo("test_blobs", (2,), len(CENTRES), (PER_CLASS[0],) * len(CENTRES), PER_CLASS[1] * len(CENTRES))


def build_blobs(spec: BlobsData) -> Dataset:
    import torch

    from ddspec.components.data.base import Dataset

    gen = torch.Generator().manual_seed(spec.seed)
    centres = torch.tensor(CENTRES)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(len(CENTRES)).repeat_interleave(n)
        return centres[y] + 0.3 * torch.randn(len(y), 2, generator=gen), y

    (x_train, y_train), (x_test, y_test) = split(PER_CLASS[0]), split(PER_CLASS[1])
    return Dataset("test_blobs", x_train, y_train, x_test, y_test, num_classes=len(CENTRES))


class TinyMLPSpec(ModelBase):
    """One hidden tanh layer on the flattened input (test-only kind)."""

    kind: Literal["test_tiny_mlp"] = "test_tiny_mlp"
    hidden: PositiveInt = 8

    def cost(self, shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
        d = math.prod(shape)
        params = d * self.hidden + self.hidden + self.hidden * num_classes + num_classes
        return params, 2 * (d * self.hidden + self.hidden * num_classes), d + self.hidden + num_classes


def build_tiny_mlp(spec: TinyMLPSpec, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    from torch import nn

    from ddspec.components.models.networks import Classifier

    features = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), spec.hidden), nn.Tanh())
    return Classifier(features, nn.Linear(spec.hidden, num_classes))


@pytest.fixture
def test_kinds() -> Iterator[None]:
    """Register the test-only kinds through the public API, and remove them afterwards."""
    ddspec.register("data", BlobsData, builder=build_blobs)
    ddspec.register("model", TinyMLPSpec, builder=build_tiny_mlp, capabilities=("differentiable",))
    try:
        yield
    finally:
        DATA.unregister("test_blobs")
        MODELS.unregister("test_tiny_mlp")


def _write(path: Path, spec: dict) -> str:
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return str(path)


def _blobs_spec(**changes: object) -> dict:
    spec = {
        "name": "blobs",
        "data": {"kind": "test_blobs"},
        "synthetic": {"per_class": 2},
        "model": {"kind": "test_tiny_mlp", "hidden": 6},
        "distance": {"kind": "feature_mean"},
        "optimize": {"kind": "gradient", "iterations": 2, "real_batch_per_class": 8},
        "evaluate": {"seeds": [0], "epochs": 1},
        "runtime": {"device": "cpu", "progress": False, "threads": 1},
    }
    spec.update(changes)
    return spec


def test_a_kind_registered_at_run_time_validates_and_is_in_the_schema(test_kinds: None) -> None:
    model = problem_model()
    assert ddspec.Problem is model  # the facade reads the current model
    problem = model.model_validate(_blobs_spec())
    assert isinstance(problem.data, BlobsData) and isinstance(problem.model, TinyMLPSpec)
    text = json.dumps(model.model_json_schema())
    assert '"test_blobs"' in text and '"test_tiny_mlp"' in text
    from ddspec.spec.reference import reference_markdown

    assert "### `kind: test_tiny_mlp`" in reference_markdown()


def test_unregistering_restores_the_earlier_model() -> None:
    before = problem_model()
    ddspec.register("model", TinyMLPSpec, builder=build_tiny_mlp)
    try:
        assert problem_model() is not before
    finally:
        MODELS.unregister("test_tiny_mlp")
    assert problem_model() is before
    with pytest.raises(SpecError) as info:
        ddspec.load(_blobs_spec(data={"kind": "digits"}))
    assert [(f.code, f.path) for f in info.value.findings] == [("UNKNOWN_KIND", "model.kind")]


def test_register_as_a_decorator_and_its_errors() -> None:
    from ddspec.components.objectives.risks import mean

    @ddspec.register("risk", builder="ddspec.components.objectives.risks:mean", capabilities=("expectation",))
    class AverageRisk(SpecModel):
        """The mean over scenarios, under a test-only name."""

        kind: Literal["test_average"] = "test_average"

    try:
        entry = RISKS["test_average"]
        assert entry.spec is AverageRisk and entry.load_builder() is mean
        assert entry.capabilities == {"expectation"}
        assert entry.summary == "The mean over scenarios, under a test-only name."
        with pytest.raises(ValueError, match="risk kind 'test_average' is registered twice"):
            ddspec.register("risk", AverageRisk)
    finally:
        RISKS.unregister("test_average")
    assert "test_average" not in RISKS
    with pytest.raises(ValueError, match="unknown axis 'riskk'; known: data, model, .*, backend"):
        ddspec.register("riskk", AverageRisk)


def test_validate_explain_and_run_with_test_kinds(test_kinds: None, tmp_path: Path, capsys, one_thread) -> None:
    spec = _write(tmp_path / "blobs.yaml", _blobs_spec())
    assert main(["validate", spec]) == 0
    assert "backend: matching" in capsys.readouterr().out
    assert main(["explain", spec]) == 0
    out = capsys.readouterr().out
    assert "test_blobs: 60 train / 30 test, input 2, 3 classes" in out
    assert "test_tiny_mlp(hidden=6)" in out
    assert main(["run", spec, "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["accuracy"]["values"]) == 1
    assert 0.0 <= metrics["accuracy"]["mean"] <= 1.0


def test_unknown_backend_lists_the_registered_ones(tmp_path: Path, capsys) -> None:
    spec = _write(tmp_path / "s.yaml", {"data": {"kind": "digits"}, "distance": {"kind": "feature_mean"},
                                        "backend": "nonexistent"})
    assert main(["validate", spec]) == 2
    err = capsys.readouterr().err
    assert "[UNKNOWN_BACKEND] backend:" in err
    assert "fix: use one of: auto, bilevel, collocation, convex, coreset, krr, matching" in err


def test_a_registered_backend_is_chosen_by_name(tmp_path: Path, capsys) -> None:
    from ddspec.backends.base import Backend, Estimate

    class Declines(Backend):
        name = "test_declines"
        summary = "never runs anything"

        def can_lower(self, analysis: object) -> tuple[bool, str]:
            return False, "it declines every problem"

        def estimate(self, analysis: object) -> Estimate:
            return Estimate(0, 0.0)

    register_backend(Declines)
    try:
        spec = _write(tmp_path / "s.yaml", {"data": {"kind": "digits"}, "distance": {"kind": "feature_mean"},
                                            "backend": "test_declines"})
        assert main(["validate", spec]) == 2
        err = capsys.readouterr().err
        assert "[BACKEND_CANNOT_LOWER] backend: backend `test_declines` cannot run this spec: it declines" in err
        assert main(["schema"]) == 0
        schema = json.loads(capsys.readouterr().out)
        assert "test_declines" in schema["properties"]["backend"]["examples"]
    finally:
        unregister_backend("test_declines")


# -- a plugin package -------------------------------------------------------------------------------

PLUGIN = '''
"""A ddspec plugin: the risk kind `demo_mean` (the mean over scenarios, under another name)."""
from typing import Literal

import ddspec
from ddspec.spec.base import SpecModel


class DemoMeanRisk(SpecModel):
    """The mean over scenarios (a demo plugin's kind)."""

    kind: Literal["demo_mean"] = "demo_mean"


ddspec.register("risk", DemoMeanRisk, builder="ddspec.components.objectives.risks:mean", capabilities=("expectation",))
'''


def _install_plugin(site: Path, module_source: str, value: str = "ddspec_demo_plugin") -> None:
    """A module and the ``*.dist-info`` of a distribution declaring it in the ``ddspec.plugins`` group."""
    (site / "ddspec_demo_plugin.py").write_text(textwrap.dedent(module_source), encoding="utf-8")
    info = site / "ddspec_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ddspec-demo-plugin\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[ddspec.plugins]\ndemo = {value}\n", encoding="utf-8")


def _ddspec(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ddspec ARGS`` in a fresh interpreter with ``site`` on its path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "ddspec.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_plugin_package_is_loaded_from_its_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install_plugin(site, PLUGIN)
    schema = _ddspec(site, "schema")
    assert schema.returncode == 0, schema.stderr
    assert '"demo_mean"' in schema.stdout
    spec = _write(tmp_path / "s.yaml", {"data": {"kind": "digits"}, "distance": {"kind": "feature_mean"},
                                        "risk": {"kind": "demo_mean"}})
    validate = _ddspec(site, "validate", spec)
    assert validate.returncode == 0, validate.stderr
    assert "is valid and well posed (backend: matching)" in validate.stdout
    assert _ddspec(tmp_path, "validate", spec).returncode == 2  # without the plugin: unknown kind


def test_a_broken_plugin_is_named_without_a_traceback(tmp_path: Path) -> None:
    _install_plugin(tmp_path, "import no_such_module_for_ddspec\n")
    result = _ddspec(tmp_path, "schema")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "internal error (a bug in ddspec or a plugin)" in result.stderr
    assert "[PLUGIN_FAILED]" in result.stderr
    assert "`demo = ddspec_demo_plugin` (from the distribution `ddspec-demo-plugin`)" in result.stderr
    assert "ModuleNotFoundError: No module named 'no_such_module_for_ddspec'" in result.stderr


def test_a_callable_plugin_is_called_once(tmp_path: Path) -> None:
    source = '''
    from typing import Literal

    import ddspec
    from ddspec.spec.base import SpecModel

    CALLS = []


    class OtherMeanRisk(SpecModel):
        """The mean over scenarios (registered by a plugin function)."""

        kind: Literal["demo_other_mean"] = "demo_other_mean"


    def setup():
        CALLS.append(1)
        ddspec.register("risk", OtherMeanRisk, builder="ddspec.components.objectives.risks:mean")
    '''
    _install_plugin(tmp_path, source, "ddspec_demo_plugin:setup")
    code = ("import ddspec_demo_plugin as p; from ddspec.spec.problem import problem_model; from ddspec.registry "
            "import load_backends; problem_model(); load_backends(); problem_model(); print(len(p.CALLS), "
            "'demo_other_mean' in str(problem_model().model_json_schema()))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.stdout.split() == ["1", "True"], out.stderr



# -- a task and a scenario risk from test code, through validate / explain / run (bilevel) ---------------------
class TopTwoRisk(SpecModel):
    """The mean of the two largest scenario losses (test-only kind): CVaR at α = 2/S, written by hand."""

    kind: Literal["test_top_two"] = "test_top_two"


def build_top_two(spec: TopTwoRisk):
    from ddspec.components.objectives.risks import ScenarioRisk

    return ScenarioRisk(lambda losses: losses.topk(2).values.mean())


class MarginTask(TaskBase):
    """Hinge on the true class's logit margin (test-only kind): ℓ_i = max(0, 1 − (f_y(x_i) − max_{k≠y} f_k(x_i)))."""

    kind: Literal["test_margin"] = "test_margin"


def build_margin(spec: MarginTask, ctx: object):
    import torch

    from ddspec.components.objectives.tasks import Task

    class Margin(Task):
        def per_sample(self, x: torch.Tensor, y: torch.Tensor):
            def losses(outputs: torch.Tensor) -> torch.Tensor:
                true = outputs.gather(1, y[:, None])[:, 0]
                other = outputs.scatter(1, y[:, None], float("-inf")).max(1).values
                return torch.relu(1 - (true - other))
            return losses

    return Margin()


@pytest.fixture
def task_and_risk() -> Iterator[None]:
    ddspec.register("task", MarginTask, builder=build_margin)
    ddspec.register("risk", TopTwoRisk, builder=build_top_two)
    try:
        yield
    finally:
        from ddspec.registry import TASKS

        TASKS.unregister("test_margin")
        RISKS.unregister("test_top_two")


def test_a_registered_task_and_risk_run_through_bilevel(task_and_risk: None, tmp_path: Path, capsys,
                                                        one_thread) -> None:
    spec = _write(tmp_path / "margin.yaml", {
        "name": "margin", "data": {"kind": "digits"}, "synthetic": {"per_class": 1},
        "model": {"kind": "mlp", "hidden": [16]}, "task": {"kind": "test_margin"}, "risk": {"kind": "test_top_two"},
        "scenarios": {"inits": 3}, "train": {"steps": 2, "lr": 0.1},
        "optimize": {"kind": "gradient", "iterations": 3, "real_batch_per_class": 8},
        "evaluate": {"seeds": [0], "epochs": 2}, "runtime": {"progress": False, "device": "cpu"},
    })
    assert main(["validate", spec]) == 0
    assert "backend: bilevel" in capsys.readouterr().out
    assert main(["explain", spec]) == 0
    out = capsys.readouterr().out
    assert "task `test_margin`" in out and "risk test_top_two over 3 init(s)" in out
    assert main(["run", spec, "--out", str(tmp_path / "run")]) == 0
    rows = json.loads((tmp_path / "run" / "history.json").read_text())["rows"]
    # the hinge of each scenario is in [0, 1 + logit range]; the top-two mean of three such losses is finite, ≥ 0
    assert len(rows) == 3 and all(math.isfinite(r["loss"]) and r["loss"] >= 0 for r in rows)


def test_kinds_registered_late_on_nested_axes_validate() -> None:
    """``risk.groups``, ``model.features`` and ``optimize.hypergradient`` are rebuilt from their registries."""
    from ddspec.registry import FEATURES, GROUPS, HYPERGRADIENTS
    from ddspec.spec.kernel import FeaturesBase
    from ddspec.spec.optimize import HypergradientBase

    class OneGroup(SpecModel):
        """Every real sample in one group (test-only kind)."""

        kind: Literal["test_one_group"] = "test_one_group"

    class Squares(FeaturesBase):
        """φ(x) = x² elementwise (test-only kind)."""

        kind: Literal["test_squares"] = "test_squares"

    class Frozen(HypergradientBase):
        """No hypergradient at all (test-only kind)."""

        kind: Literal["test_frozen"] = "test_frozen"

    base = {"data": {"kind": "digits"}}
    specs = {
        "groups": (GROUPS, OneGroup, {**base, "distance": {"kind": "feature_mean"},
                                      "risk": {"kind": "group_cvar", "groups": {"kind": "test_one_group"}}}),
        "features": (FEATURES, Squares, {**base, "model": {"kind": "kernel_ridge", "features": {"kind": "test_squares"}},
                                         "train": {"kind": "closed_form"}, "optimize": {"kind": "exact"}}),
        "hypergradient": (HYPERGRADIENTS, Frozen, {**base, "task": {"kind": "test_error"},
                                                   "optimize": {"kind": "gradient",
                                                                "hypergradient": {"kind": "test_frozen"}}}),
    }
    for axis, (registry, cls, raw) in specs.items():
        with pytest.raises(SpecError, match="UNKNOWN_KIND"):
            ddspec.load(raw)
        kind = cls.model_fields["kind"].default
        ddspec.register(axis, cls, builder=lambda spec, *args: None)
        try:
            dumped = ddspec.load(raw).model_dump(mode="json")
        finally:
            registry.unregister(kind)
        assert kind in json.dumps(dumped)
        with pytest.raises(SpecError, match="UNKNOWN_KIND"):
            ddspec.load(raw)
