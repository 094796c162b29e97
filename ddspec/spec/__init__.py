"""The declarative spec: pydantic models, one module per axis, assembled in :mod:`.problem`.

``Problem`` is read at access time (PEP 562): it is :func:`problem_model`, rebuilt after registrations.
"""

from typing import Any

from ddspec.spec.data import DataInfo, DigitsData, IdxData, Mnist1dData, NpzData, TabularData, TorchvisionData
from ddspec.spec.distance import FeatureMeanDistance, GradientMatchDistance, MMDDistance
from ddspec.spec.evaluate import (
    AccuracyMetric,
    BlurCorruption,
    ClusterMinMetric,
    InvertCorruption,
    NoiseCorruption,
)
from ddspec.spec.model import ConvNet1dSpec, ConvNetSpec, LinearSpec, MLPSpec
from ddspec.spec.optimize import AugmentationSpec, GradientOptimize, SelectOptimize
from ddspec.spec.problem import build_problem_model, problem_model
from ddspec.spec.risk import MeanRisk
from ddspec.spec.runtime import RuntimeSpec
from ddspec.spec.synthetic import SyntheticSpec
from ddspec.spec.task import TestErrorTask
from ddspec.spec.train import GradientTrain

__all__ = [
    "AccuracyMetric", "AugmentationSpec", "BlurCorruption", "ClusterMinMetric", "ConvNet1dSpec", "ConvNetSpec",
    "DataInfo", "DigitsData", "FeatureMeanDistance", "GradientMatchDistance", "GradientOptimize", "GradientTrain",
    "IdxData", "InvertCorruption", "LinearSpec", "MLPSpec", "MMDDistance", "MeanRisk", "Mnist1dData",
    "NoiseCorruption", "NpzData", "Problem", "RuntimeSpec", "SelectOptimize", "SyntheticSpec", "TabularData",
    "TestErrorTask", "TorchvisionData", "build_problem_model", "problem_model",
]


def __getattr__(name: str) -> Any:
    if name == "Problem":
        return problem_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
