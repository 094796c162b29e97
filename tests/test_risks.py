"""Risk measures: CVaR (sorted top-k form = Rockafellar–Uryasev form), worst case, group-CVaR; spec builders."""

from __future__ import annotations

import pydantic
import pytest
import torch

from ddspec.components.objectives.risks import cvar, group_cvar, group_cvars
from ddspec.errors import SpecError
from ddspec.registry import RISKS
from ddspec.spec.loading import load
from ddspec.spec.risk import CVaRRisk, MaxRisk, MeanRisk, WorstCaseRisk

ONE_TO_TEN = torch.arange(1.0, 11.0, dtype=torch.float64)


def ru_cvar(losses: torch.Tensor, alpha: float) -> float:
    """Rockafellar–Uryasev: min_η η + (1/(αn)) Σ (ℓ_i − η)₊; piecewise linear convex in η with breakpoints at
    the losses, so scanning η over the loss values finds the minimum."""
    k = alpha * losses.numel()
    return min(float(eta + (losses - eta).clamp(min=0).sum() / k) for eta in losses)


def grad_of(fn, losses: torch.Tensor) -> torch.Tensor:
    x = losses.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x), x)
    return g


# --- CVaR -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        (0.2, 9.5),  # (10 + 9) / 2
        (1.0, 5.5),  # the mean
        (0.25, 9.2),  # (10 + 9 + 0.5 · 8) / 2.5
        (0.3, 9.0),  # (10 + 9 + 8) / 3
        (0.05, 10.0),  # αn = 0.5 < 1: all the weight on the max
        (1e-9, 10.0),
        (0.55, (10 + 9 + 8 + 7 + 6 + 0.5 * 5) / 5.5),
    ],
)
def test_cvar_hand_computed(alpha: float, expected: float) -> None:
    assert cvar(ONE_TO_TEN, alpha).item() == pytest.approx(expected, rel=1e-12)


def test_cvar_keeps_the_upper_tail_not_the_lower() -> None:
    assert cvar(ONE_TO_TEN, 0.2).item() > ONE_TO_TEN.mean().item()
    assert cvar(-ONE_TO_TEN, 0.2).item() == pytest.approx(-1.5)


def test_cvar_is_permutation_invariant() -> None:
    gen = torch.Generator().manual_seed(0)
    losses = torch.randn(17, generator=gen, dtype=torch.float64)
    for alpha in (0.1, 0.33, 0.5, 0.9, 1.0):
        ref = cvar(losses, alpha)
        for _ in range(3):
            perm = torch.randperm(17, generator=gen)
            assert cvar(losses[perm], alpha).item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-12)


def test_cvar_equals_the_rockafellar_uryasev_minimum() -> None:
    gen = torch.Generator().manual_seed(1)
    cases = [ONE_TO_TEN, torch.randn(13, generator=gen, dtype=torch.float64),
             torch.tensor([2.0, 2.0, 2.0, 1.0, 5.0, 5.0, 0.0], dtype=torch.float64)]  # with ties
    for losses in cases:
        for alpha in (0.01, 0.1, 0.2, 0.25, 0.37, 0.5, 0.8, 0.99, 1.0):
            assert cvar(losses, alpha).item() == pytest.approx(ru_cvar(losses, alpha), rel=1e-10, abs=1e-12)


