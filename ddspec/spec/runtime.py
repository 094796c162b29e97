"""``runtime``: where and how a run executes (device, seed, threads, checkpoints)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ddspec.spec.base import PositiveInt, SpecModel
from ddspec.spec.distributed import DistributedSpec

if TYPE_CHECKING:
    from ddspec.analysis.facts import Analysis
    from ddspec.errors import Finding


class RuntimeSpec(SpecModel):
    """Device, seed and checkpointing. The same spec and seed on CPU give identical distilled tensors."""

    smoke: ClassVar[dict[str, Any]] = {"progress": False}
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(0, ge=0, le=2**63 - 1)
    threads: PositiveInt | None = Field(
        1, le=1024,
        description="torch intra-op threads. 1 is fastest for the small models of CPU distillation (more threads "
        "contend on a busy machine) and makes CPU results independent of the core count; None keeps torch's default.",
    )
    checkpoint_every: PositiveInt = Field(100, description="Save a checkpoint every N outer iterations.")
    progress: bool = True
    distributed: DistributedSpec = Field(
        default_factory=DistributedSpec,
        description="How a run launched by torchrun splits its scenarios and evaluations across ranks (docs/distributed.md).",
    )

    def findings(self, analysis: Analysis) -> Iterable[Finding]:
        yield from self.distributed.findings(analysis)
