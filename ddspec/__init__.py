"""ddspec: dataset distillation from first principles — declare, check, compile, run, evaluate.

>>> import ddspec
>>> problem = ddspec.load("examples/quickstart.yaml")
>>> plan = ddspec.compile(problem)
>>> print(plan.explain())
>>> result = plan.run(out="runs/quickstart")

Imports are lazy so that validating a spec does not import torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Problem", "__version__", "compile", "load", "register", "register_backend"]


def __getattr__(name: str) -> Any:
    if name == "load":
        from ddspec.spec.loading import load

        return load
    if name == "compile":
        from ddspec.compiler.plan import compile

        return compile
    if name == "Problem":  # the model for the registries as they are now (rebuilt after registrations)
        from ddspec.spec.problem import problem_model

        return problem_model()
    if name in ("register", "register_backend"):
        import ddspec.registry

        return getattr(ddspec.registry, name)
    raise AttributeError(f"module 'ddspec' has no attribute {name!r}")
