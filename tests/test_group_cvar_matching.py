"""Risk ``group_cvar`` in the matching backend: grouping, the network-update loss and its gradient, the grouped
DM distance, end-to-end runs, and what the compiler refuses."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ddspec
import ddspec.components.objectives.groups as groups_module
from ddspec.backends.base import Distilled
from ddspec.backends.matching import MatchingBackend
from ddspec.backends.matching import run as loop
from ddspec.components.objectives.groups import (
    attribute_groups,
    kmeans_groups,
    nearest_ids,
    nearest_synthetic_groups,
    synthetic_centres,
)
from ddspec.components.objectives.risks import cvar, group_distance, group_objective
from ddspec.errors import BackendUnavailableError, SpecError, WellPosednessError
from ddspec.registry import DATA, GROUPS, RISKS
from ddspec.runtime.context import RunContext
from ddspec.spec.risk import AttributeGroups, GroupCVaRRisk, KMeansGroups, NearestSyntheticGroups

BACKEND = MatchingBackend()
NEAREST = {"kind": "group_cvar", "groups": {"kind": "nearest_synthetic"}}


pytestmark = pytest.mark.usefixtures("one_thread")


def with_(raw: dict[str, Any], **sections: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for key, value in sections.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) and "kind" not in value else value
    return out


def context(raw: dict[str, Any], out: Path) -> RunContext:
    plan = ddspec.compile(ddspec.load(raw))
    p = plan.problem
    torch.manual_seed(p.runtime.seed)
    generator = torch.Generator().manual_seed(p.runtime.seed)
    return RunContext(p, plan.analysis, DATA.build(p.data), torch.device("cpu"), out, False, generator)


def distill(raw: dict[str, Any], out: Path) -> Distilled:
    return BACKEND.run(context(raw, out))


# -- grouping ---------------------------------------------------------------------------------------
def test_nearest_synthetic_groups_by_own_class() -> None:
    syn = [torch.tensor([[0.0, 0.0], [10.0, 0.0]]), torch.tensor([[0.0, 10.0]])]
    real = torch.tensor([[1.0, 0.0], [9.0, 1.0], [0.0, 9.0], [10.0, 0.0], [5.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 0])
    ids, n = nearest_synthetic_groups(real, labels, syn, max_per_class=10)
    # G = 2 groups per class; (10, 0) of class 1 joins class 1's only point, not class 0's (10, 0);
    # (5, 0) is a tie between class 0's points and goes to the lower index.
    assert n == 4 and ids.dtype == torch.int64
    assert ids.tolist() == [0, 1, 2, 2, 0]


def test_nearest_synthetic_caps_the_groups_with_kmeans_centres() -> None:
    centres = torch.arange(10.0)[:, None] * 100
    syn = torch.cat([centres, centres + 1])  # 20 points in 10 tight pairs
    got = synthetic_centres(syn, 10)
    assert got.shape == (10, 1)
    torch.testing.assert_close(got.sort(0).values, centres + 0.5)
    torch.testing.assert_close(synthetic_centres(syn, 10), got, rtol=0, atol=0)  # deterministic
    real = torch.tensor([[1.0], [299.0], [901.0]])
    ids, n = nearest_synthetic_groups(real, torch.zeros(3, dtype=torch.long), [syn], max_per_class=10)
    assert n == 10 and ids.max() < 10
    assert [float(got[i]) for i in ids] == [0.5, 300.5, 900.5]
    assert nearest_ids(torch.tensor([[2.0]]), torch.tensor([[1.0], [3.0]])).item() == 0


def test_kmeans_groups_are_deterministic_per_class() -> None:
    gen = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(6, 2, generator=gen) * 0.1 + torch.tensor(m) for m in ([0, 0], [5, 5])] * 2)
    labels = torch.tensor([0] * 12 + [1] * 12)
    ids, n = kmeans_groups(blobs, labels, 2, k=2, seed=0)
    assert n == 4 and ids.dtype == torch.int64
    assert torch.equal(ids, kmeans_groups(blobs, labels, 2, k=2, seed=0)[0])
    for c in (0, 1):
        rows = labels == c
        assert set(ids[rows].tolist()) == {2 * c, 2 * c + 1}
        near = rows & (blobs[:, 0] < 2.5)
        assert len(set(ids[near].tolist())) == 1 and len(set(ids[rows & ~near].tolist())) == 1
    with pytest.raises(ValueError, match="only 12 samples"):
        kmeans_groups(blobs, labels, 2, k=13, seed=0)


def test_attribute_groups_stay_within_a_class() -> None:
    ids, n = attribute_groups(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 2, 3]), 2)
    assert ids.tolist() == [0, 1, 6, 7] and n == 8


def test_group_kinds_build_assigners(tmp_path: Path, tiny_spec: dict[str, Any]) -> None:
    """kmeans and attribute are fixed (computed once, the ids of kmeans_groups / attribute_groups); nearest_synthetic
    is assigned on the fly; each describes itself for explain."""
    assert GROUPS.kinds() == ["nearest_synthetic", "kmeans", "attribute"]
    assert [k for k in GROUPS.kinds() if "fixed" in GROUPS[k].capabilities] == ["kmeans", "attribute"]
    data = context(with_(tiny_spec, data={"kind": "digits_shift"}), tmp_path).data
    rows = torch.arange(0, 1000, 7)
    fixed = GROUPS.build(AttributeGroups(), data)
    ids, n = attribute_groups(data.y_train, data.groups_train, 10)
    got, count = fixed.of_rows(data, rows, None, None, None)
    assert torch.equal(fixed.ids, ids) and torch.equal(got, ids[rows]) and count == n == 200
    kmeans = GROUPS.build(KMeansGroups(k=2), data)
    assert torch.equal(kmeans.ids, kmeans_groups(data.x_train, data.y_train, 10, 2, 0)[0])
    syn = torch.zeros(2, 1, 8, 8)
    syn[1] += 1.0  # in input space, a real image joins the nearer of the all-zero and the all-one image
    nearest = GROUPS.build(NearestSyntheticGroups(space="input"), data)
    want = (data.x_train[rows].flatten(1) - 0.5).sum(1).gt(0).long()  # ‖x − 1‖² < ‖x‖² ⟺ Σ(x − ½) > 0
    assert torch.equal(nearest.in_class(data, rows, None, None, syn), want)
    assert NearestSyntheticGroups().describe() == ("nearest synthetic point of the class (embedding space, at most 10 "
                                                   "per class)")
    assert KMeansGroups(k=3).describe() == "3 k-means clusters per class"


# -- the network-update loss ----------------------------------------------------------------------------
def test_group_objective_value_and_gradient_by_hand() -> None:
    """Group 0: losses 1, 2, 3 (CVaR_1 = 2); group 1: one sample with loss 10 (counts); group 2: empty (skipped).
    R = 1·(2 + 10)/2 + 1·10 + 0.5·mean(1, 2, 3, 10) = 16 + 2 = 18."""
    losses = torch.tensor([1.0, 2.0, 3.0, 10.0], requires_grad=True)
    groups = torch.tensor([0, 0, 0, 1])
    spec = GroupCVaRRisk(alpha=1.0, ce_weight=0.5)
    value = group_objective(losses, groups, 3, spec)
    assert value.item() == pytest.approx(18.0)
    assert group_objective(losses, groups, 2, spec).item() == pytest.approx(18.0)
    value.backward()
    torch.testing.assert_close(losses.grad, torch.tensor([1 / 6, 1 / 6, 1 / 6, 1.5]) + 0.5 / 4)
    # α < 1 keeps the upper tail of a group: CVaR_0.5 of (1, 2, 3, 4) is 3.5.
    tail = group_objective(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.zeros(4, dtype=torch.long), 1,
                           GroupCVaRRisk(alpha=0.5, ce_weight=0.0))
    assert tail.item() == pytest.approx(7.0)


def test_group_objective_gradient_differs_from_cross_entropy_when_one_group_is_worse() -> None:
    """Logistic model on two groups, the second badly fit: the robust gradient (autograd through the CVaRs,
    checked by finite differences) is not a multiple of the plain CE gradient."""
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.tensor([1.0, 0.0]).expand(10, 2), torch.tensor([0.0, 1.0]).expand(2, 2)])
    x = x + 0.1 * torch.randn(12, 2, generator=gen)
    y = torch.tensor([0] * 10 + [1] * 2)
    groups = torch.tensor([0] * 10 + [1] * 2)
    w0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)  # favours class 0: group 1 is worse
    spec = GroupCVaRRisk(alpha=0.6, ce_weight=1.0)

    def robust(w: torch.Tensor) -> torch.Tensor:
        return group_objective(F.cross_entropy(x.double() @ w, y, reduction="none"), groups, 2, spec)

    w = w0.clone().requires_grad_(True)
    (g_robust,) = torch.autograd.grad(robust(w), w)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(x.double() @ w, y), w)
    cos = F.cosine_similarity(g_robust.flatten(), g_ce.flatten(), dim=0)
    assert cos < 0.9 and g_robust.norm() > 1.5 * g_ce.norm()
    eps = 1e-6
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        e = torch.zeros_like(w0)
        e[i, j] = eps
        fd = (robust(w0 + e) - robust(w0 - e)) / (2 * eps)
        assert fd.item() == pytest.approx(g_robust[i, j].item(), rel=1e-5, abs=1e-8)


def test_robust_network_update_trains_on_real_groups(tmp_path: Path, tiny_spec: dict[str, Any]) -> None:
    """train_network_robust's step equals a step on the group objective of the real batch it draws."""
    raw = with_(tiny_spec, distance={"kind": "gradient_match"}, risk=NEAREST, optimize={"iterations": 2})
    ctx = context(raw, tmp_path)
    m = loop.Matcher.create(ctx)
    net = ctx.new_model()
    before = copy.deepcopy(net)
    state = ctx.generator.get_state()
    loop.train_network_robust(m, net, torch.optim.SGD(net.parameters(), lr=0.1), 1)
    ctx.generator.set_state(state)
    rows = m.robust_rows()
    assert len(rows) == 250 and torch.equal(torch.bincount(ctx.data.y_train[rows]), torch.full((10,), 25))
    groups, n = m.groups.of_rows(ctx.data, rows, m.synthetic.x, m.synthetic.y, before)
    assert n == 20 and len(torch.unique(groups)) > 10  # 2 groups per class, nearly all non-empty
    losses = F.cross_entropy(before(m.aug(ctx.data.x_train[rows], m.seed())), ctx.data.y_train[rows], reduction="none")
    grads = torch.autograd.grad(group_objective(losses, groups, n, ctx.problem.risk), list(before.parameters()))
    for p0, p1, g in zip(before.parameters(), net.parameters(), grads):
        torch.testing.assert_close(p1, p0 - 0.1 * g, rtol=1e-5, atol=1e-6)


