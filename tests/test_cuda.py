"""The CUDA path: every backend runs on ``runtime.device: cuda`` with the results of the CPU to float tolerance.

Marked ``cuda`` and skipped without a GPU (run by benchmarks/device_check.sh on a GPU machine: ``pytest -m cuda``);
without a GPU, ``device: cuda`` is a clear spec error instead (the last test). A backend without a CUDA path
(``Backend.cpu_only`` says why: milp, survival) runs on the CPU under ``device: auto`` and refuses ``cuda``.
One example per backend, at smoke size (:func:`ddspec.testing.shrink`): the distilled tensors of a CPU run and a
CUDA run agree to 1e-3 in relative Frobenius norm (a step of Adam moves a coordinate whose gradient is ~0 by ±lr,
whichever sign rounding gives it, so an elementwise bound would test rounding, not the backend), and the primary
figure to 0.05; and in float64 the outer gradient each gradient backend steps along agrees to 1e-6 relative.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

import ddspec
from ddspec.errors import SpecError
from ddspec.registry import BUILTIN_BACKENDS, load_backends
from ddspec.runtime.artifacts import load_distilled
from ddspec.testing import shrink
from ddspec.testing.gradients import default_dtype, tiny

#: The GPU tests are marked ``cuda`` (``pytest -m cuda`` selects them) and skipped without a GPU.
GPU = torch.cuda.is_available()

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: One example per backend (the test below checks that every registered built-in backend is covered).
BY_BACKEND = {
    "bilevel": "mnist1d_bilevel.yaml",
    "matching": "mnist1d_dm.yaml",
    "krr": "mnist1d_krr_rff.yaml",
    "convex": "digits_convex_logistic.yaml",
    "coreset": "digits_herding.yaml",
    "zero_order": "digits_tree_zero_order.yaml",
    "collocation": "laplace_square_collocation.yaml",
}
#: The backends without a CUDA path (``Backend.cpu_only``), an example each.
CPU_ONLY = {"milp": "asia_milp.yaml", "survival": "gbsg2_survival.yaml"}
#: More gradient paths worth checking on the GPU: gradient matching and trajectory matching.
EXTRA = ["mnist1d_dc.yaml", "mnist1d_trajectory.yaml", "digits_bilevel_scenario_cvar.yaml"]


def on(problem: object, device: str) -> object:
    """``problem`` with ``runtime.device`` set to ``device``."""
    return problem.model_copy(update={"runtime": problem.runtime.model_copy(update={"device": device})})


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / a.norm().clamp_min(1e-30))


def test_every_builtin_backend_has_an_example_here() -> None:
    """Every built-in backend has a CUDA example in BY_BACKEND, or is CPU-only (with its reason) and in CPU_ONLY."""
    backends = load_backends()
    builtin = {name for name, b in backends.items() if type(b).__module__.rsplit(".", 1)[0] in BUILTIN_BACKENDS
               or type(b).__module__ in BUILTIN_BACKENDS}
    for examples in (BY_BACKEND, CPU_ONLY):
        assert {ddspec.compile(ddspec.load(EXAMPLES / name)).backend for name in examples.values()} == set(examples)
    assert set(BY_BACKEND) | set(CPU_ONLY) == builtin and not set(BY_BACKEND) & set(CPU_ONLY)
    assert {name for name in builtin if backends[name].cpu_only} == set(CPU_ONLY)


@pytest.mark.parametrize("name", list(CPU_ONLY))
def test_a_cpu_only_backend_runs_auto_on_the_cpu_and_refuses_cuda(name: str) -> None:
    plan = ddspec.compile(ddspec.load(EXAMPLES / CPU_ONLY[name]))
    assert plan.problem.runtime.device == "cpu" and plan.defaults["runtime.device"] == "cpu"
    assert f"[DEVICE_CPU_ONLY] runs on the CPU: {load_backends()[name].cpu_only}" in plan.explain()
    with pytest.raises(SpecError) as err:
        ddspec.compile(ddspec.load(EXAMPLES / CPU_ONLY[name], ["runtime.device=cuda"]))
    assert f"[DEVICE_CPU_ONLY] runtime.device: backend `{name}` has no CUDA path: " in err.value.render()
    assert "fix: set runtime.device: cpu (or auto, which runs it on the CPU)" in err.value.render()


def test_evaluate_of_a_cpu_only_run_refuses_cuda_and_runs_auto_on_the_cpu(tmp_path: Path) -> None:
    """``ddspec evaluate DIR --set runtime.device=...`` asks the saved run's backend as ``compile`` does."""
    from ddspec.runtime.runner import reevaluate

    out = tmp_path / "run"
    ddspec.compile(shrink(EXAMPLES / CPU_ONLY["milp"])).run(out)
    with pytest.raises(SpecError) as err:
        reevaluate(out, ["runtime.device=cuda"])
    assert "[DEVICE_CPU_ONLY] runtime.device: backend `milp` has no CUDA path: " in err.value.render()
    assert "accuracy" in reevaluate(out, ["runtime.device=auto"])
    assert ddspec.load(out / "spec.yaml").runtime.device == "cpu"
