"""Device selection, threads and seeding for a run."""

from __future__ import annotations

import random

import numpy as np
import torch

from ddspec.errors import SpecError


def select_device(name: str) -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cuda`` without a GPU is a spec error (exit 2)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError.one("DEVICE_UNAVAILABLE", "runtime.device", "CUDA was requested but torch sees no GPU",
                            "use runtime.device: auto or cpu, or install a CUDA build of torch")
    return torch.device(name)


def seed_everything(seed: int, threads: int | None) -> torch.Generator:
    """Seed Python, NumPy and torch (global RNG); set torch's intra-op threads and the BLAS / OpenMP pools
    numpy and scipy use (threadpoolctl) for the rest of the process; return a seeded CPU generator."""
    if threads is not None:
        torch.set_num_threads(threads)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
