"""The tangent inner PINN (``train: {kind: residual, inner: tangent}``): the evaluated MLP PINN linearized in its
parameters. Checked against the true network by central finite differences in θ, the closed form against
L-BFGS on the same ridge loss, the hypergradient in the points against finite differences, and end to end."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import ddspec
from ddspec.components.pde.pinn import PinnMLP, residuals
from ddspec.components.pde.problems import Heat1d, LaplaceSquare, PdeProblem
from ddspec.components.pde.tangent import design, fit
from ddspec.errors import SpecError
from ddspec.testing import check_determinism, check_hypergradient
from tests.test_pde_backend import TINY, tiny

TANGENT = tiny(train={"kind": "residual", "inner": "tangent"})


def small(problem: PdeProblem, m: int = 10, seed: int = 0) -> tuple[PinnMLP, torch.Tensor]:
    """A width-4 depth-1 PINN (P = 29 for K = 3) at a seeded initialisation, and m random records in its box."""
    low = torch.tensor([0.0, 0.0] + [-1.5] * problem.terms, dtype=torch.float64)
    high = torch.tensor([1.0, 1.0] + [1.5] * problem.terms, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    model = PinnMLP(problem, 4, 1, low, high, generator=gen)
    return model, low + (high - low) * torch.rand(m, len(low), generator=gen, dtype=torch.float64)


def shifted(model: PinnMLP, direction: dict[str, torch.Tensor], h: float) -> dict[str, torch.Tensor]:
    """θ0 + h·direction, named as in model.named_parameters()."""
    return {f"layers.{k}": p.detach() + h * direction[k] for k, p in model.layers.named_parameters()}


@pytest.mark.parametrize("problem", [LaplaceSquare(), Heat1d()])
def test_linearization_is_the_networks_derivative_in_its_parameters(problem: PdeProblem) -> None:
    """A·v, the fitted model's values and its residual equal central finite differences of the true MLP PINN
    along the parameter direction (O(h²), float64), and the zeroth order is the network at θ0."""
    model, points = small(problem)
    fitted = fit(model, points, 1e-3)
    norm = float(torch.cat([d.reshape(-1) for d in fitted.delta.values()]).norm())
    unit = {k: d.detach() / norm for k, d in fitted.delta.items()}
    h = 1e-4
    plus, minus = shifted(model, unit, h), shifted(model, unit, -h)
    matrix, offset = design(model, points)
    flat = torch.cat([d.reshape(-1) for d in unit.values()])
    fd_residual = ((residuals(model, points, plus) - residuals(model, points, minus)) / (2 * h)).detach()
    torch.testing.assert_close(matrix @ flat, fd_residual, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(offset, residuals(model, points).detach(), rtol=1e-10, atol=1e-10)
    z, a = points[:, :2], points[:, 2:]
    state = dict(model.named_buffers())
    values = [functional_call(model, state | p, (points,)).squeeze(-1).detach() for p in (plus, minus)]
    at_zero = model(points).squeeze(-1).detach()
    torch.testing.assert_close(fitted.solution(z, a), at_zero + norm * (values[0] - values[1]) / (2 * h),
                               rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(fitted.residual(z, a), offset + norm * fd_residual, rtol=1e-6, atol=1e-9)


def test_closed_form_is_the_minimiser_of_the_ridge_loss() -> None:
    """Δ from the M x M kernel solve equals L-BFGS on (1/M)‖AΔ + r‖² + λ‖Δ‖² over the P parameters to 1e-6."""
    model, points = small(LaplaceSquare(), m=12, seed=1)
    ridge = 1e-2
    matrix, offset = design(model, points)
    closed = torch.cat([d.reshape(-1) for d in fit(model, points, ridge).delta.values()]).detach()
    matrix, offset = matrix.detach(), offset.detach()
    delta = torch.zeros(matrix.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([delta], lr=1, max_iter=5000, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (matrix @ delta + offset).square().mean() + ridge * delta.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(closed, delta.detach(), rtol=1e-6, atol=1e-6 * float(closed.abs().max()))


def test_fit_refuses_a_zero_ridge() -> None:
    model, points = small(LaplaceSquare())
    with pytest.raises(ValueError, match="ridge must be > 0"):
        fit(model, points, 0.0)


def test_hypergradient_of_the_points_matches_finite_differences() -> None:
    report = check_hypergradient(TANGENT, rtol=1e-5)
    assert report.backend == "collocation" and report.relative_error < 1e-5 and report.coordinates > 0


def test_tangent_points_run_end_to_end_and_deterministically(tmp_path) -> None:
    plan = ddspec.compile(ddspec.load(TANGENT))
    assert plan.backend == "collocation" and "closed-form tangent (linearized MLP) PINN" in plan.reason
    assert "fit of the tangent (linearized MLP) PINN (" in plan.estimate.detail
    start = ddspec.compile(ddspec.load(tiny(optimize={"kind": "select", "method": "sobol"}))).run(tmp_path / "s").x
    result = plan.run(tmp_path / "t")
    assert result.x.shape == (24, 5) and result.y.shape == (24, 0)
    assert not torch.equal(result.x, start), "the points did not move"
    check_determinism(TANGENT)


def test_findings_for_random_feature_options_with_the_tangent_model() -> None:
    notes = ddspec.compile(ddspec.load(tiny(train={"kind": "residual", "inner": "tangent", "features": 64}))).notes
    assert [(n.code, n.path, n.severity) for n in notes if n.code == "TRAIN_FEATURES_UNUSED"] == [
        ("TRAIN_FEATURES_UNUSED", "train.features", "warning")]
    assert not [n for n in ddspec.compile(ddspec.load(TANGENT)).notes if n.code == "TRAIN_FEATURES_UNUSED"]
    big = tiny(train={"kind": "residual", "inner": "tangent"}, synthetic={"total": 5000, "init": "sobol"},
               data={**TINY["data"], "train_bcs": 64})  # 64 BCs x 81 grid points > 5000 real records
    assert "TANGENT_KERNEL_LARGE" in {n.code for n in ddspec.compile(ddspec.load(big)).notes}
    with pytest.raises(SpecError, match=r"(?s)train\.inner: .*use one of: random_features or tangent"):
        ddspec.load(tiny(train={"kind": "residual", "inner": "ntk"}))
