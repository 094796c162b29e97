"""The Python twin of examples/quickstart.yaml: distill MNIST-1D to 10 samples per class with
distribution matching, evaluate, and print the metrics.

    .venv/bin/python examples/quickstart.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import ddspec
from ddspec.spec import (
    AugmentationSpec,
    BlurCorruption,
    ConvNet1dSpec,
    FeatureMeanDistance,
    GradientOptimize,
    InvertCorruption,
    Mnist1dData,
    NoiseCorruption,
    SyntheticSpec,
)


def build_problem() -> ddspec.Problem:
    """The same problem as quickstart.yaml, declared in Python."""
    return ddspec.Problem(
        name="quickstart",
        data=Mnist1dData(),
        synthetic=SyntheticSpec(per_class=10, init="real"),
        model=ConvNet1dSpec(),
        distance=FeatureMeanDistance(),
        optimize=GradientOptimize(iterations=1000, augmentation=AugmentationSpec(enabled=False)),
        evaluate={
            "seeds": [0, 1, 2],
            "baselines": ["random"],
            "corruptions": [NoiseCorruption(variance=0.005), BlurCorruption(radius=2), InvertCorruption()],
        },
    )


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart-py")
    plan = ddspec.compile(build_problem())
    print(plan.explain())
    result = plan.run(out=out)
    acc, random = result.metrics["accuracy"], result.metrics["baselines"]["random"]["accuracy"]
    print(f"accuracy {acc['mean']:.3f} ± {acc['std']:.3f} over seeds {result.metrics['seeds']} "
          f"(random real samples: {random['mean']:.3f} ± {random['std']:.3f}); report: {out}/report.html")


if __name__ == "__main__":
    main()
