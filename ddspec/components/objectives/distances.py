"""Matching distances (surrogates): gradient matching (DC), feature means (DM), RBF MMD².

Each returns a scalar tensor differentiable w.r.t. its (synthetic) inputs; the backends sum the
per-class values. The registered builders (``build_*``, named in :mod:`ddspec.spec.distance`) take
``(spec, ctx)`` like every distance builder (``DISTANCES.build(spec, ctx)``, ``ctx`` the run's
:class:`~ddspec.runtime.context.RunContext`; these surrogates ignore it, trajectory matching trains its experts
with it) and return the behaviour objects the matching backend calls:

- an embedding surrogate (capability ``embedding``): ``d(real_features, synthetic_features)`` over the
  rows of one class (:class:`FeatureMean`, :class:`MMD`);
- a gradient surrogate (capability ``needs_network_training``): ``d(real_gradients, synthetic_gradients)``
  over the per-parameter gradients of one class's batches (:class:`GradientMatch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

#: Added to the product of row norms in the cosine, as DC's reference code does.
COSINE_EPS = 1e-6


def _rows(g: torch.Tensor) -> torch.Tensor:
    """A gradient as rows: (out_channels, −1) for ndim ≥ 2, a single row otherwise."""
    return g.reshape(g.shape[0], -1) if g.dim() >= 2 else g.reshape(1, -1)


def gradient_match(
    g_real: Sequence[torch.Tensor], g_syn: Sequence[torch.Tensor], skip_bias_and_norm: bool = True
) -> torch.Tensor:
    """DC's distance: Σ_layers Σ_rows (1 − ⟨r, s⟩ / (‖r‖‖s‖ + 1e-6)).

    Rows are output channels (gradient reshaped to out × rest). 1-D gradients (biases, norm
    scales) contribute 0 when ``skip_bias_and_norm``, else count as one row.
    """
    if len(g_real) != len(g_syn):
        raise ValueError(f"got {len(g_real)} real and {len(g_syn)} synthetic gradients")
    terms = []
    for real, syn in zip(g_real, g_syn):
        if real.shape != syn.shape:
            raise ValueError(f"gradient shapes differ: {tuple(real.shape)} vs {tuple(syn.shape)}")
        if skip_bias_and_norm and real.dim() < 2:
            continue
        r, s = _rows(real), _rows(syn)
        cos = (r * s).sum(1) / (r.norm(dim=1) * s.norm(dim=1) + COSINE_EPS)
        terms.append((1 - cos).sum())
    if not terms:
        ref = g_syn[0] if len(g_syn) else torch.zeros(())
        return ref.new_zeros(())
    return torch.stack(terms).sum()


def feature_mean(f_real: torch.Tensor, f_syn: torch.Tensor) -> torch.Tensor:
    """DM's distance for one class: ‖mean_i φ(real_i) − mean_j φ(syn_j)‖² (features flattened)."""
    return (f_real.flatten(1).mean(0) - f_syn.flatten(1).mean(0)).pow(2).sum()


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² via ‖a‖² + ‖b‖² − 2⟨a, b⟩ (memory n·m, not n·m·d), clamped at 0."""
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def median_bandwidths(z: torch.Tensor) -> torch.Tensor:
    """σ_med × (0.5, 1, 2), σ_med = (lower) median of ‖z_i − z_j‖ over pairs i < j (detached; 1 if 0)."""
    z = z.detach()
    i, j = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
    med = _sq_dists(z, z)[i, j].sqrt().median() if len(i) else z.new_ones(())
    med = torch.where(med > 0, med, torch.ones_like(med))
    return med * torch.tensor([0.5, 1.0, 2.0], dtype=z.dtype, device=z.device)


def mmd2(f_real: torch.Tensor, f_syn: torch.Tensor, bandwidths: Sequence[float] | None = None) -> torch.Tensor:
    """Biased (V-statistic) MMD² between X = ``f_real`` (n rows) and Y = ``f_syn`` (m rows):

        MMD² = (1/n²) Σ_ij k(x_i, x_j) + (1/m²) Σ_ij k(y_i, y_j) − (2/(nm)) Σ_ij k(x_i, y_j),
        k(a, b) = Σ_σ exp(−‖a − b‖² / (2σ²)),

    σ over ``bandwidths``, or, when None, :func:`median_bandwidths` of X ∪ Y.
    """
    x, y = f_real.flatten(1), f_syn.flatten(1)
    if bandwidths is None:
        return rbf_mmd2(x, y, median_bandwidths(torch.cat([x, y])))
    return rbf_mmd2(x, y, torch.tensor(list(bandwidths), dtype=x.dtype, device=x.device))


def rbf_mmd2(x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """:func:`mmd2` of the rows of ``x`` and ``y`` with the bandwidths ``sigma`` (a 1-D tensor)."""
    inv = 1 / (2 * sigma.pow(2))

    def kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-_sq_dists(a, b)[..., None] * inv).sum(-1).mean()

    return kernel_mean(x, x) + kernel_mean(y, y) - 2 * kernel_mean(x, y)


#: A factory of context managers (``with block(): ...``).
Block = Callable[[], AbstractContextManager[None]]


class HoldsApproximation:
    """A built distance whose gradient holds a quantity of its value constant, as its spec's ``approximation()``
    states (MMD's median bandwidth). :meth:`hold` returns a factory of blocks: inside the first block the held
    quantities are computed as usual and recorded, call by call; inside every later block the calls reuse them
    in the same order, so that the distance is the function whose exact gradient the backend steps along
    (:func:`ddspec.testing.check_hypergradient` checks it against finite differences of that function)."""

    def hold(self) -> Block:
        raise NotImplementedError


@dataclass
class MMD(HoldsApproximation):
    """The embedding surrogate of ``mmd``: :func:`mmd2` of one class's features with fixed ``bandwidths``
    (None: the median heuristic, detached, so its gradient holds the bandwidths constant)."""

    bandwidths: tuple[float, ...] | None = None
    #: How σ is found from the rows of X ∪ Y when ``bandwidths`` is None (replaced inside :meth:`hold` blocks).
    median: Callable[[torch.Tensor], torch.Tensor] = field(default=median_bandwidths, repr=False, compare=False)

    def __call__(self, f_real: torch.Tensor, f_syn: torch.Tensor) -> torch.Tensor:
        if self.bandwidths is not None:
            return mmd2(f_real, f_syn, self.bandwidths)
        x, y = f_real.flatten(1), f_syn.flatten(1)
        return rbf_mmd2(x, y, self.median(torch.cat([x, y])))

    def hold(self) -> Block:
        """Blocks inside which the median bandwidths are those of the first block's calls (:class:`HoldsApproximation`)."""
        recorded: list[torch.Tensor] = []

        @contextmanager
        def block() -> Iterator[None]:
            replay = iter(list(recorded)) if recorded else None

            def median(z: torch.Tensor) -> torch.Tensor:
                if replay is None:
                    recorded.append(median_bandwidths(z))
                    return recorded[-1]
                found = next(replay, None)
                if found is None:
                    raise RuntimeError(f"MMD called more often than the {len(recorded)} times of the block that "
                                       "recorded the held bandwidths")
                return found

            self.median = median
            try:
                yield
            finally:
                self.median = median_bandwidths

        return block


@dataclass(frozen=True)
class GradientMatch:
    """The gradient surrogate of ``gradient_match``: :func:`gradient_match` of the per-parameter gradients."""

    skip_bias_and_norm: bool = True

    def __call__(self, g_real: Sequence[torch.Tensor], g_syn: Sequence[torch.Tensor]) -> torch.Tensor:
        return gradient_match(g_real, g_syn, self.skip_bias_and_norm)


@dataclass(frozen=True)
class FeatureMean:
    """The embedding surrogate of ``feature_mean``: :func:`feature_mean` of one class's features."""

    def __call__(self, f_real: torch.Tensor, f_syn: torch.Tensor) -> torch.Tensor:
        return feature_mean(f_real, f_syn)


def build_gradient_match(spec: Any, ctx: Any) -> GradientMatch:
    """The builder of ``gradient_match`` (``ctx`` unused)."""
    return GradientMatch(spec.skip_bias_and_norm)


def build_feature_mean(spec: Any, ctx: Any) -> FeatureMean:
    """The builder of ``feature_mean`` (``ctx`` unused)."""
    return FeatureMean()


def build_mmd(spec: Any, ctx: Any) -> MMD:
    """The builder of ``mmd`` (``ctx`` unused)."""
    return MMD(None if spec.bandwidths is None else tuple(spec.bandwidths))
