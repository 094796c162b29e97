"""``check_determinism`` and ``check_resume``: one seed gives one result, and a run interrupted after a checkpoint
and resumed gives the result of an uninterrupted one (docs/concepts.md#reproducibility).

ddspec's contract: every random draw of a run comes from the run's generator (seeded with ``runtime.seed``) or
torch's global RNG (seeded likewise); both are checkpointed. Python's ``random`` and NumPy's global RNG are seeded
too, but they are neither checkpointed nor part of the contract, so :func:`check_determinism` seeds them
differently in its second run: a kind that draws from them (or from anything unseeded) fails it, as it would fail
to resume bit for bit.

Both checks run the spec at smoke size on the CPU (``runtime.device: cpu``, whatever the spec says): the contract
is bit-for-bit on the CPU, and CUDA kernels may reduce in a different order from run to run. The interrupted and
the resumed run of :func:`check_resume` run in one process, one after the other, so a cache kept at module level
(e.g. a memoized computation) survives the interruption: state that a real restart would lose is not caught.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ddspec.errors import DDSpecError, RunError
from ddspec.testing.errors import NotApplicable, NotDeterministic, ResumeDiffers, SmokeRunFailed, label
from ddspec.testing.shrink import shrink
from ddspec.testing.wellposed import Spec

#: What Python's and NumPy's global RNGs are seeded with in :func:`check_determinism`'s second run.
OTHER_SEED = 12345


def check_determinism(spec: Spec) -> Any:
    """Run ``spec`` at smoke size twice with its seed — the second time with Python's and NumPy's global RNGs in
    another state — and fail with :class:`NotDeterministic` unless every distilled tensor is equal (``torch.equal``)
    and every figure of the evaluation is the same. Returns the first run's Result."""
    plan = _plan(spec)
    with tempfile.TemporaryDirectory() as tmp:
        first = _run(spec, plan, Path(tmp) / "a")
        with _other_global_rngs():
            _run(spec, plan, Path(tmp) / "b")
        differences = _differences(Path(tmp) / "a", Path(tmp) / "b")
    if differences:
        raise NotDeterministic(
            f"{label(spec)}: two runs with runtime.seed = {plan.problem.runtime.seed} differ "
            f"(backend {plan.backend}): {'; '.join(differences)}. Draw randomness only from the run's generator "
            "(RunContext.generator) or torch's global RNG: not from numpy.random, random, or an unseeded generator")
    return first


def check_resume(spec: Spec) -> Any:
    """Run ``spec`` at smoke size uninterrupted; run it again, interrupted (as by Ctrl-C) after its first outer
    iteration and its checkpoint, and resume it (in the same process: module docstring); fail with
    :class:`ResumeDiffers` unless the resumed run continued from the checkpoint and its distilled tensors and
    figures equal the uninterrupted run's. Raises :class:`NotApplicable` for a backend without a checkpointed loop
    and for fewer than 2 outer iterations (nothing is left to resume after the first). Returns the resumed run's
    Result."""
    from ddspec.runtime import artifacts as art

    plan = _plan(spec)
    iterations = plan.problem.optimize.outer_iterations()
    if iterations is not None and iterations < 2:
        raise NotApplicable(f"{label(spec)}: {iterations} outer iteration at smoke size: a run interrupted after its "
                            "first has nothing left to resume (set optimize.iterations >= 2)")
    with tempfile.TemporaryDirectory() as tmp:
        straight, out = Path(tmp) / "a", Path(tmp) / "b"
        _run(spec, plan, straight)
        with recording_iterations(stop_after=0) as recorded:
            try:
                _run(spec, plan, out)
            except RunError as err:
                if [f.code for f in err.findings] != ["INTERRUPTED"]:
                    raise
            else:
                raise NotApplicable(f"{label(spec)}: backend `{plan.backend}` ran without a checkpointed loop "
                                    "(no outer iteration was recorded), so there is nothing to interrupt")
        if not (out / art.CHECKPOINT).exists():
            raise ResumeDiffers(f"{label(spec)}: the interrupted run left no {art.CHECKPOINT}")
        with recording_iterations() as resumed_iterations:
            resumed = _run(spec, plan, out, resume=True)
        if not resumed_iterations or resumed_iterations[0] != recorded[-1] + 1:
            raise ResumeDiffers(f"{label(spec)}: the resumed run recorded iterations {resumed_iterations} after the "
                                f"interrupted one recorded {recorded}: it did not continue from the checkpoint")
        differences = _differences(straight, out)
    if differences:
        raise ResumeDiffers(f"{label(spec)}: the run interrupted after its first iteration and resumed differs from the "
                            f"uninterrupted one (backend {plan.backend}): {'; '.join(differences)}. Everything a "
                            "later iteration depends on must be in the loop's checkpointed state (RunContext.loop)")
    return resumed


