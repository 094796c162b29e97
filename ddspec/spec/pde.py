"""Physics-informed problems: distilled collocation points for a parametric PINN that generalizes across
boundary conditions (BCs). The kinds of every axis that this case study adds live here:

- ``data: {kind: pde, problem: {kind: laplace_square | heat_1d}}`` (nested registry
  :data:`~ddspec.registry.PDE_PROBLEMS`): the PDE, its BC family a ∈ R^K, the solution fields of ``train_bcs``
  in-distribution BCs on a grid (the "simulation data" D), held-out BCs for the test;
- ``model: {kind: pinn_mlp}``: u_θ(z, a) = lift(z, a) + bubble(z)·N_θ(z, a), N_θ a tanh MLP (hard BCs);
- ``train: {kind: residual}``: minimize the mean squared PDE residual at D̂'s points, label-free; inside
  distillation with a random-feature PINN fitted in closed form;
- ``task: {kind: pde_solution}`` with ``distance: {kind: relative_l2}``: I(ω) = the solution field for BC ω on
  the evaluation grid, relL2 = ‖u_θ̂ − u_ω‖₂/‖u_ω‖₂ (and, for BCs without data, the relative residual);
- ``evaluate.metrics: [relative_l2]``: relL2 of fresh MLP PINNs over the held-out BCs of A_in and A_out.

The BC family (shared by the problems): every term a_k in ``box``; A_in = the product of ``data_box`` (where the
data is); A_out = {a in box^K outside A_in : a_K ∈ ``held_out_last`` or ‖a‖∞ ∈ ``held_out_norm``}.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ddspec.errors import Finding
from ddspec.registry import DATA, DISTANCES, METRICS, MODELS, PDE_PROBLEMS, TASKS, TRAIN, Registry
from ddspec.spec.base import NonNegativeInt, PositiveFloat, PositiveInt, SpecModel
from ddspec.spec.data import DataBase, DataInfo
from ddspec.spec.distance import DistanceBase
from ddspec.spec.evaluate import MetricSpec
from ddspec.spec.model import ModelBase
from ddspec.spec.task import TaskBase
from ddspec.spec.train import TrainBase

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis

Interval = tuple[float, float]


class PdeProblemBase(SpecModel):
    """A PDE with a K-term BC family (see the module docstring for A_in and A_out)."""

    #: The coordinates z of a record, in order (the records are (z, a)).
    coordinates: ClassVar[tuple[str, ...]] = ()
    terms: int = Field(3, ge=1, le=8, description="K, the number of BC parameters a_1..a_K (sine modes).")
    data_box: list[Interval] = Field(
        default_factory=lambda: [(-1.0, 1.0), (-1.0, 1.0), (-0.2, 0.2)],
        description="A_in: the range of each a_k where the data is (one interval per term; the last one repeats "
        "for extra terms).")
    box: Interval = Field((-1.5, 1.5), description="The range every a_k can take (the BCs a user cares about).")
    held_out_last: Interval = Field((0.6, 1.0), description="A_out contains the BCs whose last term a_K is here.")
    held_out_norm: Interval = Field((1.0, 1.5), description="A_out contains the BCs whose ‖a‖∞ is here.")

    @model_validator(mode="after")
    def _intervals(self) -> PdeProblemBase:
        for name, (lo, hi) in [("box", self.box), ("held_out_last", self.held_out_last),
                               ("held_out_norm", self.held_out_norm), *(("data_box", i) for i in self.data_box)]:
            if not lo < hi:
                raise ValueError(f"{name}: an interval [low, high] needs low < high, got [{lo}, {hi}]")
        if not self.data_box:
            raise ValueError("data_box needs at least one interval")
        return self

    def in_box(self) -> list[Interval]:
        """A_in's interval for each of the K terms (``data_box``, its last interval repeated)."""
        return [self.data_box[min(k, len(self.data_box) - 1)] for k in range(self.terms)]

    def domain(self) -> list[Interval]:
        """The range of each coordinate."""
        raise NotImplementedError

    def physics_args(self) -> dict[str, float]:
        """The problem's own constants, as its torch class takes them (none by default)."""
        return {}


PDE_PROBLEMS.base = PdeProblemBase


@PDE_PROBLEMS.register(builder="ddspec.components.pde.problems:build_problem")
class LaplaceSquareProblem(PdeProblemBase):
    """Δu = 0 on (0,1)²; u = 0 on x = 0, x = 1, y = 0; u(x, 1) = Σ_k a_k sin(kπx).
    Exact: u = Σ_k a_k sin(kπx) sinh(kπy)/sinh(kπ)."""

    coordinates: ClassVar[tuple[str, ...]] = ("x", "y")
    kind: Literal["laplace_square"] = "laplace_square"

    def domain(self) -> list[Interval]:
        return [(0.0, 1.0), (0.0, 1.0)]


