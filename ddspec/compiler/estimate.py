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


def available_memory(device: str) -> int | None:
    """Bytes the run can use: physical RAM for the CPU, free memory of GPU 0 for CUDA (None if unknown).
    Reading the GPU's memory imports torch, so ``explain`` of a CUDA spec is slower."""
    import os

    if device_kind(device) == "cuda":
        try:
            import torch

            return int(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else None
        except (ImportError, RuntimeError):
            return None
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
