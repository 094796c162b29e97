"""Adversarial evaluation (the builder of the ``adversarial`` metric): robust accuracy of a trained model
under L∞ and L2 perturbations in the raw input space, from an own PGD and a Square-style random search.

Threat model. Each attacked test sample x (label y) may move to any x' with ‖x' − x‖ ≤ ε·σ and lo ≤ x' ≤ hi,
where σ is the global standard deviation of the raw training inputs (population std over every value) and
[lo, hi] the metric's ``box``, widened per coordinate to contain x (so x itself is always feasible). The
sample is *broken* at ε when some attack finds a feasible x' with argmax_k f(x')_k ≠ y; the robust accuracy
at ε is the fraction of attacked samples that are classified correctly and not broken. A sample broken at ε
counts as broken at every larger ε (x' lies in the larger ball too), so the robust accuracy never increases
with ε; ε = 0 is the clean accuracy.

PGD (Madry et al. 2018): x⁰ = x for the first run of each loss, x⁰ = Π(x + u) for every further restart, u
uniform in the ball (L∞: per coordinate in [−ε, ε]; L2: a Gaussian direction, radius ε·U^{1/d}). (The first
run starts at x because from a random start the L2 iterates turn towards the steepest direction only slowly
— the rescaling onto the sphere keeps the random component — and miss the exact worst case of a linear
model by a few samples in a hundred; the random restarts add diversity on curved models.) x^{t+1} = Π(x^t + α·s(∇ₓℓ(x^t))), s = sign for L∞, g/‖g‖₂ for L2, α = step_size
· ε / steps; a sample is broken as soon as an iterate is misclassified (that iterate is kept). Π: for L∞
the exact projection onto ball ∩ box (a clamp per coordinate); for L2 the rescaling onto the ball, then the
clamp to the box (feasible, because the box contains x and the clamp only shrinks |δ_i|; not the exact
Euclidean projection onto the intersection). Losses ℓ: ``ce`` (cross-entropy) and ``dlr`` (Croce & Hein
2020), −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e-12) with z_π the sorted logits, or for two classes the
plain margin −(z_y − z_j); then the targeted margin z_t − z_y (the CW loss) for t each of the ``targets``
classes with the highest clean logits after y's (on a linear model, PGD on it reaches the exact worst case
against t). Each (loss, restart) runs on the samples still unbroken.

Square-style random search (Andriushchenko et al. 2020; black box: outputs only), on the margin
m(x') = z_y − max_{j≠y} z_j: a candidate is kept when it lowers m, the sample is broken when it is
misclassified; one model evaluation per query. A query changes a *window* of coordinates: a square of side
⌈√(p·H·W)⌉ on C x H x W inputs, a segment of ⌈p·L⌉ positions on C x L inputs, ⌈p·d⌉ random coordinates on
any other input; p follows the paper's schedule (p_init = 0.05 for L∞, 0.1 for L2, halved at fractions
0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8 of the budget). L∞: start at x + ε·s (random signs per
coordinate); a query sets the window to x ± ε, one sign per channel on spatial inputs, per coordinate on
flat ones. L2 (a simpler random search than the paper's paired-window update): start on the sphere
‖δ‖ = ε (a Gaussian direction); a query adds a Gaussian step of norm ε supported on the window, then Π.

Randomness comes from one CPU ``torch.Generator`` seeded with the metric's ``seed`` (never the global RNG);
the model is put in eval mode and only input gradients are taken (``torch.autograd.grad``), so parameters
accumulate no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ddspec.components.data.base import Dataset
from ddspec.errors import Finding, InternalError, RunError
from ddspec.evaluate.metrics import Metric, Scored

Model = Callable[[torch.Tensor], torch.Tensor]
#: Per-coordinate bounds (lo, hi) of x + δ, each the shape of x; None: unbounded.
Bounds = tuple[torch.Tensor, torch.Tensor] | None

#: Square's schedule: p is halved after each of these fractions (in 1/10000) of the query budget.
SQUARE_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SQUARE_P_INIT = {"linf": 0.05, "l2": 0.1}


def _failure(message: str, fix: str) -> RunError:
    return RunError([Finding("EVAL_ADVERSARIAL", "evaluate.metrics", message, fix)])


# -- geometry ------------------------------------------------------------------------------------
def norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """‖δ_i‖ per row: the largest |coordinate| for ``linf``, the Euclidean norm for ``l2``."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _rows(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-row vector shaped to broadcast against ``like`` (N x ...)."""
    return values.reshape(-1, *[1] * (like.dim() - 1))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, box: Bounds) -> torch.Tensor:
    """Π: x + δ with δ clamped to [−ε, ε] (``linf``) or rescaled by min(1, ε/‖δ‖₂) (``l2``), then clamped to the box."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * _rows((eps / norms(delta, "l2").clamp_min(1e-30)).clamp(max=1.0), delta)
    out = x + delta
    return out if box is None else torch.minimum(torch.maximum(out, box[0]), box[1])


def bounds(box: Any, x: torch.Tensor, value_range: tuple[float, float]) -> Bounds:
    """The per-coordinate box of ``x``: ``"auto"`` → ``value_range`` (the training inputs' min and max),
    (lo, hi) as given, None → unbounded; widened to contain x."""
    if box is None:
        return None
    lo, hi = value_range if box == "auto" else box
    return torch.clamp(x, max=lo), torch.clamp(x, min=hi)


def _uniform_ball(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A random δ uniform in the ε-ball of ``norm`` (one per row of x)."""
    if norm == "linf":
        return ((2 * torch.rand(x.shape, generator=generator, dtype=x.dtype) - 1) * eps).to(x.device)
    direction = _unit(torch.randn(x.shape, generator=generator, dtype=x.dtype))
    radius = torch.rand(len(x), generator=generator, dtype=x.dtype) ** (1.0 / x[0].numel())
    return (eps * _rows(radius, direction) * direction).to(x.device)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """v_i / ‖v_i‖₂ per row (0 where v_i = 0)."""
    return v / _rows(norms(v, "l2").clamp_min(1e-30), v)


# -- losses ----------------------------------------------------------------------------------------
def margin(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y − max_{j≠y} z_j per row (negative: misclassified)."""
    others = z.scatter(1, y[:, None], float("-inf"))
    return z.gather(1, y[:, None])[:, 0] - others.amax(1)


def dlr(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """−(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e-12) for K ≥ 3 classes, −margin for K = 2 (per row)."""
    if z.shape[1] < 3:
        return -margin(z, y)
    top = z.topk(3, dim=1).values
    return -margin(z, y) / (top[:, 0] - top[:, 2] + 1e-12)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": lambda z, y: F.cross_entropy(z, y, reduction="none"),
    "dlr": dlr,
}


def _wrong(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return z.argmax(1) != y


# -- attacks ---------------------------------------------------------------------------------------
def targeted(z0: torch.Tensor, y: torch.Tensor, rank: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The targeted margin loss z_t − z_y per row, t the class of the (``rank`` + 1)-th highest clean logit
    z0 other than y's (the CW loss; on a linear model its PGD reaches the exact worst case against t)."""
    t = z0.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)[:, rank : rank + 1]
    return lambda z, y: z.gather(1, t)[:, 0] - z.gather(1, y[:, None])[:, 0]


def pgd(
    model: Model, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, *, steps: int, step_size: float,
    loss: str | int, box: Bounds, generator: torch.Generator, random_start: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One PGD run (module docstring), from x or a random start, on ``loss``: a name of LOSSES, or the rank of
    the target class of :func:`targeted`. Returns (broken per row, the misclassified iterate of a broken row, the
    last iterate of the others)."""
    alpha = step_size * eps / steps
    if isinstance(loss, int):
        with torch.no_grad():
            objective = targeted(model(x), y, loss)
    else:
        objective = LOSSES[loss]
    x_adv = project(x + _uniform_ball(x, eps, norm, generator), x, eps, norm, box) if random_start else x.clone()
    broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    found = x_adv.clone()
    for step in range(steps + 1):
        x_adv = x_adv.detach().requires_grad_(True)
        z = model(x_adv)
        newly = _wrong(z, y) & ~broken
        found[newly] = x_adv.detach()[newly]
        broken |= newly
        if step == steps or bool(broken.all()):
            break
        if not z.requires_grad:
            raise _failure("the evaluated model's outputs have no gradient with respect to its inputs, so PGD "
                           "cannot run", "evaluate differentiable networks (evaluate.models), or drop adversarial")
        (grad,) = torch.autograd.grad(objective(z, y).sum(), x_adv)
        step_dir = grad.sign() if norm == "linf" else _unit(grad)
        x_adv = project(x_adv.detach() + alpha * step_dir, x, eps, norm, box)
    found[~broken] = x_adv.detach()[~broken]
    return broken, found


def _window(shape: torch.Size, p: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """The coordinates one Square query changes, n x shape (bool): a square on C x H x W, a segment on C x L,
    ⌈p·d⌉ random coordinates otherwise (module docstring)."""
    if len(shape) in (2, 3):
        sizes = shape[1:]
        side = max(1, min(min(sizes), math.ceil((p * math.prod(sizes)) ** (1 / len(sizes)))))
        mask = torch.ones(n, *sizes, dtype=torch.bool)
        for axis, size in enumerate(sizes):
            start = torch.randint(0, size - side + 1, (n,), generator=generator)
            pos = torch.arange(size).reshape(1, *[-1 if a == axis else 1 for a in range(len(sizes))])
            start = start.reshape(-1, *[1] * len(sizes))
            mask &= (pos >= start) & (pos < start + side)
        return mask[:, None].expand(n, *shape)
    d = math.prod(shape)
    ranks = torch.rand(n, d, generator=generator).argsort(1).argsort(1)
    return (ranks < max(1, min(d, math.ceil(p * d)))).reshape(n, *shape)


def _signs(shape: torch.Size, n: int, generator: torch.Generator, per_channel: bool) -> torch.Tensor:
    """Random ±1, n x shape: one per channel on spatial inputs when ``per_channel``, else one per coordinate."""
    drawn = (n, shape[0], *[1] * (len(shape) - 1)) if per_channel and len(shape) in (2, 3) else (n, *shape)
    return (2 * torch.randint(0, 2, drawn, generator=generator) - 1).expand(n, *shape)


def square_p(query: int, queries: int, p_init: float) -> float:
    """The fraction p of coordinates a query changes: ``p_init`` halved at each step of SQUARE_SCHEDULE passed."""
    progress = int(query / queries * 10000)
    return p_init / 2 ** sum(progress > b for b in SQUARE_SCHEDULE)


def square(
    model: Model, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, *, queries: int, box: Bounds,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Square-style random search (module docstring), ``queries`` model evaluations per row: (broken per
    row, the misclassified point of a broken row, the last accepted point of the others)."""
    shape, n = x.shape[1:], len(x)

    def draw(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=x.device, dtype=x.dtype)

    with torch.no_grad():
        if norm == "linf":
            start = eps * draw(_signs(shape, n, generator, per_channel=False))
        else:
            start = eps * _unit(draw(torch.randn(x.shape, generator=generator, dtype=x.dtype)))
        x_adv = project(x + start, x, eps, norm, box)
        z = model(x_adv)
        best, broken = margin(z, y), _wrong(z, y)
        for query in range(1, queries):
            active = torch.nonzero(~broken).flatten()
            if not len(active):
                break
            p = square_p(query, queries, SQUARE_P_INIT[norm])
            mask = draw(_window(shape, p, len(active), generator)).bool()
            current, origin = x_adv[active], x[active]
            if norm == "linf":
                signs = draw(_signs(shape, len(active), generator, per_channel=True))
                candidate = torch.where(mask, origin + eps * signs, current)
            else:
                noise = draw(torch.randn((len(active), *shape), generator=generator, dtype=x.dtype)) * mask
                candidate = current + eps * _unit(noise)
            sub_box = None if box is None else (box[0][active], box[1][active])
            candidate = project(candidate, origin, eps, norm, sub_box)
            z = model(candidate)
            value, wrong = margin(z, y[active]), _wrong(z, y[active])
            keep = (value < best[active]) | wrong
            x_adv[active[keep]] = candidate[keep]
            best[active[keep]] = value[keep]
            broken[active[wrong]] = True
    return broken, x_adv


# -- robust accuracy -------------------------------------------------------------------------------
@dataclass
class Robustness:
    """The outcome of every attack on n samples; per norm and ε (in std units, ascending), boolean vectors
    nested over ε (broken at ε ⇒ broken at every larger ε)."""

    clean: torch.Tensor
    pgd: dict[str, dict[float, torch.Tensor]] = field(default_factory=dict)
    square: dict[str, dict[float, torch.Tensor]] = field(default_factory=dict)
    #: Per norm and ε, a feasible point per sample: the misclassifying one found for a broken sample, else x.
    points: dict[str, dict[float, torch.Tensor]] = field(default_factory=dict)

    def broken(self, norm: str, eps: float) -> torch.Tensor:
        """Broken by any attack at ε (or a smaller ε)."""
        out = self.pgd[norm][eps]
        return out | self.square[norm][eps] if norm in self.square else out

    def robust(self, norm: str, eps: float) -> float:
        """(1/n) Σ_i 1[x_i classified correctly and not broken at ε]."""
        return float((self.clean & ~self.broken(norm, eps)).double().mean())

    def accuracy(self) -> float:
        return float(self.clean.double().mean())


def attack(
    model: Model, x: torch.Tensor, y: torch.Tensor, spec: Any, scale: float, box: Bounds, keep_points: bool = False,
) -> Robustness:
    """Run the attacks of ``spec`` (an :class:`~ddspec.spec.evaluate.AdversarialMetric`) on (x, y), radii
    ε·``scale`` in raw units; per norm, ε ascending, PGD attacks only the samples PGD has not broken at a
    smaller ε, Square only those Square has not (so both can be compared per ε). ``keep_points`` records
    :attr:`Robustness.points`. The model is put in eval mode (and back)."""
    training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        logits = model(x)
        result, classes = Robustness(~_wrong(logits, y)), logits.shape[1]
    try:
        for norm in spec.norms:
            families = {"pgd": result.pgd.setdefault(norm, {})}
            if spec.square is not None:
                families["square"] = result.square.setdefault(norm, {})
            last = {name: ~result.clean for name in families}
            points = x.clone()
            for eps in spec.eps(norm):
                radius = eps * scale
                for name, record in families.items():
                    broken = last[name].clone()
                    for run in _runs(spec, name, classes):
                        todo = torch.nonzero(~broken).flatten()
                        if radius == 0 or not len(todo):
                            break
                        rows = None if box is None else (box[0][todo], box[1][todo])
                        hit, found = run(model, x[todo], y[todo], radius, norm, rows, generator)
                        broken[todo[hit]] = True
                        points[todo[hit]] = found[hit]
                    record[eps] = last[name] = broken
                if keep_points:
                    result.points.setdefault(norm, {})[eps] = points.clone()
    finally:
        if training:
            model.train()
    return result


def _runs(spec: Any, family: str, classes: int) -> list[Callable[..., tuple[torch.Tensor, torch.Tensor]]]:
    """The attack runs of ``family`` in order: PGD per loss (the names of ``losses``, then the ranks of the
    ``targets`` targeted runs that exist among the other classes) and restart (the first from x, the others
    from random starts), or the one Square run."""
    if family == "square":
        return [lambda m, x, y, eps, norm, box, g: square(m, x, y, eps, norm, queries=spec.square.queries,
                                                           box=box, generator=g)]
    return [
        lambda m, x, y, eps, norm, box, g, loss=loss, restart=restart: pgd(
            m, x, y, eps, norm, steps=spec.steps, step_size=spec.step_size, loss=loss, box=box, generator=g,
            random_start=restart > 0)
        for loss in [*spec.losses, *range(min(spec.targets, classes - 1))] for restart in range(spec.restarts)
    ]


def eps_key(eps: float) -> str:
    """ε as a key of ``metrics.json`` (``format(ε, "g")``: 0.1 → "0.1", 1.0 → "1")."""
    return format(eps, "g")


def attacked_rows(n: int, samples: int, seed: int) -> torch.Tensor:
    """The attacked test rows: all n when n ≤ ``samples``, else ``samples`` rows drawn without replacement by
    a CPU generator seeded with ``seed`` (sorted)."""
    if n <= samples:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples].sort().values


def summarize(result: Robustness, spec: Any) -> Scored:
    """The metric of one model: value = robust accuracy at the middle ε (ε[n // 2]) of the first norm; figures
    ``{"clean": acc, <norm>: {<ε>: robust}}``; details per norm and ε: ``counts`` (attacked samples, correct
    ones, PGD / Square / only-Square / total breaks among the correct ones) and ``square_beats_pgd``.
    InternalError when a robust accuracy exceeds the clean one or increases with ε (impossible by construction)."""
    clean = result.accuracy()
    figures: dict[str, Any] = {"clean": clean}
    counts: dict[str, Any] = {}
    flags: dict[str, Any] = {}
    for norm in spec.norms:
        figures[norm], counts[norm], flags[norm] = {}, {}, {}
        previous = clean
        for eps in spec.eps(norm):
            robust = result.robust(norm, eps)
            if robust > previous:
                raise InternalError([Finding(
                    "INTERNAL", "evaluate.metrics", f"adversarial: robust accuracy {robust} at {norm} ε = {eps} "
                    f"exceeds {previous} (clean, or a smaller ε)", "report it: the attacks' nesting is broken")])
            previous = robust
            by_pgd = result.pgd[norm][eps] & result.clean
            by_square = result.square[norm][eps] & result.clean if norm in result.square else torch.zeros_like(by_pgd)
            key = eps_key(eps)
            figures[norm][key] = robust
            counts[norm][key] = {
                "attacked": len(result.clean), "correct": int(result.clean.sum()), "pgd": int(by_pgd.sum()),
                "square": int(by_square.sum()), "square_only": int((by_square & ~by_pgd).sum()),
                "broken": int((by_pgd | by_square).sum()),
            }
            flags[norm][key] = counts[norm][key]["square_only"] > 0
    first = spec.norms[0]
    grid = spec.eps(first)
    value = figures[first][eps_key(grid[len(grid) // 2])]
    return Scored(value, figures, {"counts": counts, "square_beats_pgd": flags})


class Adversarial(Metric):
    """Robust accuracy of the trained model under the attacks of its spec (module docstring)."""

    def __call__(self, outputs: torch.Tensor, data: Dataset) -> float:
        raise NotImplementedError("adversarial needs the model: the protocol calls of_model")

    def of_model(self, model: Model, data: Dataset, device: torch.device | str) -> Scored:
        """Attack ``samples`` test rows (:func:`attacked_rows`) with radii ε·σ, σ the training inputs' global std."""
        if data.num_classes == 0:
            raise _failure("adversarial needs class targets", "drop adversarial from evaluate.metrics")
        scale = data.global_std()
        if not scale > 0:
            raise _failure("the training inputs are constant (std 0), so ε in units of their std is 0",
                           "use data whose inputs vary")
        rows = attacked_rows(len(data.x_test), self.spec.samples, self.spec.seed).to(data.x_test.device)
        x, y = data.x_test[rows].to(device), data.y_test[rows].to(device)
        box = bounds(self.spec.box, x, data.value_range())
        return summarize(attack(model, x, y, self.spec, scale, box), self.spec)
