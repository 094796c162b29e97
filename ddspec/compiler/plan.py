"""compile(problem) → Plan: analyse, check well-posedness, choose a backend, resolve defaults, estimate.

The Plan is inspectable without running anything (:meth:`Plan.explain`, :meth:`Plan.to_json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddspec.analysis.facts import Analysis, analyse
from ddspec.analysis.rules import check
from ddspec.errors import BackendUnavailableError, Finding, SpecError, WellPosednessError
from ddspec.registry import MODELS, TRAIN, load_backends
from ddspec.spec.distributed import launched_world
from ddspec.spec.model import default_model

if TYPE_CHECKING:
    from ddspec.backends.base import Backend, Estimate
    from ddspec.runtime.runner import Result


#: How ``explain`` names the synthetic targets: (data targets, synthetic.learn_labels) → words.
LABELS = {("classes", False): "fixed labels", ("classes", True): "learned soft labels",
          ("real", False): "fixed targets", ("real", True): "learned targets",
          ("field", False): "no targets (collocation points)", ("field", True): "no targets (collocation points)",
          ("survival", False): "(time, event) learned with the covariates",
          ("survival", True): "(time, event) learned with the covariates"}


@dataclass
class Plan:
    """A compiled problem: the resolved spec, the backend that will run it and why."""

    problem: Any
    analysis: Analysis
    backend: str
    reason: str
    rejected: dict[str, str]
    defaults: dict[str, Any]
    notes: list[Finding]
    estimate: Estimate
    #: The torchrun ranks ``explain`` shows the split for (None: ``WORLD_SIZE``, else 1).
    ranks: int | None = None

    def explain(self) -> str:
        """A human-readable account of the plan (what ``ddspec explain`` prints)."""
        p, a, info = self.problem, self.analysis, self.analysis.data
        syn = p.synthetic
        per = f"{syn.per_class} per class" if syn.per_class is not None and info.num_classes else "in total"
        lines = [
            f"ddspec plan: {p.name}",
            (f"  data        {p.data.kind}: {info.n_train} train / {info.n_test} test, input "
             f"{'x'.join(map(str, info.input_shape))}, {info.describe_targets()}"),
            (f"  synthetic   {a.n_synthetic} samples ({per}), init {syn.init}, "
             f"{LABELS[info.targets, syn.learn_labels]}"),
            f"  model       {p.train.describes_model() or _describe(p.model)}",
            f"  objective   {self._objective()}",
            f"  backend     {self.backend}: {self.reason}",
        ]
        lines += [f"  rejected    {name}: {why}" for name, why in self.rejected.items()]
        if self.defaults:
            lines.append("  defaults    " + "\n              ".join(f"{k} = {_short(v)}" for k, v in self.defaults.items()))
        lines += [f"  {n.severity:<11} [{n.code}] {n.message}" + (f"; fix: {n.fix}" if n.severity == "warning" else "")
                  for n in self.notes]
        est = self.estimate
        lines.append(f"  estimate    ~{_mib(est.memory_bytes)} peak memory, ~{_duration(est.seconds)} ({est.detail})")
        ev = p.evaluate
        estimator = self.analysis.has("train:estimator") and not ev.models  # the train kind is the model family
        models = ", ".join(m.kind for m in ev.models) or (p.train if estimator else p.model).kind
        recipe = f"{ev.epochs} epochs, {ev.optimizer} lr {ev.lr}"
        if self.analysis.has("model:closed_form") and not ev.models:
            recipe = "fitted in closed form"
        elif estimator:
            recipe = p.train.describes_fit()
        elif all(MODELS.has(m, "categorical") for m in ev.models or [p.model]):
            recipe = "fitted by scikit-learn to the records' codes (random_state = seed)"
        lines.append(
            f"  evaluate    {models} x seeds {ev.seeds}: {recipe}, "
            f"metrics {', '.join(m.kind for m in ev.metric_specs(info.targets))}"
            + (f", corruptions {', '.join(c.kind for c in ev.corruptions)}" if ev.corruptions else "")
            + (f", baselines {', '.join(ev.baselines)} (same protocol)" if ev.baselines else "")
        )
        world = self.ranks or launched_world()
        runs = (len(ev.models) or 1) * len(ev.seeds)
        units = load_backends()[self.backend].parallel(self.analysis)
        lines.append(f"  ranks       {p.runtime.distributed.describe(world, units, runs)}")
        return "\n".join(lines)

    def _objective(self) -> str:
        p = self.problem
        if self.analysis.has("optimize:selection"):
            return p.optimize.describe()
        if self.analysis.has("optimize:exact"):
            return "W_S = W: the model fitted to D̂ equals the model fitted to D (closed form)"
        parts = [f"distance {p.distance.kind}" if p.distance else None, f"task {p.task.kind}" if p.task else None]
        scenarios = p.task.describe_scenarios(p) if p.task is not None else p.scenarios.describe()
        return ", ".join(x for x in parts if x) + f", risk {p.risk.kind} over {scenarios}"

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data (written to ``plan.json``)."""
        from ddspec import __version__

        return {
            "ddspec_version": __version__,
            "backend": self.backend,
            "reason": self.reason,
            "rejected": self.rejected,
            "defaults": {k: _jsonable(v) for k, v in self.defaults.items()},
            "facts": sorted(self.analysis.facts),
            "notes": [{"code": n.code, "path": n.path, "message": n.message, "fix": n.fix, "severity": n.severity}
                      for n in self.notes],
            "estimate": {"memory_bytes": self.estimate.memory_bytes, "seconds": self.estimate.seconds,
                         "detail": self.estimate.detail},
            "explain": self.explain(),
        }

    def run(self, out: str | Path, resume: bool = False) -> Result:
        """Run the plan, writing the artifacts (docs/concepts.md#artifacts) to ``out``."""
        from ddspec.runtime.runner import run_plan

        return run_plan(self, Path(out), resume=resume)