# -- the grouped distribution-matching distance ----------------------------------------------------------
def test_group_distance_by_hand() -> None:
    """d = (1, 2, 4), whole 3, α = 0.5: k = 1.5, CVaR = (4 + 0.5·2)/1.5 = 10/3; D = 2·10/3 + 0.5·4 + 0.25·3."""
    d, whole = torch.tensor([1.0, 2.0, 4.0]), torch.tensor(3.0)
    spec = GroupCVaRRisk(alpha=0.5, mean_weight=2.0, max_weight=0.5, ce_weight=0.25)
    assert group_distance(d, whole, spec).item() == pytest.approx(20 / 3 + 2 + 0.75)
    assert group_distance(d, whole, GroupCVaRRisk(alpha=1.0)).item() == pytest.approx(7 / 3 + 4 + 3)


def test_grouped_class_distance_on_a_linear_model(tmp_path: Path) -> None:
    """φ(x) = x; class c's synthetic set = (class mean, its farthest real sample); groups by nearest synthetic
    point in input space; d_g = ‖mean R_g − mean S_c‖²; D = CVaR_α(d) + max d + ‖mean R − mean S_c‖²."""
    raw = {
        "data": {"kind": "tabular", "name": "wine"}, "model": {"kind": "linear"}, "synthetic": {"per_class": 2},
        "distance": {"kind": "feature_mean"},
        "optimize": {"kind": "gradient", "iterations": 1, "real_batch_per_class": 1000},
        "risk": {"kind": "group_cvar", "alpha": 0.5, "groups": {"kind": "nearest_synthetic", "space": "input"}},
        "runtime": {"progress": False},
    }
    ctx = context(raw, tmp_path)
    data, c = ctx.data, 1
    xs, ys = [], []
    for k, rows in enumerate(data.strata()):
        real = data.x_train[rows]
        far = real[(real - real.mean(0)).norm(dim=1).argmax()]
        xs += [real.mean(0), far]
        ys += [k, k]
    m = loop.Matcher.starting_at(ctx, torch.stack(xs), torch.tensor(ys))
    net = ctx.new_model()
    got = loop.grouped_class_distance(m, net, c, 0)

    real = data.x_train[data.strata()[c]]
    syn = m.synthetic.stratum(c).detach()
    nearest = [int(((syn - r) ** 2).sum(1).argmin()) for r in real]
    assert sorted(set(nearest)) == [0, 1] and nearest.count(1) >= 1
    d = torch.stack([(real[torch.tensor(nearest) == g].mean(0) - syn.mean(0)).pow(2).sum() for g in (0, 1)])
    whole = (real.mean(0) - syn.mean(0)).pow(2).sum()
    want = cvar(d, 0.5) + d.max() + whole  # two groups, α = 0.5: CVaR is the larger one
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    assert got.item() == pytest.approx(2 * d.max().item() + whole.item(), rel=1e-4)