@PDE_PROBLEMS.register(builder="ddspec.components.pde.problems:build_problem")
class Heat1dProblem(PdeProblemBase):
    """u_t = ν u_xx on [0,1] x [0,T]; u = 0 at x = 0 and 1; u(x, 0) = Σ_k a_k sin(kπx).
    Exact: u = Σ_k a_k exp(−ν k²π² t) sin(kπx)."""

    coordinates: ClassVar[tuple[str, ...]] = ("x", "t")
    kind: Literal["heat_1d"] = "heat_1d"
    nu: PositiveFloat = Field(0.05, description="ν, the diffusivity.")
    horizon: PositiveFloat = Field(1.0, description="T, the final time.")

    def domain(self) -> list[Interval]:
        return [(0.0, 1.0), (0.0, self.horizon)]

    def physics_args(self) -> dict[str, float]:
        return {"nu": self.nu, "T": self.horizon}


@DATA.register(builder="ddspec.components.pde.data:build_pde", capabilities=("pde",))
class PdeData(DataBase):
    """A PDE problem as data: the records are points p = (z, a) (coordinates, then the BC's K terms); the
    training set D is the exact solution field of ``train_bcs`` BCs drawn uniformly from A_in on a ``grid``-point
    per coordinate grid (the simulation data a practitioner has), the test set the fields of ``test_bcs`` BCs drawn
    from A_in and ``test_bcs`` from A_out (the test BC a record belongs to is its group). Draws: numpy
    ``default_rng(seed)``: training BCs, then test A_in, then test A_out (rejection from box^K)."""

    nested: ClassVar[dict[str, Registry]] = {"problem": PDE_PROBLEMS}
    smoke: ClassVar[dict[str, Any]] = {"train_bcs": 4, "test_bcs": 4, "grid": 9}
    kind: Literal["pde"] = "pde"
    problem: LaplaceSquareProblem | Heat1dProblem = Field(  # the union of PDE_PROBLEMS (rebuilt from it)
        default_factory=LaplaceSquareProblem, description="The PDE and its BC family.")
    train_bcs: PositiveInt = Field(32, le=10_000, description="BCs of A_in whose solution fields are the data D.")
    test_bcs: int = Field(50, ge=1, le=10_000, description="Held-out BCs drawn from each of A_in and A_out.")
    grid: int = Field(33, ge=3, le=513, description="Grid points per coordinate (boundaries included).")
    points: Literal["box", "data"] = Field(
        "box", description="Where D̂'s collocation points may lie in BC space: the whole box^K (the BCs a user "
        "cares about, measured by the physics where there is no data) or A_in (the data's box).")
    seed: NonNegativeInt = Field(0, description="Seed of the BC draws.")

    def describe(self) -> DataInfo:
        cells = self.grid ** len(self.problem.coordinates)
        return DataInfo(f"pde:{self.problem.kind}", (len(self.problem.coordinates) + self.problem.terms,), 0,
                        (self.train_bcs * cells,), 2 * self.test_bcs * cells, targets="field", target_dim=1)

    def point_box(self) -> list[Interval]:
        """The box D̂'s points lie in: the coordinates' domain, then per term ``box`` or A_in (``points``)."""
        terms = [self.problem.box] * self.problem.terms if self.points == "box" else self.problem.in_box()
        return [*self.problem.domain(), *terms]


