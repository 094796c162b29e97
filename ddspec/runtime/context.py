"""What a backend receives: the resolved problem, the data on its device, seeded randomness, a loop."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ddspec.components.training.optimizers import lr_scheduler, make_optimizer
from ddspec.registry import MODELS
from ddspec.runtime.artifacts import CHECKPOINT
from ddspec.runtime.distributed import Ranks
from ddspec.runtime.loop import Loop

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis
    from ddspec.components.data.base import Dataset


@dataclass
class RunContext:
    """Everything a backend's ``run`` may use.

    ``prepare_seconds``: time a backend spent before its loop (e.g. training experts), counted in
    ``distill_seconds``.

    ``generator`` (CPU, seeded from ``runtime.seed``) is the only source of randomness a backend
    should draw from besides the global torch RNG (which seeds model initialisations); both are
    checkpointed, so runs are reproducible and resumable.

    ``dtype``: what the learned synthetic tensors are computed in (float32; float64 for the gradient checks of
    :func:`ddspec.testing.check_hypergradient`).

    ``ranks``: the processes of a run launched by torchrun (:mod:`ddspec.runtime.distributed`; one process by
    default). A backend that splits its scenarios across them draws each scenario's randomness inside
    :meth:`scenario`, never from ``generator`` or the global RNG directly, so the split changes no draw.
    """

    problem: Any
    analysis: Analysis
    data: Dataset
    device: torch.device
    out: Path
    resume: bool = False
    generator: torch.Generator = field(default_factory=torch.Generator)
    loops: list[Loop] = field(default_factory=list)
    prepare_seconds: float = 0.0
    dtype: torch.dtype = torch.float32
    ranks: Ranks = field(default_factory=Ranks)

    @classmethod
    def start(cls, problem: Any, analysis: Analysis, out: Path, *, resume: bool = False,
              dtype: torch.dtype = torch.float32, ranks: Ranks | None = None) -> RunContext:
        """The context of a run of ``problem`` into ``out``: the device of ``runtime.device``, every RNG seeded from
        ``runtime.seed`` (:func:`~ddspec.runtime.device.seed_everything`, which also sets the threads), and the
        data loaded, checked and moved to the device; with a ``dtype`` other than float32 (the float64 gradient
        checks) the data's floating tensors and the learned synthetic tensors are in ``dtype``; under torchrun
        (``ranks``) each rank on its own GPU."""
        from ddspec.components.data import load_dataset
        from ddspec.runtime import device as devices

        ranks = ranks or Ranks()
        device = ranks.device(devices.select_device(problem.runtime.device))
        generator = devices.seed_everything(problem.runtime.seed, problem.runtime.threads)
        data = load_dataset(problem.data).to(device)
        if dtype != torch.float32:
            def cast(t: torch.Tensor) -> torch.Tensor:
                return t.to(dtype) if t.is_floating_point() else t

            data = replace(data, x_train=cast(data.x_train), y_train=cast(data.y_train), x_test=cast(data.x_test),
                           y_test=cast(data.y_test))
        return cls(problem, analysis, data, device, out, resume=resume, generator=generator, dtype=dtype, ranks=ranks)

    def outer(self, tensors: dict[str, torch.Tensor], desc: str, fix: str, state: dict[str, Any] | None = None
              ) -> tuple[torch.optim.Optimizer, Loop]:
        """The outer optimizer of a gradient ``optimize`` (SGD or Adam with its lr, momentum and weight decay) over
        the learned ``tensors``, and a checkpointed loop over ``optimize.iterations`` that saves the tensors, the
        optimizer, its lr schedule (``optimize.lr_schedule``: a torch scheduler stepped after each iteration) and
        the extra ``state``."""
        opt = self.problem.optimize
        optimizer = make_optimizer(opt.optimizer, tensors.values(), opt.lr, opt.momentum, opt.weight_decay)
        saved = {**tensors, "opt": optimizer, **(state or {})}
        after_each = None
        if opt.lr_schedule != "constant":
            scheduler = lr_scheduler(optimizer, opt.lr_schedule, opt.iterations)
            saved["lr_schedule"] = scheduler
            after_each = scheduler.step
        return optimizer, self.loop(opt.iterations, saved, desc, fix, after_each)

    @property
    def show_progress(self) -> bool:
        """Progress bars are drawn when ``runtime.progress`` asks for them, by the rank that writes."""
        return self.problem.runtime.progress and self.ranks.writer

    def loop(self, total: int, state: dict[str, Any], desc: str = "distill", fix: str = "",
             after_each: Callable[[], Any] | None = None) -> Loop:
        """A checkpointed loop over ``total`` iterations; ``state`` (with the generator added) is what its
        checkpoints save; ``after_each()`` runs after every iteration."""
        loop = Loop(
            self.out / CHECKPOINT, total, self.problem.runtime.checkpoint_every,
            {**state, "generator": self.generator}, desc=desc, show=self.show_progress,
            resume=self.resume, fix=fix, after_each=after_each, ranks=self.ranks,
        )
        self.loops.append(loop)
        return loop

    def replay(self, *stateful: Any) -> Callable[[], Any]:
        """Common random numbers: a context-manager factory whose every block starts from the run's generator,
        the global torch RNGs (CPU, and CUDA on a CUDA device) and the ``state_dict`` of each of ``stateful`` (e.g.
        a model pool) as they are now, so that repeated evaluations of one objective see the same draws."""
        rng, generator = torch.get_rng_state(), self.generator.get_state()
        cuda = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        states = [copy.deepcopy(s.state_dict()) for s in stateful]

        @contextmanager
        def block() -> Iterator[None]:
            torch.set_rng_state(rng)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
            self.generator.set_state(generator)
            for s, state in zip(stateful, states):
                s.load_state_dict(copy.deepcopy(state))
            yield
        return block

    @contextmanager
    def scenario(self, iteration: int, index: int) -> Iterator[torch.Generator]:
        """Scenario ``index`` of outer iteration ``iteration``: inside the block the global torch RNGs (CPU, and the
        CUDA device's) are seeded from (runtime.seed, iteration, index) and restored afterwards, and the yielded
        generator is seeded the same way; so a scenario's draws (its initialisation, its mini-batches, a
        regularizer's rows) depend on nothing else, whichever rank runs it."""
        seed = scenario_seed(self.problem.runtime.seed, iteration, index)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield torch.Generator().manual_seed(seed)

    def new_model(self, spec: Any = None) -> torch.nn.Module:
        """A freshly initialised model (from the global torch RNG) of ``spec`` (default: the problem's)."""
        spec = spec if spec is not None else self.problem.model
        return MODELS.build(spec, self.data.input_shape, self.data.targets.num_outputs).to(self.device)

    def new_model_seeded(self, seed: int, spec: Any = None) -> torch.nn.Module:
        """:meth:`new_model` initialised from ``seed``, leaving the global torch RNG as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.new_model(spec)

    def scenario_models(self) -> list[Any]:
        """The architectures the scenarios cycle through (``scenarios.models`` or the problem's model)."""
        return list(self.problem.scenarios.models) or [self.problem.model]

    def real_batch(self, per_stratum: int) -> torch.Tensor:
        """Training-set indices of ``per_stratum`` random real rows of every stratum (class), stratum by stratum."""
        return torch.cat([self.sample_real(idx, per_stratum) for idx in self.data.strata()])

    def sample_real(self, indices: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` indices drawn without replacement from ``indices`` (all of them if fewer), from ``generator``
        (default: the run's)."""
        perm = torch.randperm(len(indices), generator=generator or self.generator)[: min(n, len(indices))]
        return indices[perm.to(indices.device)]


def scenario_seed(seed: int, iteration: int, index: int) -> int:
    """A 63-bit seed mixed from (run seed, iteration, scenario index) by numpy's SeedSequence (distinct triples give
    independent streams)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, iteration, index]).generate_state(1, np.uint64)[0] >> 1)
