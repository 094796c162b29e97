"""The coreset backend: hand-computed herding and k-center orders, seeded random selection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_matching import DIABETES, analyse_spec, context

import ddspec
from ddspec.backends.coreset import CoresetBackend
from ddspec.backends.coreset.run import herding, kcenter
from ddspec.errors import BackendUnavailableError

pytestmark = pytest.mark.usefixtures("one_thread")

BACKEND = CoresetBackend()
#: 1-D features 0, 1, 2, 3, 10 (mean 3.2).
LINE = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])


def select(method: str, out: Path, seed: int = 0, space: str = "input") -> tuple[torch.Tensor, torch.Tensor]:
    raw = {
        "data": {"kind": "digits"}, "model": {"kind": "convnet", "width": 8, "depth": 2},
        "synthetic": {"per_class": 3}, "optimize": {"kind": "select", "method": method, "space": space},
        "runtime": {"progress": False, "seed": seed},
    }
    result = BACKEND.run(context(raw, out))
    return result.x, result.y


def test_herding_order_by_hand() -> None:
    """Running means after each pick: 3 → 2.5 (|Δ| .7, vs 6.5 for 10) → 2 (1.2, vs 5 for 10) →
    4 (0.8, vs 1.5 for 0) → 3.2; choosing by distance to the mean alone would give 3, 2, 1, 0, 10."""
    assert herding(LINE, 5).tolist() == [3, 2, 1, 4, 0]
    assert herding(LINE, 2).tolist() == [3, 2]


def test_kcenter_order_by_hand() -> None:
    """Start at 3 (nearest 3.2); farthest from {3} is 10; from {3, 10} it is 0 (3 away); then 1 and 2
    are both 1 away from the picks: the tie goes to the lower index."""
    assert kcenter(LINE, 4).tolist() == [3, 4, 0, 1]
    square = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0], [1.0, 1.0]])
    assert kcenter(square, 3).tolist() == [4, 3, 1]  # (4, 0) and (0, 4) tie at √10
    assert kcenter(square, 0).tolist() == []


def test_backend_selects_with_the_method(tmp_path: Path) -> None:
    x, y = select("herding", tmp_path)
    ctx = context({"data": {"kind": "digits"}, "optimize": {"kind": "select"}, "runtime": {"progress": False}}, tmp_path)
    idx = ctx.data.strata()[7]
    expected = ctx.data.x_train[idx[herding(ctx.data.x_train[idx].flatten(1), 3)]]
    torch.testing.assert_close(x[y == 7], expected, rtol=0, atol=0)
    assert y.dtype == torch.int64 and y.tolist() == [c for c in range(10) for _ in range(3)]


def test_random_selection_is_seeded_and_without_replacement(tmp_path: Path) -> None:
    x, y = select("random", tmp_path)
    torch.testing.assert_close(x, select("random", tmp_path)[0], rtol=0, atol=0)
    assert not torch.equal(x, select("random", tmp_path, seed=1)[0])
    ctx = context({"data": {"kind": "digits"}, "optimize": {"kind": "select"}, "runtime": {"progress": False}}, tmp_path)
    for c in range(10):
        real = ctx.data.x_train[ctx.data.y_train == c].flatten(1)
        rows = {int(torch.nonzero((real == s).all(1)).flatten()[0]) for s in x[y == c].flatten(1)}
        assert len(rows) == 3


@pytest.mark.parametrize("method", ["herding", "kcenter"])
def test_embedding_space_is_seeded(method: str, tmp_path: Path) -> None:
    x, _ = select(method, tmp_path, space="embedding")
    torch.testing.assert_close(x, select(method, tmp_path, space="embedding")[0], rtol=0, atol=0)
    assert x.shape == (30, 1, 8, 8)


def test_can_lower_and_estimate() -> None:
    ok, why = BACKEND.can_lower(analyse_spec({"data": {"kind": "digits"}, "optimize": {"kind": "select"}}))
    assert ok, why
    analysis = analyse_spec({"data": {"kind": "digits"}, "distance": {"kind": "feature_mean"}})
    assert BACKEND.can_lower(analysis) == (
        False, "the optimize `gradient` does not select samples (coreset needs optimize.kind: select)"
    )
    cheap = BACKEND.estimate(analyse_spec({"data": {"kind": "digits"}, "optimize": {"kind": "select"}}))
    assert 0 < cheap.seconds < 1 and cheap.memory_bytes < 2**24


def test_real_valued_targets_are_refused() -> None:
    analysis = analyse_spec({**DIABETES, "optimize": {"kind": "select"}})
    assert BACKEND.can_lower(analysis) == (
        False, ("the data's targets are not classes (real targets (1 per row)), and coreset selection picks samples "
                "class by class (for regression use bilevel, krr or convex; for a PDE, collocation)")
    )
    with pytest.raises(BackendUnavailableError, match="coreset selection picks samples class by class"):
        ddspec.compile(ddspec.load({**DIABETES, "optimize": {"kind": "select"}, "backend": "coreset"}))
