"""A pool of scenario models that keep training on the synthetic set across outer iterations.

Model m has parameters θ^m and an age a_m (inner steps taken since its initialisation). An outer
iteration unrolls K steps from θ^m (the scenario's θ_0) and the pool keeps the trained θ_K, detached:
θ^m ← θ_K, a_m ← a_m + K. Once a_m reaches its lifetime the model is re-initialised (a_m ← 0). Model m's
first lifetime is ⌈(m+1)/P · max_steps⌉ and every later one ``max_steps``, so the P ages stay spread over
[0, max_steps) instead of moving in step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

Tensors = list[torch.Tensor]


class ModelPool:
    """``size`` models built by ``make(m)`` (fresh initialisations); each module holds its θ^m (see the module
    docstring)."""

    def __init__(self, make: Callable[[int], nn.Module], size: int, max_steps: int) -> None:
        self.make = make
        self.max_steps = max_steps
        self.models = [make(m) for m in range(size)]
        self.ages = torch.zeros(size, dtype=torch.int64)
        self.lifetimes = torch.tensor([math.ceil((m + 1) * max_steps / size) for m in range(size)])
        self._pending: dict[int, Tensors] = {}

    def __len__(self) -> int:
        return len(self.models)

    @property
    def params(self) -> list[Tensors]:
        """θ^m of every model (its module's parameters, detached)."""
        return [[p.detach() for p in model.parameters()] for model in self.models]

    def start(self, m: int) -> tuple[nn.Module, Tensors]:
        """(model m, θ^m): a scenario's network and θ_0."""
        return self.models[m], [p.detach() for p in self.models[m].parameters()]

    def record(self, m: int, outer: Callable[[Tensors], torch.Tensor]) -> Callable[[Tensors], torch.Tensor]:
        """``outer`` that also keeps the parameters it is evaluated at (θ_K) as model m's next state."""
        def recorded(params: Tensors) -> torch.Tensor:
            self._pending[m] = [p.detach() for p in params]
            return outer(params)
        return recorded

    def advance(self, steps: int) -> None:
        """Commit the recorded θ_K of every model used this iteration (``steps`` inner steps each); re-initialise
        the models whose age reaches their lifetime."""
        for m, params in sorted(self._pending.items()):
            self.ages[m] += steps
            if self.ages[m] >= self.lifetimes[m]:
                params = list(self.make(m).parameters())
                self.ages[m] = 0
                self.lifetimes[m] = self.max_steps
            with torch.no_grad():
                for p, value in zip(self.models[m].parameters(), params):
                    p.copy_(value)
        self._pending.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"models": [model.state_dict() for model in self.models], "ages": self.ages.clone(),
                "lifetimes": self.lifetimes.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for model, saved in zip(self.models, state["models"]):
            model.load_state_dict(saved)
        self.ages = state["ages"].clone()
        self.lifetimes = state["lifetimes"].clone()


def pool_slots(iteration: int, inits: int, size: int) -> Sequence[int]:
    """The pool models that iteration ``iteration`` unrolls: the next ``inits`` in cyclic order."""
    return [(iteration * inits + s) % size for s in range(inits)]
