"""Rough cost model for ``explain``: FLOPs from the models' analytic counts, a nominal throughput."""

from __future__ import annotations

#: Nominal sustained float32 throughput (FLOP/s) used for time estimates; deliberately round numbers.
THROUGHPUT = {"cpu": 2e10, "cuda": 5e12}
#: Backward costs about twice the forward.
TRAIN_FACTOR = 3


def device_kind(device: str) -> str:
    """The device an ``auto`` setting will likely use, without importing torch."""
    if device != "auto":
        return device
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "cpu"
    return "cuda" if _cuda_visible() else "cpu"


def _cuda_visible() -> bool:
    import os
    from pathlib import Path

    return os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" and Path("/dev/nvidiactl").exists()


def seconds(flops: float, device: str) -> float:
    return flops / THROUGHPUT[device_kind(device)]