@MODELS.register(builder="ddspec.components.pde.pinn:build_pinn_mlp", capabilities=("physics_informed",))
class PinnMlpSpec(ModelBase):
    """A parametric PINN with hard BCs: u_θ(z, a) = lift(z, a) + bubble(z)·N_θ(s(z, a)), N_θ a tanh MLP
    (``depth`` hidden layers of ``width``), s scaling the records' box to [−1, 1]; lift satisfies every BC and
    bubble vanishes where they are imposed, so u_θ satisfies them for any θ."""

    kind: Literal["pinn_mlp"] = "pinn_mlp"
    width: PositiveInt = 32
    depth: int = Field(3, ge=1, le=16)

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) != 1:
            return f"pinn_mlp takes records (z, a) of shape D; the data has per-sample shape {'x'.join(map(str, shape))}"
        return None

    def cost(self, shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
        """Parameters and FLOPs of N_θ; a residual needs about 3 + 2·coords passes more (second derivatives)."""
        dims = [shape[0], *[self.width] * self.depth, 1]
        params = sum(a * b + b for a, b in itertools.pairwise(dims))
        return params, 2 * params, sum(dims)


@TRAIN.register(capabilities=("residual",))
class ResidualTrain(TrainBase):
    """Physics-informed training without labels: minimize mean_i L[u](p_i)², the squared PDE residual at D̂'s
    points. Inside distillation the model is an ``inner`` PINN whose residual is linear in its trainable part,
    fitted in closed form with a ridge (differentiable in the points), drawn afresh every outer iteration:
    ``random_features``: u = lift + bubble·φ(s(p))·w with φ_j = tanh(W_j·s(p) + b_j), W ~ N(0, scale²),
    b ~ U(−scale, scale), w = argmin (1/M)‖A w + r₀‖² + ridge·‖w‖²; ``tangent``: the evaluated MLP PINN at a fresh
    initialisation θ0 linearized in its parameters, u = lift + bubble·(N_θ0 + ∂_θN_θ0·Δ),
    Δ = argmin (1/M)‖A Δ + r‖² + ridge·‖Δ‖² (an M x M kernel solve). The evaluation trains the full MLP PINN
    (``evaluate.models`` or ``model``) on the same loss with ``evaluate``'s optimizer."""

    smoke: ClassVar[dict[str, Any]] = {"features": 32}
    kind: Literal["residual"] = "residual"
    inner: Literal["random_features", "tangent"] = Field(
        "random_features", description="The closed-form inner PINN: `random_features` (F random tanh features) or "
        "`tangent` (the evaluated MLP PINN linearized in its parameters at a fresh initialisation).")
    features: PositiveInt = Field(512, le=16_384, description="F, random features of the closed-form PINN.")
    scale: PositiveFloat = Field(1.0, description="Scale of the random features' weights and biases.")
    ridge: PositiveFloat = Field(1e-6, description="Ridge of the closed-form least-squares fit.")

    def inner_name(self) -> str:
        """The inner PINN in words (for ``explain``)."""
        return {"random_features": "random-feature", "tangent": "tangent (linearized MLP)"}[self.inner]

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        """TrainBase's, then: ``features``/``scale`` set with inner ``tangent`` (they shape random features only);
        ``tangent`` with more than 4096 points (its kernel system is M x M)."""
        yield from super().findings(analysis)
        unused = sorted({"features", "scale"} & self.model_fields_set)
        if self.inner == "tangent" and unused:
            yield Finding("TRAIN_FEATURES_UNUSED", f"train.{unused[0]}", f"inner `tangent` takes its features from "
                          f"the evaluated MLP's parameters; {' and '.join(unused)} only shape `random_features`",
                          f"remove train.{' and train.'.join(unused)}, or set train.inner: random_features",
                          severity="warning")
        if self.inner == "tangent" and analysis.n_synthetic > 4096:
            yield Finding("TANGENT_KERNEL_LARGE", "train.inner", f"inner `tangent` solves an M x M kernel system; "
                          f"M = {analysis.n_synthetic} points make it slow and large", "lower synthetic.total or "
                          "use train.inner: random_features", severity="warning")


@TASKS.register(builder="ddspec.components.pde.objective:build_task", capabilities=("field",))
class PdeSolutionTask(TaskBase):
    """The solution field: I(ω) = u_θ̂(·, a_ω) on the data's grid for BC ω. The scenarios ω are the data's BCs
    (measured by ``distance`` against their fields) and ``physics_bcs`` BCs drawn afresh each iteration from D̂'s
    BC box where there is no data, measured by the physics alone: the relative residual
    ‖L[u_θ̂]‖₂ / ‖L[lift]‖₂ on a ``physics_grid``-point grid (1 for the lift alone, 0 for the exact solution)."""

    smoke: ClassVar[dict[str, Any]] = {"physics_bcs": 2, "physics_grid": 5}
    kind: Literal["pde_solution"] = "pde_solution"
    physics_bcs: NonNegativeInt = Field(16, le=10_000, description="BCs without data per iteration (0: none).")
    physics_grid: int = Field(17, ge=3, le=257, description="Grid points per coordinate for the residual.")

    def default_distance(self) -> dict[str, str] | None:
        return {"kind": "relative_l2"}

    def describe_scenarios(self, problem: Any) -> str:
        return (f"the data's {problem.data.train_bcs} BCs and {self.physics_bcs} physics-only BC(s) drawn per "
                "iteration")

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        if not analysis.has("data:pde"):
            yield Finding("TASK_NEEDS_PDE", "task", f"task `{self.kind}` compares PDE solution fields, and data "
                          f"`{analysis.kind('data')}` is not a PDE problem", "use data: {kind: pde, ...}")
        if analysis.problem.distance is not None and not analysis.has("distance:fields"):
            yield Finding("TASK_DISTANCE_MISMATCH", "distance", f"task `{self.kind}` compares fields with a field "
                          f"distance, not `{analysis.kind('distance')}`", "set distance: {kind: relative_l2}")


@DISTANCES.register(builder="ddspec.components.pde.objective:relative_l2", capabilities=("fields",))
class RelativeL2Distance(DistanceBase):
    """relL2(u, v) = ‖u − v‖₂ / ‖v‖₂ over the points of a field (v the reference)."""

    kind: Literal["relative_l2"] = "relative_l2"


@METRICS.register(builder="ddspec.evaluate.pde:RelativeL2", capabilities=("targets:field", "default", "primary"))
class RelativeL2Metric(MetricSpec):
    """relL2 = ‖u_θ − u_a‖₂/‖u_a‖₂ per held-out BC a on the test grid; the value is the mean over all test BCs,
    with the mean and the ``quantile`` (default 90th percentile) over A_in's and A_out's BCs as ``in`` / ``out``."""

    kind: Literal["relative_l2"] = "relative_l2"
    quantile: float = Field(0.9, gt=0, lt=1, description="The reported quantile of relL2 over BCs.")