def _plan(spec: Spec) -> Any:
    """The plan of ``spec`` at smoke size, on the CPU (module docstring)."""
    from ddspec.compiler.plan import compile
    from ddspec.spec.loading import load

    return compile(load(shrink(spec), ["runtime.device=cpu"]))


def _run(spec: Spec, plan: Any, out: Path, resume: bool = False) -> Any:
    try:
        return plan.run(out, resume=resume)
    except RunError as err:
        if [f.code for f in err.findings] == ["INTERRUPTED"]:
            raise
        raise SmokeRunFailed(f"the run of {label(spec)} (backend {plan.backend}) failed:\n{err.render()}") from err
    except DDSpecError as err:
        raise SmokeRunFailed(f"the run of {label(spec)} (backend {plan.backend}) failed:\n{err.render()}") from err


def _differences(a: Path, b: Path) -> list[str]:
    """What differs between two finished run folders: distilled tensors (name, how) and figures (name)."""
    import torch

    from ddspec.runtime import artifacts as art

    ta, tb = art.load_distilled(a / art.DISTILLED), art.load_distilled(b / art.DISTILLED)
    found = [f"tensor `{n}` exists in one run only" for n in sorted(set(ta) ^ set(tb))]
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            found.append(f"tensor `{name}`: {x.dtype} {tuple(x.shape)} vs {y.dtype} {tuple(y.shape)}")
        elif not torch.equal(x, y):
            gap = (x.double() - y.double()).abs()
            found.append(f"tensor `{name}`: {int((gap > 0).sum())} of {x.numel()} entries differ, by up to "
                         f"{float(gap.nan_to_num(float('inf')).max()):.3g}")
    ma, mb = _figures(art.read_json(a / art.METRICS)), _figures(art.read_json(b / art.METRICS))
    found += [f"figure `{k}`: {ma.get(k)} vs {mb.get(k)}" for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)]
    return found


def _figures(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every list of ``values`` in metrics.json by its dotted name (timings are not figures)."""
    found: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            if "values" in value:
                found[prefix + key] = value["values"]
            found |= _figures(value, f"{prefix}{key}.")
    return found


@contextmanager
def _other_global_rngs() -> Iterator[None]:
    """Runs inside seed Python's and NumPy's global RNGs with :data:`OTHER_SEED` right after ddspec seeds them."""
    import numpy as np

    from ddspec.runtime import device

    original = device.seed_everything

    def seeded(seed: int, threads: int | None) -> Any:
        generator = original(seed, threads)
        random.seed(OTHER_SEED)
        np.random.seed(OTHER_SEED)
        return generator

    device.seed_everything = seeded
    try:
        yield
    finally:
        device.seed_everything = original


@contextmanager
def recording_iterations(stop_after: int | None = None) -> Iterator[list[int]]:
    """The iterations the outer loops record while inside; with ``stop_after``, the loop stops (as on Ctrl-C: the
    current iteration finishes, a checkpoint is saved, RunError ``INTERRUPTED``) once that iteration is recorded."""
    from ddspec.runtime.loop import Loop

    record, seen = Loop.record, []

    def recording(self: Loop, iteration: int, **values: float) -> None:
        record(self, iteration, **values)
        seen.append(iteration)
        if iteration == stop_after:
            self._stop = True

    Loop.record = recording
    try:
        yield seen
    finally:
        Loop.record = record
