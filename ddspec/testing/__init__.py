"""Validate your formulations in your own tests: the checks ddspec uses on itself (docs/testing.md).

- :func:`assert_well_posed` — validate and analyse a spec; fail unless exactly the expected finding codes come back.
- :func:`shrink` — the same problem at smoke size (each kind declares its budgets), same backend and facts.
- :func:`run_smoke` — shrink, run, evaluate, and check the artifact contract; returns the run's Result.
- :func:`check_hypergradient` — the outer gradient a backend steps along against finite differences of its
  objective, on a tiny float64 instance (zero-order: the estimator's mean); :func:`check_outer_gradient` — the
  same comparison on an :class:`~ddspec.backends.base.OuterGradient` built by hand.
- :func:`check_determinism`, :func:`check_resume` — one seed, one result; interrupted and resumed = uninterrupted
  (at smoke size, on the CPU).
- :func:`check_kind` — the generic checks of a kind class (schema, reference, docstring, round trip, builder,
  and what the builder builds, run on small random inputs, against its capabilities).
- A pytest plugin: ``pytest --ddspec-specs DIR`` validates and smoke-runs every spec (``*.yaml``, ``*.yml``) in DIR.

A failed check raises :class:`CheckFailed` (an AssertionError) with the codes, paths, fixes or relative errors that
explain it; a check that does not apply raises :class:`NotApplicable`. Importing this module does not import torch.
"""

from ddspec.testing.determinism import check_determinism, check_resume
from ddspec.testing.errors import (
    ArtifactContractBroken,
    CheckFailed,
    HypergradientMismatch,
    KindCheckFailed,
    NotApplicable,
    NotDeterministic,
    NotWellPosed,
    ResumeDiffers,
    ShrinkFailed,
    SmokeRunFailed,
)
from ddspec.testing.gradients import GradientReport, check_hypergradient, check_outer_gradient
from ddspec.testing.kinds import check_kind
from ddspec.testing.shrink import shrink
from ddspec.testing.smoke import check_artifacts, run_smoke
from ddspec.testing.wellposed import assert_well_posed

__all__ = [
    "ArtifactContractBroken", "CheckFailed", "GradientReport", "HypergradientMismatch", "KindCheckFailed",
    "NotApplicable", "NotDeterministic", "NotWellPosed", "ResumeDiffers", "ShrinkFailed", "SmokeRunFailed",
    "assert_well_posed", "check_artifacts", "check_determinism", "check_hypergradient", "check_kind", "check_outer_gradient",
    "check_resume", "run_smoke", "shrink",
]
