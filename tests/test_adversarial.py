"""The ``adversarial`` metric: PGD and the Square-style search against the exact robust accuracy of a linear
model, the invariants (ε = 0, monotone in ε, feasibility, units), the protocol's metrics.json and report,
the estimator finding, and ART's PGD as a cross-check."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from ddspec.errors import WellPosednessError
from ddspec.evaluate.adversarial import attack, bounds, norms, square, summarize
from ddspec.spec.evaluate import AdversarialMetric

EPS = {"linf": [0.0, 0.05, 0.1, 0.2, 0.3], "l2": [0.0, 0.25, 0.5, 1.0, 2.0]}


def _spec(**fields: object) -> AdversarialMetric:
    return AdversarialMetric(eps_linf=EPS["linf"], eps_l2=EPS["l2"], **fields)


@pytest.fixture
def linear(float64) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """f(x) = Wx + b, 4 classes, 10 inputs; labels from noisy logits so that some samples are misclassified."""
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(4, 10, generator=g), 0.1 * torch.randn(4, generator=g)
    x = torch.randn(200, 10, generator=g)
    y = (x @ w.T + b + 0.8 * torch.randn(200, 4, generator=g)).argmax(1)
    model = nn.Linear(10, 4)
    model.weight.data, model.bias.data = w, b
    return model, x, y


def exact_robust(model: nn.Linear, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str) -> float:
    """mean_i 1[min_{j≠y} (m_j − ε‖w_y − w_j‖_*) > 0], m_j = (w_y − w_j)ᵀx + b_y − b_j; dual L1 for L∞, L2 for L2."""
    w, b = model.weight.detach(), model.bias.detach()
    z = x @ w.T + b
    safe = torch.ones(len(x), dtype=torch.bool)
    for j in range(w.shape[0]):
        dual = (w[y] - w[j]).abs().sum(1) if norm == "linf" else (w[y] - w[j]).norm(dim=1)
        safe &= (y == j) | (z.gather(1, y[:, None])[:, 0] - z[:, j] - eps * dual > 0)
    return float(safe.double().mean())


def test_pgd_matches_the_exact_robust_accuracy_of_a_linear_model(linear) -> None:
    model, x, y = linear
    result = attack(model, x, y, _spec(square=None), 1.0, None)
    for norm, grid in EPS.items():
        for eps in grid:
            exact, ours = exact_robust(model, x, y, eps, norm), result.robust(norm, eps)
            assert exact <= ours <= exact + 1 / len(x) + 1e-12, (norm, eps, ours, exact)


def test_square_alone_breaks_samples_and_never_beats_the_exact_bound(linear) -> None:
    model, x, y = linear
    clean = model(x).argmax(1) == y
    for norm, eps in (("linf", 0.2), ("l2", 1.0)):
        broken, points = square(model, x, y, eps, norm, queries=300, box=None, generator=torch.Generator().manual_seed(0))
        robust = float((clean & ~broken).double().mean())
        assert int((broken & clean).sum()) >= 20
        assert robust >= exact_robust(model, x, y, eps, norm)
        assert float(norms(points - x, norm).max()) <= eps + 1e-9
        assert bool((model(points[broken]).argmax(1) != y[broken]).all())


@pytest.fixture
def mlp(float64) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small trained MLP on 3 Gaussian blobs in [0, 1]⁶ (inputs clamped to the box)."""
    g = torch.Generator().manual_seed(1)
    centres = torch.rand(3, 6, generator=g)
    y = torch.randint(0, 3, (300,), generator=g)
    x = (centres[y] + 0.15 * torch.randn(300, 6, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), x, y


def test_invariants_clean_monotone_feasible_and_boxed(mlp) -> None:
    model, x, y = mlp
    spec = _spec(steps=20, square={"queries": 100}, box=(0.0, 1.0))
    box = bounds(spec.box, x, (0.0, 1.0))
    result = attack(model, x, y, spec, 0.2, box, keep_points=True)
    scored = summarize(result, spec)
    assert scored.figures["clean"] == pytest.approx(float((model(x).argmax(1) == y).double().mean()))
    for norm in spec.norms:
        curve = [result.robust(norm, eps) for eps in spec.eps(norm)]
        assert curve[0] == scored.figures["clean"]
        assert all(b <= a for a, b in itertools.pairwise(curve)) and curve[-1] < curve[0]
        for eps in spec.eps(norm):
            points = result.points[norm][eps]
            assert float(norms(points - x, norm).max()) <= 0.2 * eps + 1e-6
            assert float(points.min()) >= 0.0 and float(points.max()) <= 1.0
            broken = result.broken(norm, eps) & result.clean
            assert bool((model(points[broken]).argmax(1) != y[broken]).all())
    assert set(scored.details["square_beats_pgd"]) == {"linf", "l2"}
    assert scored.value == scored.figures["linf"]["0.1"]  # the middle ε of [0, 0.05, 0.1, 0.2, 0.3]
    assert sum(p.grad is not None for p in model.parameters()) == 0


def test_raw_and_standardized_inputs_give_the_same_robust_accuracy(mlp) -> None:
    """Inputs in other units (x_raw = μ + s·x) attacked with radii ε·σ_raw equal the standardized attack."""
    model, x, y = mlp
    mu, s = 5.0, 3.0
    raw_model = nn.Sequential(_Affine(-mu / s, 1 / s), model)
    spec = _spec(steps=20, square={"queries": 50}, box=None)
    standardized = attack(model, x, y, spec, float(x.std(correction=0)), None)
    x_raw = mu + s * x
    raw = attack(raw_model, x_raw, y, spec, float(x_raw.std(correction=0)), None)
    for norm in spec.norms:
        assert [raw.robust(norm, e) for e in spec.eps(norm)] == [standardized.robust(norm, e) for e in spec.eps(norm)]


class _Affine(nn.Module):
    def __init__(self, shift: float, scale: float) -> None:
        super().__init__()
        self.shift, self.scale = shift, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift + self.scale * x


def test_an_estimator_model_family_is_refused() -> None:
    from ddspec.compiler.plan import compile
    from ddspec.spec.loading import load

    spec = {"data": {"kind": "digits"}, "train": {"kind": "sklearn", "estimator": "decision_tree"},
            "distance": {"kind": "feature_mean"}, "evaluate": {"metrics": ["accuracy", "adversarial"]}}
    with pytest.raises(WellPosednessError) as info:
        compile(load(spec))
    (finding,) = [f for f in info.value.findings if f.code == "METRIC_NEEDS_GRADIENT"]
    assert finding.path == "evaluate.metrics" and "evaluate.models" in finding.fix
    spec["evaluate"]["models"] = [{"kind": "mlp"}]
    try:
        compile(load(spec))
    except WellPosednessError as err:
        assert "METRIC_NEEDS_GRADIENT" not in {f.code for f in err.findings}


def test_through_the_protocol_metrics_json_and_report(tmp_path, tiny_spec, capsys) -> None:
    import yaml

    from ddspec.cli import main

    metric = {"kind": "adversarial", "eps_linf": [0.1, 0.3], "eps_l2": [0.5, 2.0], "steps": 5, "samples": 40,
              "targets": 1, "square": {"queries": 20}}
    tiny_spec["evaluate"] = {**tiny_spec["evaluate"], "seeds": [0, 1], "metrics": ["accuracy", metric]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    assert "adversarial" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    entry = metrics["adversarial"]
    for norm, grid in (("linf", ["0.1", "0.3"]), ("l2", ["0.5", "2"])):
        assert list(entry[norm]) == grid
        for key in grid:
            assert set(entry[norm][key]) == {"mean", "std", "values"} and len(entry[norm][key]["values"]) == 2
            assert entry[norm][key]["mean"] <= entry["clean"]["mean"]
    assert entry["mean"] == pytest.approx(entry["linf"]["0.3"]["mean"])
    assert len(entry["square_beats_pgd"]) == 2 and "counts" in entry
    assert metrics["accuracy"]["values"] and "linf" in metrics["per_model"]["0:convnet"]["adversarial"]
    page = (tmp_path / "run" / "report.html").read_text()
    assert "adversarial.png" in page and "adversarial per ε" in page
    assert (tmp_path / "run" / "adversarial.png").is_file()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_art_pgd_finds_no_lower_robust_accuracy(mlp, norm: str) -> None:
    """ART's ProjectedGradientDescent on the same model and ε: at most one sample per hundred below ours."""
    pytest.importorskip("art")
    import numpy as np
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    model, x, y = mlp
    model = model.float()
    x = x.float()
    eps = {"linf": 0.1, "l2": 0.3}[norm]
    spec = AdversarialMetric(norms=[norm], eps_linf=[eps], eps_l2=[eps], square=None, box=(0.0, 1.0))
    ours = attack(model, x, y, spec, 1.0, bounds(spec.box, x, (0.0, 1.0))).robust(norm, eps)
    classifier = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=(6,), nb_classes=3,
                                   clip_values=(0.0, 1.0), device_type="cpu")
    pgd = ProjectedGradientDescent(classifier, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=eps / 20,
                                   max_iter=50, num_random_init=1, verbose=False)
    adversarial = pgd.generate(x.numpy())
    clean = model(x).argmax(1) == y
    art = float((clean & (model(torch.from_numpy(adversarial)).argmax(1) == y)).double().mean())
    assert ours <= art + 0.01 + 1e-12, (ours, art)


def test_report_curves_and_masking_flags() -> None:
    from ddspec.runtime.report import curves, masking_flags

    stats = {"mean": 0.5, "std": 0.0, "values": [0.5]}
    entry = {**stats, "clean": {**stats, "mean": 0.9}, "linf": {"0.3": stats, "0.1": stats},
             "square_beats_pgd": [{"linf": {"0.1": False, "0.3": True}}, {"linf": {"0.1": False, "0.3": False}}]}
    assert [x for x, _ in curves(entry)["linf"]] == [0.0, 0.1, 0.3] and curves({"a": stats}) == {}
    assert masking_flags(entry) == ["linf ε = 0.3 (1 of 2 runs)"]
