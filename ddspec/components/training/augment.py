"""Differentiable Siamese augmentation (DSA): one random draw per call, shared by the whole batch.

Calling ``Augment(spec, ndim)(x, seed)`` on a real batch and on a synthetic batch with the same
``seed`` applies the same transformation to both (DSA's Siamese trick), and the result is
differentiable w.r.t. ``x``, so matching losses backpropagate to the synthetic data.

Geometric ops act on normalized coordinates p ∈ [−1, 1]^d (``F.affine_grid`` convention,
``align_corners=False``): out(p) = x(A p) with bilinear interpolation and zero padding, where
A is the product, in ``spec.ops`` order, of the op matrices below (content moves as stated):

- ``crop`` (2-D) / ``shift`` (1-D): content translated by t·size, t ~ U[−crop, crop] per axis;
  A = [I | −2t].
- ``scale``: content scaled by f ~ U[1 − scale, 1 + scale] (isotropic in 2-D); A = diag(1/f).
- ``rotate`` (2-D): content rotated by α ~ U[−rotate, rotate] degrees about the centre, in pixel
  coordinates (so non-square images are not sheared); A = D R(α) D⁻¹, D = diag(1/W, 1/H).
- ``noise``: x + ε, ε ~ N(0, noise²) i.i.d. per element (so per sample), drawn from the same generator.

Consecutive geometric ops are composed into one matrix and resampled once. 1-D inputs N×C×L are
viewed as N×C×1×L. Parameters are drawn on the CPU, so a seed means the same draw on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ddspec.spec.optimize import AugmentationSpec

#: (op name, drawn values) in application order.
Params = list[tuple[str, tuple[float, ...]]]

OPS_BY_NDIM: dict[int, tuple[str, ...]] = {1: ("shift", "scale", "noise"), 2: ("crop", "scale", "rotate", "noise")}


class Augment:
    """DSA augmentation for inputs with ``ndim`` spatial dimensions (1: N×C×L, 2: N×C×H×W).

    ``spec.enabled`` False → identity; None (backend's choice) is treated as on, since a backend
    that builds an :class:`Augment` has chosen to augment.
    """

    def __init__(self, spec: AugmentationSpec, ndim: int) -> None:
        if ndim not in OPS_BY_NDIM:
            raise ValueError(f"augmentation supports 1 or 2 spatial dimensions, got {ndim}")
        self.spec = spec
        self.ndim = ndim
        self.ops = [op for op in spec.ops if op in OPS_BY_NDIM[ndim]]

    @property
    def active(self) -> bool:
        return self.spec.enabled is not False and bool(self.ops)

    def params(self, seed: int) -> Params:
        """The per-call parameters ``__call__`` draws for ``seed`` (``noise`` has none: its ε is drawn after)."""
        return self._draw(torch.Generator().manual_seed(seed))

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        if not self.active:
            return x
        if x.dim() != self.ndim + 2:
            raise ValueError(f"expected a batch with {self.ndim} spatial dims, got shape {tuple(x.shape)}")
        gen = torch.Generator().manual_seed(seed)
        params = self._draw(gen)
        theta: torch.Tensor | None = None
        for op, values in params:
            if op == "noise":
                x = self.warp(x, theta)
                theta = None
                x = x + self.spec.noise * torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
            else:
                step = self.matrix(op, values, x.shape[2:])
                theta = step if theta is None else theta @ step
        return self.warp(x, theta)

    def _draw(self, gen: torch.Generator) -> Params:
        def uniform(bound: float) -> float:
            return float((2 * torch.rand((), generator=gen, dtype=torch.float64) - 1) * bound)

        draws = {
            "crop": lambda: (uniform(self.spec.crop), uniform(self.spec.crop)),
            "shift": lambda: (uniform(self.spec.crop),),
            "scale": lambda: (1 + uniform(self.spec.scale),),
            "rotate": lambda: (uniform(self.spec.rotate),),
            "noise": lambda: (),
        }
        return [(op, draws[op]()) for op in self.ops]

    def matrix(self, op: str, values: tuple[float, ...], size: torch.Size) -> torch.Tensor:
        """The 3×3 homogeneous matrix A of one geometric op (sampling coordinates (x, y, 1))."""
        a = torch.eye(3, dtype=torch.float64)
        if op in ("crop", "shift"):
            a[: len(values), 2] = -2 * torch.tensor(values, dtype=torch.float64)
        elif op == "scale":
            a[0, 0] = 1 / values[0]
            if self.ndim == 2:
                a[1, 1] = 1 / values[0]
        else:  # rotate
            height, width = size
            angle = math.radians(values[0])
            a[0, :2] = torch.tensor([math.cos(angle), -math.sin(angle) * height / width])
            a[1, :2] = torch.tensor([math.sin(angle) * width / height, math.cos(angle)])
        return a

    def warp(self, x: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
        """out(p) = x(theta p), bilinear, zero padding; identity when no geometric op is pending."""
        if theta is None:
            return x
        img = x.unsqueeze(2) if self.ndim == 1 else x
        mat = theta[:2].to(dtype=img.dtype, device=img.device).expand(img.shape[0], 2, 3)
        grid = F.affine_grid(mat, list(img.shape), align_corners=False)
        out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.squeeze(2) if self.ndim == 1 else out