def test_cvar_between_mean_and_max_and_monotone_in_alpha() -> None:
    losses = torch.randn(23, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    values = [cvar(losses, a).item() for a in (0.01, 0.1, 0.3, 0.6, 1.0)]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(losses.max().item())
    assert values[-1] == pytest.approx(losses.mean().item())


def test_cvar_gradient_is_the_exact_weight_vector() -> None:
    perm = torch.tensor([3, 7, 0, 9, 5, 1, 8, 2, 6, 4])
    losses = ONE_TO_TEN[perm]  # 4, 8, 1, 10, 6, 2, 9, 3, 7, 5
    g = grad_of(lambda x: cvar(x, 0.25), losses)
    expected = torch.zeros(10, dtype=torch.float64)
    expected[losses == 10] = 0.4  # 1 / 2.5
    expected[losses == 9] = 0.4
    expected[losses == 8] = 0.2  # 0.5 / 2.5
    torch.testing.assert_close(g, expected)
    assert g.sum().item() == pytest.approx(1.0)


def test_cvar_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(3)
    # distinct values, separated by far more than gradcheck's eps, so the ordering never flips
    x = (torch.randperm(12, generator=gen).to(torch.float64) + 0.1 * torch.rand(12, generator=gen, dtype=torch.float64))
    for alpha in (0.25, 0.5, 1.0, 0.01):
        assert torch.autograd.gradcheck(lambda t, a=alpha: cvar(t, a), (x.clone().requires_grad_(True),))


def test_cvar_ties_share_the_weight_equally() -> None:
    losses = torch.tensor([3.0, 1.0, 3.0], dtype=torch.float64)
    g = grad_of(lambda x: cvar(x, 0.5), losses)  # k = 1.5: weights 2/3, 1/3 on the two 3s → 1/2 each
    torch.testing.assert_close(g, torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64))
    g_rev = grad_of(lambda x: cvar(x, 0.5), losses.flip(0))
    torch.testing.assert_close(g_rev, g.flip(0))


def test_cvar_in_float32_and_keeps_dtype() -> None:
    out = cvar(ONE_TO_TEN.float(), 0.25)
    assert out.dtype == torch.float32 and out.dim() == 0
    assert out.item() == pytest.approx(9.2, rel=1e-6)


def test_cvar_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="alpha"):
        cvar(ONE_TO_TEN, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        cvar(ONE_TO_TEN, 1.5)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        cvar(torch.zeros(0), 0.5)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        cvar(torch.zeros(2, 2), 0.5)


def test_cvar_ignores_neg_inf_losses_outside_the_tail() -> None:
    losses = torch.tensor([1.0, float("-inf"), 3.0], dtype=torch.float64)
    assert cvar(losses, 1 / 3).item() == 3.0


# --- group-CVaR -------------------------------------------------------------------------------------------


def small_groups() -> tuple[torch.Tensor, torch.Tensor]:
    # group 0: 1, 2, 3, 4 · group 1: 10 (one sample) · group 2: empty · group 3: 2, 6, 4
    losses = torch.tensor([1.0, 10.0, 2.0, 6.0, 3.0, 4.0, 2.0, 4.0], dtype=torch.float64)
    groups = torch.tensor([0, 1, 3, 3, 0, 0, 0, 3])
    return losses, groups


def test_group_cvars_hand_computed_with_empty_and_single_groups() -> None:
    losses, groups = small_groups()
    res = group_cvars(losses, groups, 4, 0.5)
    assert res.counts.tolist() == [4, 1, 0, 3]
    assert res.mask.tolist() == [True, True, False, True]
    assert (res.num_nonempty, res.num_empty) == (3, 1)
    # g0: k = 2 → (4 + 3)/2; g1: its loss; g3: k = 1.5 → (6 + 0.5·4)/1.5
    torch.testing.assert_close(res.nonempty(), torch.tensor([3.5, 10.0, 16 / 3], dtype=torch.float64))


def test_group_cvar_hand_computed() -> None:
    losses, groups = small_groups()
    mean_part = (3.5 + 10.0 + 16 / 3) / 3  # the empty group 2 is not averaged in
    assert group_cvar(losses, groups, 4, 0.5).item() == pytest.approx(mean_part + 10.0)
    assert group_cvar(losses, groups, 4, 0.5, mean_weight=2.0, max_weight=0.0).item() == pytest.approx(2 * mean_part)
    assert group_cvar(losses, groups, 4, 0.5, mean_weight=0.0, max_weight=0.5).item() == pytest.approx(5.0)


def test_group_cvar_one_sample_group_contributes_its_loss() -> None:
    losses, groups = small_groups()
    g = grad_of(lambda x: group_cvar(x, groups, 4, 0.5, mean_weight=1.0, max_weight=0.0), losses)
    assert g[1].item() == pytest.approx(1 / 3)  # the lone loss of group 1, weight 1 inside its group, 1/3 in the mean
    bumped = losses.clone()
    bumped[1] += 3.0
    delta = group_cvar(bumped, groups, 4, 0.5, 1.0, 0.0) - group_cvar(losses, groups, 4, 0.5, 1.0, 0.0)
    assert delta.item() == pytest.approx(1.0)


def test_group_cvar_matches_per_group_cvar_and_ru_on_random_data() -> None:
    gen = torch.Generator().manual_seed(4)
    losses = torch.randn(40, generator=gen, dtype=torch.float64).round(decimals=1)  # rounding makes ties
    groups = torch.randint(0, 7, (40,), generator=gen)
    groups[groups == 5] = 6  # group 5 empty
    for alpha in (0.1, 0.3, 0.5, 1.0):
        res = group_cvars(losses, groups, 7, alpha)
        assert res.num_empty == 1 and not res.mask[5]
        assert int(res.counts.sum()) == 40  # nothing dropped
        for g in range(7):
            if res.counts[g] > 0:
                sub = losses[groups == g]
                assert res.values[g].item() == pytest.approx(cvar(sub, alpha).item(), abs=1e-12)
                assert res.values[g].item() == pytest.approx(ru_cvar(sub, alpha), abs=1e-10)


def test_group_cvar_gradient_differs_from_the_mean_loss_gradient() -> None:
    # group 0 has many small losses, group 1 few large ones: the mean weights every sample 1/8,
    # group-CVaR puts most of the weight on the worst group
    losses = torch.tensor([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 5.0, 6.0], dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    g = grad_of(lambda x: group_cvar(x, groups, 2, 0.5), losses)
    g_mean = grad_of(lambda x: x.mean(), losses)
    # g0: k = 3 → 1/3 on 1.5, 1.4, 1.3, times 1/2 (mean over groups); g1: k = 1 → the 6, times 1/2 + 1 (max)
    expected = torch.tensor([0, 0, 0, 1 / 6, 1 / 6, 1 / 6, 0, 1.5], dtype=torch.float64)
    torch.testing.assert_close(g, expected)
    assert not torch.allclose(g, g_mean)
    assert g[groups == 1].sum() > g[groups == 0].sum()
    assert g_mean[groups == 1].sum() < g_mean[groups == 0].sum()


def test_group_cvar_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randperm(15, generator=gen).to(torch.float64) + 0.1 * torch.rand(15, generator=gen, dtype=torch.float64)
    groups = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3, 0, 1, 0, 1, 0, 0])  # group 4 empty, group 3 single
    fn = lambda t: group_cvar(t, groups, 5, 0.4, mean_weight=0.7, max_weight=0.3)
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(True),))