@pytest.mark.cuda
@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(CPU_ONLY.values()))
def test_a_cpu_only_backend_runs_on_a_gpu_machine(name: str, tmp_path: Path) -> None:
    """With a GPU present, ``device: auto`` runs a CPU-only backend on the CPU to its figures."""
    result = ddspec.compile(shrink(EXAMPLES / name)).run(tmp_path / "run")
    assert any(isinstance(v, dict) and "mean" in v for v in result.metrics.values())


@pytest.mark.cuda
@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", [*BY_BACKEND.values(), *EXTRA])
def test_a_smoke_run_on_cuda_matches_the_cpu(name: str, tmp_path: Path) -> None:
    small = shrink(EXAMPLES / name)
    results = {}
    for device in ("cpu", "cuda"):
        result = ddspec.compile(on(small, device)).run(tmp_path / device)
        results[device] = (load_distilled(tmp_path / device / "distilled.safetensors"), result.metrics)
    (cpu, cpu_metrics), (gpu, gpu_metrics) = results["cpu"], results["cuda"]
    assert cpu.keys() == gpu.keys()
    for key in cpu:
        if cpu[key].is_floating_point():
            assert relative(cpu[key], gpu[key]) <= 1e-3, key
        else:
            assert torch.equal(cpu[key], gpu[key]), key
    figures = [k for k, v in cpu_metrics.items() if isinstance(v, dict) and "mean" in v]
    assert figures
    for key in figures:  # accuracy, rmse, relL2, ...: the CPU's figure to 0.05
        assert abs(cpu_metrics[key]["mean"] - gpu_metrics[key]["mean"]) <= 0.05, key


@pytest.mark.cuda
@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["mnist1d_bilevel.yaml", "mnist1d_dm.yaml", "mnist1d_dc.yaml",
                                  "digits_convex_logistic.yaml", "digits_bilevel_scenario_cvar.yaml"])
def test_the_outer_gradient_on_cuda_equals_the_cpu_in_float64(name: str) -> None:
    from ddspec.runtime.context import RunContext

    plan = ddspec.compile(tiny(EXAMPLES / name))
    backend = load_backends()[plan.backend]
    grads = {}
    with default_dtype(torch.float64):
        for device in ("cpu", "cuda"):
            problem = on(plan.problem, device)
            with tempfile.TemporaryDirectory() as out:
                outer = backend.outer_gradient(RunContext.start(problem, plan.analysis, Path(out), dtype=torch.float64))
                grads[device] = outer.gradient(outer.tensors)
    for key, g in grads["cpu"].items():
        assert relative(g, grads["cuda"][key]) <= 1e-6, key


@pytest.mark.cuda
@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("steps", [10, 50])
def test_unroll_engines_agree_on_cuda(steps: int) -> None:
    """torch_func and higher differentiate the same K-step unroll: one outer gradient, float64, on the GPU."""
    from ddspec.runtime.context import RunContext

    grads = {}
    for engine in ("torch_func", "higher"):
        problem = ddspec.load(EXAMPLES / "mnist1d_bilevel.yaml", [
            f"train.steps={steps}", f"optimize.hypergradient={{kind: unrolled, engine: {engine}}}",
            "optimize.real_batch_per_class=16", "runtime.device=cuda"])
        plan = ddspec.compile(problem)
        with default_dtype(torch.float64), tempfile.TemporaryDirectory() as out:
            outer = load_backends()["bilevel"].outer_gradient(
                RunContext.start(plan.problem, plan.analysis, Path(out), dtype=torch.float64))
            grads[engine] = outer.gradient(outer.tensors)
    for key, g in grads["torch_func"].items():
        assert relative(g, grads["higher"][key]) <= 1e-8, key


@pytest.mark.skipif(GPU, reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_a_clear_spec_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ddspec.cli import main

    code = main(["run", str(EXAMPLES / "quickstart.yaml"), "--out", str(tmp_path / "run"), "--set", "runtime.device=cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "[DEVICE_UNAVAILABLE] runtime.device: CUDA was requested but torch sees no GPU" in err
    assert "fix: use runtime.device: auto or cpu" in err