def compile(problem: Any) -> Plan:
    """Analyse ``problem``, check it, choose a backend and resolve defaults.

    Raises :class:`WellPosednessError` with every error finding, or
    :class:`BackendUnavailableError` naming why each backend declined.
    """
    defaults: dict[str, Any] = {}
    if problem.model is None and not TRAIN.has(problem.train, "estimator"):  # an estimator is the model family
        defaults["model"] = default_model(problem.data.describe().input_shape)
        problem = _with(problem, defaults)
    analysis = analyse(problem)
    findings = check(analysis)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise WellPosednessError(errors)
    backend, reason, rejected = _choose(analysis)
    chosen = {k: v for k, v in backend.resolve(analysis).items() if _get(problem, k) is None}
    placed = backend.device_findings(problem)
    if placed:
        chosen["runtime.device"] = "cpu"
    if chosen:
        problem = _with(problem, chosen)
        analysis = analyse(problem)
        defaults.update(chosen)
    notes = [f for f in findings if f.severity != "error"] + placed
    estimate = backend.estimate(analysis)
    notes += _memory_findings(estimate, problem.runtime.device)
    return Plan(problem, analysis, backend.name, reason, rejected, defaults, notes, estimate)


def _memory_findings(estimate: Estimate, device: str) -> list[Finding]:
    """A warning when the estimated peak memory exceeds what the device has."""
    from ddspec.compiler.estimate import available_memory

    available = available_memory(device)
    if available is None or estimate.memory_bytes <= available:
        return []
    return [Finding(
        "MEMORY_EXCEEDS_DEVICE", "runtime.device",
        f"the estimated peak memory (~{_mib(estimate.memory_bytes)}) exceeds the {_mib(available)} available",
        estimate.advice or "lower synthetic.per_class or the batch sizes", severity="warning",
    )]


def _choose(analysis: Analysis) -> tuple[Backend, str, dict[str, str]]:
    """The backend named by ``backend:`` (SpecError ``UNKNOWN_BACKEND`` if none is registered under that
    name), or with ``auto`` the most preferred backend that can lower the problem; with the reasons."""
    registered = load_backends()
    wanted = analysis.problem.backend
    if wanted != "auto" and wanted not in registered:
        names = ", ".join(["auto", *sorted(registered)])
        raise SpecError.one("UNKNOWN_BACKEND", "backend", f"no backend is registered under the name `{wanted}`",
                            f"use one of: {names}")
    backends = sorted(registered.values(), key=lambda b: (b.preference, b.name))
    verdicts = {b.name: b.can_lower(analysis) for b in backends}
    able = [b for b in backends if verdicts[b.name][0]]
    if wanted != "auto":
        ok, why = verdicts[wanted]
        if not ok:
            others = ", ".join(b.name for b in able) or "none"
            raise BackendUnavailableError([Finding(
                "BACKEND_CANNOT_LOWER", "backend", f"backend `{wanted}` cannot run this spec: {why}",
                f"backends that can: {others}; or set backend: auto",
            )])
        chosen = next(b for b in backends if b.name == wanted)
    elif not backends:
        raise BackendUnavailableError.one("NO_BACKENDS", "backend", "no backend is registered",
                                          "reinstall ddspec (ddspec.registry.BUILTIN_BACKENDS names its backends)")
    elif not able:
        raise BackendUnavailableError([
            Finding("BACKEND_CANNOT_LOWER", "backend", f"`{name}` declines: {why}",
                    "change the spec so that one backend's condition holds")
            for name, (_, why) in verdicts.items()
        ])
    else:
        chosen = able[0]
    rejected = {name: why for name, (ok, why) in verdicts.items() if name != chosen.name and not ok}
    rejected.update({b.name: f"can run it, but `{chosen.name}` is preferred" for b in able if b is not chosen})
    return chosen, verdicts[chosen.name][1], rejected


def _get(problem: Any, dotted: str) -> Any:
    node = problem
    for part in dotted.split("."):
        node = getattr(node, part, None)
    return node


def _with(problem: Any, values: dict[str, Any]) -> Any:
    """A copy of ``problem`` with dotted paths set (values may be spec models), re-validated (relative data
    paths keep the spec file's folder they are resolved against)."""
    from ddspec.spec.base import base_dir_of
    from ddspec.spec.loading import apply_override, validate

    raw = problem.model_dump(mode="json")
    for key, value in values.items():
        apply_override(raw, f"{key}=null")
        _set_raw(raw, key, _jsonable(value))
    return validate(raw, base_dir_of(problem))


def _set_raw(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        raw = raw[part]
    raw[last] = value


def _jsonable(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _describe(model: Any) -> str:
    fields = {k: v for k, v in model.model_dump().items() if k != "kind"}
    return f"{model.kind}(" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"


def _short(value: Any) -> str:
    return _describe(value) if hasattr(value, "model_dump") else repr(value)


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