def test_group_cvar_single_group_is_cvar() -> None:
    groups = torch.zeros(10, dtype=torch.long)
    out = group_cvar(ONE_TO_TEN, groups, 1, 0.25, mean_weight=0.5, max_weight=0.5)
    assert out.item() == pytest.approx(9.2)


def test_group_cvar_rejects_bad_input() -> None:
    losses, groups = small_groups()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        group_cvar(losses, groups, 3, 0.5)  # id 3 out of range: an error, not a silently dropped group
    with pytest.raises(ValueError, match="one id per loss"):
        group_cvar(losses, groups[:-1], 4, 0.5)
    with pytest.raises(TypeError, match="integer"):
        group_cvar(losses, groups.double(), 4, 0.5)
    with pytest.raises(ValueError, match="non-empty group"):
        group_cvar(losses[:0], groups[:0], 4, 0.5)
    with pytest.raises(ValueError, match="mean_weight"):
        group_cvar(losses, groups, 4, 0.5, mean_weight=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        group_cvar(losses, groups, 4, 0.0)


# --- spec and builders ------------------------------------------------------------------------------------


def test_cvar_builder_from_spec() -> None:
    risk = RISKS.build(CVaRRisk(alpha=0.2))
    assert risk(ONE_TO_TEN).item() == pytest.approx(9.5)
    assert RISKS.build(CVaRRisk(alpha=0.25))(ONE_TO_TEN).item() == pytest.approx(cvar(ONE_TO_TEN, 0.25).item())
    assert RISKS.build(CVaRRisk(alpha=1.0))(ONE_TO_TEN).item() == pytest.approx(5.5)
    assert CVaRRisk().alpha == 0.8
    g = grad_of(risk, ONE_TO_TEN)
    torch.testing.assert_close(g, torch.tensor([0.0] * 8 + [0.5, 0.5], dtype=torch.float64))


def test_worst_case_and_max_and_mean_builders() -> None:
    losses = torch.tensor([0.3, 2.0, -1.0], dtype=torch.float64)
    assert RISKS.build(WorstCaseRisk())(losses).item() == 2.0
    assert RISKS.build(MaxRisk())(losses).item() == 2.0
    assert RISKS.build(MeanRisk())(losses).item() == pytest.approx(1.3 / 3)
    torch.testing.assert_close(grad_of(RISKS.build(WorstCaseRisk()), losses),
                               torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert {"mean", "max", "worst_case", "cvar"} <= set(RISKS.kinds())


def test_only_the_mean_declares_expectation() -> None:
    """Backends that average over scenarios (matching) read the capability, not the kind."""
    assert [k for k in RISKS.kinds() if "expectation" in RISKS[k].capabilities] == ["mean"]
    assert [k for k in RISKS.kinds() if "groups" in RISKS[k].capabilities] == ["group_cvar"]


def test_cvar_spec_validation() -> None:
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(pydantic.ValidationError):
            CVaRRisk(alpha=bad)
    with pytest.raises(pydantic.ValidationError):
        CVaRRisk(alpha=0.5, beta=1)
    with pytest.raises(pydantic.ValidationError):
        WorstCaseRisk(alpha=0.5)


def test_cvar_in_a_problem_spec() -> None:
    p = load({"data": {"kind": "digits"}, "risk": {"kind": "cvar", "alpha": 0.3}})
    assert isinstance(p.risk, CVaRRisk) and p.risk.alpha == 0.3
    assert isinstance(load({"data": {"kind": "digits"}, "risk": {"kind": "worst_case"}}).risk, WorstCaseRisk)
    with pytest.raises(SpecError) as info:
        load({"data": {"kind": "digits"}, "risk": {"kind": "cvar", "alpha": 2}})
    assert {(f.code, f.path) for f in info.value.findings} == {("OUT_OF_RANGE", "risk.alpha")}


def test_cvar_alpha_n_rounding_error_puts_no_weight_past_the_tail() -> None:
    # in floating point 0.55 · 100 = 55.00000000000001 and 0.29 · 100 = 28.999999999999996: still exactly 55 and 29
    losses = torch.arange(1.0, 101.0, dtype=torch.float64)
    for alpha, kept in ((0.55, 55), (0.29, 29)):
        g = grad_of(lambda x, a=alpha: cvar(x, a), losses)
        assert (g[: 100 - kept] == 0).all()
        torch.testing.assert_close(g[100 - kept :], torch.full((kept,), 1 / kept, dtype=torch.float64))


def test_over_groups_is_declared_on_every_risk_measure() -> None:
    """Matching calls ``risk.over_groups`` for any grouped risk: the base class declares it (next to ``within``),
    raising NotImplementedError that says what to implement; group_cvar's is its group distance."""
    from ddspec.components.objectives.risks import GroupCVaR, RiskMeasure, ScenarioRisk, group_distance
    from ddspec.spec.risk import GroupCVaRRisk

    assert "over_groups" in vars(RiskMeasure) and "within" in vars(RiskMeasure)

    class HalfGrouped(RiskMeasure):
        grouped = True

        def over_scenarios(self, losses: torch.Tensor) -> torch.Tensor:
            return losses.mean()

    distances, whole = torch.tensor([1.0, 3.0]), torch.tensor(2.0)
    with pytest.raises(NotImplementedError, match=r"HalfGrouped is grouped but does not define over_groups"):
        HalfGrouped().over_groups(distances, whole)
    with pytest.raises(NotImplementedError, match=r"not grouped"):
        ScenarioRisk(lambda losses: losses.mean()).over_groups(distances, whole)
    spec = GroupCVaRRisk(alpha=1.0)
    assert torch.equal(GroupCVaR(spec).over_groups(distances, whole), group_distance(distances, whole, spec))
