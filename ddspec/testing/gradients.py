"""``check_hypergradient``: the outer gradient a backend steps along against central finite differences of the
objective it differentiates, on a tiny float64 instance of a spec.

The backend builds both from the code its run uses (:meth:`ddspec.backends.base.Backend.outer_gradient`): the
objective of the first outer iteration as a function of the learned tensors, and the gradient. Every evaluation
replays the same random draws (scenarios, real and inner batches, model-pool state: common random numbers), so the
finite differences measure the objective, not the noise. The tiny instance is the spec at smoke size
(:func:`~ddspec.testing.shrink`) with one synthetic sample per class and real batches of at most
:data:`REAL_BATCH` per class, computed in float64; it must compile to the same backend.

An exact gradient (bilevel's unrolled hypergradient, the convex backend's KKT hypergradient, KIP's, a matching
surrogate's) is compared on ``coordinates`` random coordinates and along ``directions`` random directions and the
gradient's own: the relative error is the largest of ‖g_S − d_S‖/max(‖g_S‖, ‖d_S‖) over the coordinates S and
|gᵀv − dᵥ|/max(|gᵀv|, |dᵥ|) over the directions v (d: central differences). Along a direction where the one-sided
differences disagree, the step is halved: on a smooth objective their gap halves too (it is h·vᵀ∇²L v), and the
central difference of the half step is used; where it does not shrink, the objective bends or jumps there (a ReLU
switching inside the inner training) and the direction is skipped and named. A gradient that is zero wherever
it is compared, of an objective whose finite differences are zero too, fails: the objective does not depend on
the learned tensors.

A deliberate approximation (the backend's ``approximation``) is checked where the backend states the function it
is the exact gradient of (``held``: MMD's objective with its median bandwidth held at the starting point's): the
gradient is compared with finite differences of that function, which verifies that the approximation is the
stated one and nothing else; how far it is from the true objective's derivative along the gradient is reported
(``approximation_error``), not checked. Other approximations (a truncated, normalized, implicit or ridge-head
hypergradient, rank shaping, a library fit) raise :class:`NotApplicable`.

Zero-order's estimate ĝ is stochastic: with M orthogonal directions (whole blocks of d, at least
:data:`ZERO_ORDER_SAMPLES`) and σ = :data:`ZERO_ORDER_SIGMA` its relative error to the full finite-difference
gradient is about √(2/M), and the default tolerance is 5√(2/M); an M whose tolerance would exceed
:data:`ZERO_ORDER_MAX_RTOL` (M < 800), too loose to catch an estimate off by a factor 2, is refused. It costs about
2d finite-difference evaluations plus 2M for the estimate (M ≥ 4d): about 10·d objective evaluations.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddspec.testing.errors import HypergradientMismatch, NotApplicable, label
from ddspec.testing.shrink import same_problem
from ddspec.testing.wellposed import Spec, compiled

#: Real samples per class in the tiny instance's batches (at most).
REAL_BATCH = 16
#: The zero-order check's smoothing radius σ (units of the data's std) and its least number of directions M.
ZERO_ORDER_SIGMA, ZERO_ORDER_SAMPLES = 1e-3, 4096
#: The loosest tolerance 5√(2/M) a zero-order check accepts (M ≥ 800): looser could not catch ĝ off by 2x.
ZERO_ORDER_MAX_RTOL = 0.25
#: The default tolerance of an exact gradient.
RTOL = 1e-4
#: A gap between the one-sided differences that keeps more than this fraction when the step halves is a kink.
KINK_SHRINK = 0.75


@dataclass(frozen=True)
class GradientReport:
    """What :func:`check_hypergradient` measured: the ``relative_error`` (and the ``rtol`` it passed), the
    ``backend``, the learned coordinates ``dim``, how many were compared by finite differences (``coordinates``)
    and along how many ``directions``, whether the gradient was a stochastic estimate (zero-order, with
    ``samples`` directions), the worst place in words, and the coordinates or directions ``skipped`` because the
    objective is not differentiable there (named in ``skipped_at``). For a gradient that is a stated
    ``approximation`` checked against the objective with the approximated quantity held: the relative error
    ``approximation_error`` of the gradient against the true objective's finite difference along the gradient
    (how much the approximation itself changes; not checked)."""

    backend: str
    relative_error: float
    rtol: float
    dim: int
    coordinates: int
    directions: int
    stochastic: bool
    samples: int
    worst: str
    skipped: int = 0
    skipped_at: tuple[str, ...] = ()
    approximation: str = ""
    approximation_error: float | None = None


def check_hypergradient(spec: Spec, rtol: float | None = None, *, coordinates: int = 64, directions: int = 4,
                        samples: int | None = None, seed: int = 0) -> GradientReport:
    """Compare the outer gradient the backend of ``spec`` steps along with central finite differences of its
    objective on a tiny float64 instance (module docstring); return the :class:`GradientReport`. Fails with
    :class:`HypergradientMismatch` naming the relative error and the worst coordinate or direction when it exceeds
    ``rtol`` (default :data:`RTOL`, or 5√(2/M) for zero-order's estimate from M = ``samples`` directions), or when
    the gradient and the finite differences are zero everywhere compared; raises :class:`NotApplicable` when the
    backend steps along no gradient (coreset selection, the exact KRR construction) or along a deliberate
    approximation without a held objective (a truncated or implicit hypergradient, rank shaping); ``ValueError``
    for ``samples`` below 800 (module docstring)."""
    import torch

    from ddspec.backends.base import NoOuterGradient
    from ddspec.registry import load_backends
    from ddspec.runtime.context import RunContext

    if samples is not None:
        zero_order_rtol(samples)
    plan = compiled(tiny(spec, samples))
    backend = load_backends()[plan.backend]
    with default_dtype(torch.float64), tempfile.TemporaryDirectory() as out:
        try:
            outer = backend.outer_gradient(RunContext.start(plan.problem, plan.analysis, Path(out),
                                                            dtype=torch.float64))
        except NoOuterGradient as err:
            raise NotApplicable(f"{label(spec)}: {err}; check_hypergradient checks backends that step along a "
                                "gradient (bilevel, convex, KIP, matching, zero_order)") from err
        if outer.approximation and outer.held is None:
            raise NotApplicable(f"{label(spec)}: backend `{plan.backend}` steps along an approximation of the "
                                f"gradient by design ({outer.approximation}), which finite differences cannot verify "
                                "(for a hypergradient: check the same problem with optimize.hypergradient: "
                                "{kind: unrolled})")
        return check_outer_gradient(outer, rtol, coordinates=coordinates, directions=directions, seed=seed,
                                    backend=plan.backend, what=label(spec))


def check_outer_gradient(outer: Any, rtol: float | None = None, *, coordinates: int = 64, directions: int = 4,
                         seed: int = 0, backend: str = "", what: str = "the outer gradient") -> GradientReport:
    """The comparison of :func:`check_hypergradient` on an :class:`~ddspec.backends.base.OuterGradient` built by
    hand or by a backend (float64 tensors); ``backend`` and ``what`` name it in messages. With a stated
    approximation and a ``held`` objective, the gradient is compared with that objective's finite differences."""
    import torch

    names = list(outer.tensors)
    shapes = [outer.tensors[n].shape for n in names]
    start = torch.cat([outer.tensors[n].reshape(-1) for n in names]).double()
    dim = len(start)
    tol = rtol if rtol is not None else (zero_order_rtol(outer.samples) if outer.stochastic else RTOL)
    if outer.stochastic:
        zero_order_rtol(outer.samples)

    def unflat(point: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: part.reshape(s).to(outer.tensors[n]) for n, part, s in
                zip(names, point.split([math.prod(s) for s in shapes]), shapes)}

    held = outer.held if outer.approximation and outer.held is not None else None
    fd = Differences(lambda point: (held or outer.objective)(unflat(point)), start, outer.precision)
    gradient = torch.cat([outer.gradient(unflat(start))[n].reshape(-1) for n in names]).double()
    gen = torch.Generator().manual_seed(seed)
    where = _places(names, shapes)
    if outer.stochastic:
        picked = torch.arange(dim)
        used: list[torch.Tensor] = []
    else:
        picked = torch.randperm(dim, generator=gen)[:coordinates].sort().values
        used = [gradient / gradient.norm()] if gradient.norm() > 0 else []
        used += [v / v.norm() for v in torch.randn(directions, dim, generator=gen, dtype=torch.float64)]
    unit = torch.zeros(dim, dtype=torch.float64)
    slopes = [(int(i), fd.slope(unit.index_fill(0, i.view(1), 1.0), where[int(i)])) for i in picked]
    smooth = torch.tensor([i for i, d in slopes if d is not None], dtype=torch.int64)
    d_s = torch.tensor([d for _, d in slopes if d is not None], dtype=torch.float64)
    g_s = gradient[smooth]
    errors = [(_ratio((g_s - d_s).norm(), max(d_s.norm(), g_s.norm()), fd.noise * math.sqrt(len(d_s))),
               _worst_coordinate(g_s, d_s, smooth, where) if len(d_s) else "")]
    along: list[tuple[float, float]] = []
    for k, v in enumerate(used):
        what_v = "the gradient's own direction" if k == 0 and gradient.norm() > 0 else f"random direction {k}"
        gv, dv = float(gradient @ v), fd.slope(v, what_v)
        if dv is not None:
            along.append((gv, dv))
            errors.append((_ratio(abs(gv - dv), max(abs(gv), abs(dv)), fd.noise),
                           f"along {what_v}: gradient·v = {gv:.6g}, finite difference {dv:.6g}"))
    approximation_error = None
    if held is not None and gradient.norm() > 0:
        v = gradient / gradient.norm()
        true = Differences(lambda point: outer.objective(unflat(point)), start, outer.precision).slope(v, "")
        if true is not None:
            approximation_error = _ratio(abs(float(gradient @ v) - true), max(abs(float(gradient @ v)), abs(true)))
    compared = len(picked) + len(used)
    name = backend and f" of backend `{backend}`"
    if len(fd.skipped) > compared // 2:
        raise NotApplicable(f"{what}: the objective{name} is not differentiable at the tiny instance's point: along "
                            f"{len(fd.skipped)} of {compared} directions it jumps or bends within the finite-difference "
                            f"step (skipped: {_listed(fd.skipped)})")
    skipped = f"; skipped where not differentiable: {_listed(fd.skipped)}" if fd.skipped else ""
    flat = d_s.norm() <= fd.noise * math.sqrt(len(d_s)) and all(abs(dv) <= fd.noise for _, dv in along)
    if flat and g_s.norm() == 0 and all(gv == 0 for gv, _ in along):
        raise HypergradientMismatch(
            f"{what}: the objective does not depend on the learned tensors: the gradient{name} and the central "
            f"finite differences of its objective are zero (within rounding) at all {len(d_s)} coordinates and {len(along)} "
            f"directions compared (float64, {dim} learned coordinates{skipped}). A task, distance or inner "
            "procedure that detaches the synthetic data from its value causes this", math.nan, tol)
    error, worst = max(errors, key=lambda e: e[0])
    report = GradientReport(backend, error, tol, dim, len(d_s), len(along), outer.stochastic, outer.samples, worst,
                            len(fd.skipped), tuple(fd.skipped), outer.approximation if held is not None else "",
                            approximation_error)
    if not error <= tol:
        kind = f"the zero-order estimate (M = {outer.samples} directions)" if outer.stochastic else "the outer gradient"
        held_text = f" as the backend states it ({outer.approximation})" if held is not None else ""
        raise HypergradientMismatch(
            f"{what}: {kind}{name} differs from central finite differences of its objective{held_text}: relative "
            f"error {error:.3g} > rtol {tol:.3g} (float64, {dim} learned coordinates, {len(d_s)} compared, "
            f"{len(along)} directions{skipped}); worst {worst}. A custom task, distance, risk or inner procedure "
            "whose backward pass does not match its forward pass causes this", error, tol)
    return report


class Differences:
    """Central differences of ``objective`` (a function of a flat float64 point) at ``start``, with the step
    h = ε^(1/3) (ε: the objective's relative ``precision``), halved where the one-sided differences disagree; the
    places where that gap does not shrink are recorded in ``skipped``."""

    def __init__(self, objective: Callable[[Any], float], start: Any, precision: float) -> None:
        self.objective, self.start = objective, start
        eps = max(precision, 1e-16)
        self.h = eps ** (1 / 3)
        self.f0 = objective(start)
        #: The rounding noise of a one-sided difference with step h (a difference below it is not measured).
        self.noise = 10 * eps * max(abs(self.f0), 1.0) / self.h
        self.skipped: list[str] = []

    def sides(self, v: Any, h: float) -> tuple[float, float, float]:
        """(forward, backward, central) differences along ``v`` with step ``h``."""
        up, down = self.objective(self.start + h * v), self.objective(self.start - h * v)
        return (up - self.f0) / h, (self.f0 - down) / h, (up - down) / (2 * h)

    def slope(self, v: Any, where: str) -> float | None:
        """The central difference along ``v``; None (and ``where`` recorded) where the objective is not
        differentiable: the gap between the one-sided differences does not shrink about 2x when h halves, as it
        does on a smooth objective (a ReLU switching inside the inner training: no derivative to compare)."""
        forward, backward, central = self.sides(v, self.h)
        gap = abs(forward - backward)
        if gap <= 0.01 * max(abs(forward), abs(backward)) + self.noise:
            return central
        forward, backward, central = self.sides(v, self.h / 2)
        if abs(forward - backward) > KINK_SHRINK * gap + 2 * self.noise:
            self.skipped.append(where)
            return None
        return central


def zero_order_rtol(samples: int) -> float:
    """5√(2/M), the tolerance of a zero-order estimate from M = ``samples`` directions; ``ValueError`` where it
    exceeds :data:`ZERO_ORDER_MAX_RTOL` (the check could not catch an estimate off by a factor 2)."""
    tol = 5 * math.sqrt(2 / samples)
    if tol > ZERO_ORDER_MAX_RTOL:
        least = math.ceil(2 * (5 / ZERO_ORDER_MAX_RTOL) ** 2)
        raise ValueError(f"samples = {samples} directions give the zero-order check a tolerance 5√(2/M) = {tol:.2f}, "
                         f"too loose to catch an estimate off by a factor 2: use samples >= {least} (or the default)")
    return tol


def tiny(spec: Spec, samples: int | None = None) -> Any:
    """The tiny instance of ``spec``: at smoke size, one synthetic sample per class (or as many in total as there
    are classes), real batches of at most :data:`REAL_BATCH` per class; for zero-order, σ =
    :data:`ZERO_ORDER_SIGMA` and M = ``samples`` orthogonal directions (default: whole blocks of d, at least
    :data:`ZERO_ORDER_SAMPLES` and 4d), evaluated in chunks. It must compile like the original (same backend and
    facts)."""
    from ddspec.spec.loading import load

    problem = load(spec)
    before = compiled(problem)
    small = problem.shrunk()
    info = problem.data.describe()
    strata = max(info.num_classes, 1)
    synthetic = small.synthetic.at_most_one_per_stratum(strata)
    optimize = small.optimize.with_real_batch_at_most(REAL_BATCH)
    if before.analysis.has("optimize:zero_order"):
        n = sum(synthetic.counts(strata))
        d = n * math.prod(info.input_shape) + (n * info.num_outputs if synthetic.learn_labels else 0)
        optimize = optimize.model_copy(update={
            "samples": samples or d * math.ceil(max(4 * d, ZERO_ORDER_SAMPLES) / d), "directions": "orthogonal",
            "sigma": ZERO_ORDER_SIGMA, "chunk": min(optimize.chunk or 512, 512)})
    changed = load(small.model_copy(update={"synthetic": synthetic, "optimize": optimize}))
    return same_problem(spec, before, changed, "as a tiny instance")


@contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """torch's default dtype set to ``dtype`` inside (e.g. float64 for ground-truth comparisons)."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _ratio(num: Any, den: Any, floor: float = 0.0) -> float:
    """num / den, 0 where the difference ``num`` is within the finite differences' rounding noise ``floor``."""
    num, den = float(num), float(den)
    return 0.0 if num <= floor else num / den if den > 0 else math.inf


def _listed(places: list[str], most: int = 5) -> str:
    more = f" and {len(places) - most} more" if len(places) > most else ""
    return ", ".join(places[:most]) + more


def _places(names: list[str], shapes: list[Any]) -> list[str]:
    """The name of every flat coordinate: ``tensor[i, j, ...]``."""
    import itertools

    return [f"{n}[{', '.join(map(str, idx))}]" for n, s in zip(names, shapes)
            for idx in itertools.product(*(range(k) for k in s))]


def _worst_coordinate(g: Any, fd: Any, picked: Any, where: list[str]) -> str:
    k = int((g - fd).abs().argmax())
    return f"coordinate {where[int(picked[k])]}: gradient {float(g[k]):.6g}, finite difference {float(fd[k]):.6g}"
