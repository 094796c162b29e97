"""The outer-iteration loop every iterative backend runs in.

It shows a progress bar (loss, rate, ETA), saves a checkpoint every ``every`` iterations and when
interrupted (Ctrl-C / SIGTERM: the current iteration finishes, the checkpoint is written, then
:class:`~ddspec.errors.RunError` ``INTERRUPTED`` is raised), restores the last checkpoint on resume,
and stops with :class:`~ddspec.errors.DivergenceError` as soon as a recorded value is NaN/inf.

State is a dict of named objects restored *in place*: tensors (copied into), objects with
``state_dict``/``load_state_dict`` (optimizers, lr schedulers, modules) and ``torch.Generator``.
``after_each`` (e.g. an lr scheduler's ``step``) runs after every iteration, before its checkpoint. The global torch
RNG, the history and the elapsed time are saved too, so a resumed run continues bit-for-bit.

Under torchrun (``ranks``) every rank runs the loop in step: a stop request seen by any rank stops all of them
after the same iteration, and rank 0 alone writes the checkpoint, after a barrier; every rank restores from it.
"""

from __future__ import annotations

import io
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ddspec.errors import DivergenceError, Finding, RunError
from ddspec.runtime.artifacts import atomic_write_bytes
from ddspec.runtime.distributed import Ranks


def _snapshot(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    return obj.state_dict()


def _restore(obj: Any, saved: Any) -> None:
    if isinstance(obj, torch.Tensor):
        with torch.no_grad():
            obj.copy_(saved.to(obj.device))
    elif isinstance(obj, torch.Generator):
        obj.set_state(saved)
    else:
        obj.load_state_dict(saved)


class Loop:
    """Iterate ``range(start, total)``; see the module docstring for what happens around each step."""

    def __init__(
        self, path: Path, total: int, every: int, state: dict[str, Any], *,
        desc: str = "distill", show: bool = True, resume: bool = False, fix: str = "",
        after_each: Callable[[], object] | None = None, ranks: Ranks | None = None,
    ) -> None:
        self.path = Path(path)
        self.ranks = ranks or Ranks()
        self.after_each = after_each
        self.total = total
        self.every = every
        self.state = state
        self.desc = desc
        self.show = show
        self.fix = fix or "lower optimize.lr, or check the data for extreme values"
        self.history: list[dict[str, float]] = []
        self.elapsed = 0.0
        self.start = self._load() if resume and self.path.exists() else 0
        self._stop = False

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, iteration: int) -> None:
        """Write the checkpoint for ``iteration`` completed iterations (atomically; rank 0 only, once every rank
        has finished the iteration)."""
        self.ranks.barrier(f"the checkpoint of iteration {iteration}")
        if not self.ranks.writer:
            return
        payload = {
            "iteration": iteration,
            "elapsed": self.elapsed,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "state": {k: _snapshot(v) for k, v in self.state.items()},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())

    def _load(self) -> int:
        payload = torch.load(self.path, map_location="cpu", weights_only=True)
        missing = set(self.state) - set(payload["state"])
        if missing:
            raise RunError([Finding("CHECKPOINT_MISMATCH", "runtime", f"checkpoint {self.path} lacks {sorted(missing)}",
                                    "it was written by another backend or version; start a fresh run")])
        for name, obj in self.state.items():
            _restore(obj, payload["state"][name])
        torch.set_rng_state(payload["torch_rng"])
        self.history = list(payload["history"])
        self.elapsed = float(payload["elapsed"])
        return int(payload["iteration"])

    # -- iteration ---------------------------------------------------------------------------
    def _request_stop(self, signum: int, frame: Any) -> None:
        if self._stop:  # second Ctrl-C: stop now, without a final checkpoint
            raise KeyboardInterrupt
        self._stop = True

    def __iter__(self) -> Iterator[int]:
        from tqdm.auto import tqdm

        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in handlers:
                signal.signal(s, self._request_stop)
        except ValueError:  # not the main thread: leave signals alone
            handlers = {}
        bar = tqdm(total=self.total, initial=self.start, desc=self.desc, disable=not self.show, dynamic_ncols=True)
        try:
            for it in range(self.start, self.total):
                tick = time.perf_counter()
                yield it
                if self.after_each is not None:
                    self.after_each()
                self.elapsed += time.perf_counter() - tick
                bar.update(1)
                if self.history and self.history[-1]["iteration"] == it:
                    bar.set_postfix(loss=f"{self.history[-1]['loss']:.4g}", refresh=False)
                done = it + 1
                self._stop = self.ranks.any(self._stop)
                if self._stop or (done % self.every == 0 and done < self.total):
                    self.save(done)
                if self._stop:
                    raise RunError([Finding(
                        "INTERRUPTED", "", f"interrupted after iteration {done} of {self.total}; checkpoint saved to {self.path}",
                        "continue with `ddspec run SPEC --out DIR --resume`",
                    )])
        finally:
            bar.close()
            for s, h in handlers.items():
                signal.signal(s, h)

    def record(self, iteration: int, **values: float) -> None:
        """Log scalar values (``loss`` first) for ``iteration``; raise DivergenceError if any is not finite."""
        row = {"iteration": iteration, **{k: float(v) for k, v in values.items()}}
        bad = [k for k, v in row.items() if not math.isfinite(v)]
        if bad:
            raise DivergenceError([Finding(
                "DIVERGED", "optimize", f"{', '.join(bad)} became {row[bad[0]]} at iteration {iteration}", self.fix
            )])
        self.history.append(row)

    def check_finite(self, iteration: int, **tensors: torch.Tensor) -> None:
        """Raise DivergenceError if any of the named tensors holds NaN/inf."""
        for name, t in tensors.items():
            if not bool(torch.isfinite(t).all()):
                raise DivergenceError([Finding(
                    "DIVERGED", "optimize", f"synthetic tensor `{name}` holds NaN/inf after iteration {iteration}", self.fix
                )])