def test_dm_groups_in_embedding_space_use_the_compared_features(tmp_path: Path, tiny_spec: dict[str, Any]) -> None:
    """space embedding: the nearest synthetic embedding among the features the distance compares (given);
    space input: the nearest synthetic input, whatever features are given."""
    ctx = context(with_(tiny_spec, risk=NEAREST), tmp_path)
    m = loop.Matcher.create(ctx)
    c, rows = 3, torch.arange(6)
    real = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [4.0, 6.0], [0.0, 0.2], [9.0, 9.0]])
    syn = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    assert m.groups.in_class(ctx.data, rows, real, syn, m.synthetic.stratum(c)).tolist() == [0, 0, 1, 1, 0, 1]
    ctx = context(with_(tiny_spec, risk={**NEAREST, "groups": {"kind": "nearest_synthetic", "space": "input"}}),
                  tmp_path / "input")
    m = loop.Matcher.create(ctx)
    rows = ctx.data.strata()[c][:8]
    x, s = ctx.data.x_train[rows], m.synthetic.stratum(c).detach()
    want = [int(((s - xi) ** 2).sum((1, 2, 3)).argmin()) for xi in x]
    assert m.groups.in_class(ctx.data, rows, real, syn, s).tolist() == want


# -- runs -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", ["feature_mean", "gradient_match"])
def test_tiny_runs_finish_with_finite_tensors(distance: str, tmp_path: Path, tiny_spec: dict[str, Any]) -> None:
    raw = with_(tiny_spec, distance={"kind": distance}, risk=NEAREST, optimize={"iterations": 2})
    out = distill(raw, tmp_path)
    assert out.x.shape == (20, 1, 8, 8) and torch.isfinite(out.x).all()
    mean_run = distill(with_(raw, risk={"kind": "mean"}), tmp_path / "mean")
    assert not torch.equal(out.x, mean_run.x)  # the risk changes the result


