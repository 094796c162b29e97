"""Shared fixtures: small, fast problems."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_spec() -> dict:
    """A digits problem small enough to run end to end in seconds."""
    return {
        "name": "tiny",
        "data": {"kind": "digits"},
        "synthetic": {"per_class": 2},
        "model": {"kind": "convnet", "width": 8, "depth": 2},
        "distance": {"kind": "feature_mean"},
        "optimize": {"kind": "gradient", "iterations": 6, "real_batch_per_class": 16},
        "evaluate": {"seeds": [0], "epochs": 5, "metrics": ["accuracy"]},
        "runtime": {"device": "cpu", "progress": False, "checkpoint_every": 2, "threads": 1},
    }


@pytest.fixture
def bilevel_spec(tiny_spec) -> dict:
    """tiny_spec with the test-error objective: 2 per class on digits, K = 3 inner steps."""
    spec = dict(tiny_spec)
    spec.pop("distance")
    spec.update({
        "task": {"kind": "test_error"},
        "train": {"steps": 3, "lr": 0.05},
        "optimize": {"kind": "gradient", "iterations": 3, "real_batch_per_class": 8},
    })
    return spec


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and lose much when the cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def float64():
    """Ground-truth tests run in double precision."""
    import torch

    from ddspec.testing.gradients import default_dtype

    with default_dtype(torch.float64):
        yield


@pytest.fixture
def convex_spec() -> dict:
    """breast_cancer, 2 points per class; the outer loss uses every real training sample (no batch noise)."""
    return {
        "name": "convex",
        "data": {"kind": "tabular", "name": "breast_cancer"},
        "synthetic": {"per_class": 2},
        "model": {"kind": "linear"},
        "task": {"kind": "test_error"},
        "train": {"kind": "convex", "loss": "logistic", "penalty": "l2", "lam": 0.01},
        "optimize": {"kind": "gradient", "iterations": 15, "real_batch_per_class": 10_000, "lr": 0.05},
        "evaluate": {"seeds": [0], "epochs": 5, "metrics": ["accuracy"]},
        "runtime": {"progress": False, "threads": 1},
    }


@pytest.fixture
def krr_spec() -> dict:
    """digits, one point per class, exact kernel ridge distillation."""
    return {
        "name": "krr",
        "data": {"kind": "digits"},
        "synthetic": {"per_class": 1},
        "model": {"kind": "kernel_ridge", "lam": 1e-3},
        "train": {"kind": "closed_form"},
        "optimize": {"kind": "exact"},
        "evaluate": {"seeds": [0], "metrics": ["accuracy"]},
        "runtime": {"progress": False, "threads": 1},
    }


@pytest.fixture
def interrupt_after():
    """``interrupt_after(i)``: the next run's loop stops (as on Ctrl-C) once iteration ``i`` is recorded
    (:func:`ddspec.testing.determinism.recording_iterations`); the patch is undone by calling the returned function
    (before resuming), or at the end of the test."""
    from contextlib import ExitStack

    from ddspec.testing.determinism import recording_iterations

    with ExitStack() as armed:
        def arm(at: int):
            armed.enter_context(recording_iterations(stop_after=at))
            return armed.close
        yield arm