def test_attribute_groups_on_digits_shift_run(tmp_path: Path, tiny_spec: dict[str, Any]) -> None:
    raw = with_(tiny_spec, data={"kind": "digits_shift"}, distance={"kind": "gradient_match"},
                risk={"kind": "group_cvar", "groups": {"kind": "attribute"}}, optimize={"iterations": 2})
    ctx = context(raw, tmp_path)
    m = loop.Matcher.create(ctx)
    assert m.groups.num_groups == 200
    ids = m.groups.ids
    assert torch.equal(ids // 20, ctx.data.y_train) and len(torch.unique(ids)) == 20
    assert torch.isfinite(BACKEND.run(ctx).x).all()


def test_kmeans_groups_run_with_dm(tmp_path: Path, tiny_spec: dict[str, Any]) -> None:
    raw = with_(tiny_spec, risk={"kind": "group_cvar", "groups": {"kind": "kmeans", "k": 3}}, optimize={"iterations": 2})
    assert torch.isfinite(distill(raw, tmp_path).x).all()


def test_mean_risk_never_groups(tmp_path: Path, tiny_spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """risk mean takes the original code path: no grouping, no robust update (they would raise here), and the
    same tensors on a repeat run."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("risk mean must not group")

    for name in ("train_network_robust", "grouped_class_distance"):
        monkeypatch.setattr(loop, name, boom)
    for name in ("build_nearest_synthetic", "build_kmeans", "build_attribute", "kmeans_groups", "attribute_groups"):
        monkeypatch.setattr(groups_module, name, boom)
    for distance in ("feature_mean", "gradient_match"):
        raw = with_(tiny_spec, distance={"kind": distance}, optimize={"iterations": 2})
        a, b = distill(raw, tmp_path / f"{distance}a"), distill(raw, tmp_path / f"{distance}b")
        assert torch.equal(a.x, b.x)


# -- spec, explain and refusals ---------------------------------------------------------------------------------
def test_spec_defaults_and_scenario_builder() -> None:
    spec = GroupCVaRRisk()
    assert (spec.alpha, spec.mean_weight, spec.max_weight, spec.ce_weight) == (0.8, 1.0, 1.0, 1.0)
    assert spec.groups.kind == "nearest_synthetic" and spec.groups.space == "embedding"
    losses = torch.arange(1.0, 11.0)
    risk = RISKS.build(GroupCVaRRisk(alpha=0.2))
    assert risk.grouped and risk.over_scenarios(losses).item() == pytest.approx(5.5)  # scenarios are averaged
    groups = torch.tensor([0] * 5 + [1] * 5)  # CVaR_0.2 per group: 5 and 10; mean 7.5 + max 10 + CE 5.5
    assert risk.within(losses, groups, 2).item() == pytest.approx(7.5 + 10 + 5.5)
    for bad in ({"alpha": 0}, {"alpha": 1.5}, {"max_weight": -1}, {"groups": {"kind": "voronoi"}}):
        with pytest.raises(SpecError):
            ddspec.load({"data": {"kind": "digits"}, "distance": {"kind": "feature_mean"},
                         "optimize": {"kind": "gradient"}, "risk": {"kind": "group_cvar", **bad}})


def test_explain_says_where_the_risk_applies(tiny_spec: dict[str, Any]) -> None:
    dc = ddspec.compile(ddspec.load(with_(tiny_spec, distance={"kind": "gradient_match"}, risk=NEAREST)))
    assert "group-CVaR on the network updates (α=0.8" in dc.explain()
    dm = ddspec.compile(ddspec.load(with_(tiny_spec, risk=NEAREST)))
    assert "group-CVaR over groups of real data in the distance (α=0.8" in dm.explain()
    assert "+ 1·the class distance" in dm.explain()
    mean = ddspec.compile(ddspec.load(tiny_spec))
    assert "CVaR" not in mean.reason


def test_gradient_matching_without_network_updates_is_refused(tiny_spec: dict[str, Any]) -> None:
    """At 1 image per class DC's schedule has outer_loop 1: no network update, so group_cvar would do nothing."""
    raw = with_(tiny_spec, synthetic={"per_class": 1}, distance={"kind": "gradient_match"}, risk=NEAREST)
    with pytest.raises(BackendUnavailableError, match="set optimize.outer_loop >= 2"):
        ddspec.compile(ddspec.load(raw))
    assert ddspec.compile(ddspec.load(with_(raw, optimize={"outer_loop": 2}))).backend == "matching"
    assert ddspec.compile(ddspec.load(with_(raw, distance={"kind": "feature_mean"}))).backend == "matching"


def test_attribute_groups_on_plain_digits_are_refused(tiny_spec: dict[str, Any], tmp_path: Path) -> None:
    raw = with_(tiny_spec, risk={"kind": "group_cvar", "groups": {"kind": "attribute"}})
    with pytest.raises(WellPosednessError) as err:
        ddspec.compile(ddspec.load(raw))
    finding = err.value.findings[0]
    assert finding.code == "RISK_NEEDS_GROUPS" and "digits_shift" in finding.fix
    ctx = context(with_(tiny_spec, risk=NEAREST), tmp_path)  # the run refuses too, should a plan get that far
    ctx.problem = ctx.problem.model_copy(update={"risk": GroupCVaRRisk(groups=AttributeGroups())})
    with pytest.raises(SpecError, match="GROUPS_MISSING"):
        loop.Matcher.create(ctx)


def test_compiler_refuses_other_combinations(tiny_spec: dict[str, Any]) -> None:
    with pytest.raises(BackendUnavailableError, match="the risk `cvar` is not supported"):
        ddspec.compile(ddspec.load(with_(tiny_spec, risk={"kind": "cvar"})))
    with pytest.raises(WellPosednessError, match="KMEANS_TOO_MANY_CLUSTERS"):
        ddspec.compile(ddspec.load(with_(tiny_spec, risk={"kind": "group_cvar", "groups": {"kind": "kmeans", "k": 500}})))
    trajectory = {"kind": "trajectory", "experts": 1, "expert_epochs": 3, "max_start_epoch": 1}
    with pytest.raises(BackendUnavailableError, match="needs per-sample real losses"):
        ddspec.compile(ddspec.load(with_(tiny_spec, distance=trajectory, risk=NEAREST)))
    analysis = ddspec.compile(ddspec.load(with_(tiny_spec, risk=NEAREST))).analysis
    ok, why = BACKEND.can_lower(dataclasses.replace(analysis, facts=analysis.facts - {"model:differentiable"}))
    assert not ok and why.startswith("the model `convnet` is not a differentiable model")
