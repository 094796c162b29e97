"""Evaluation: the recorded protocol (train fresh models on D̂, final epoch), metrics, corruptions and baselines."""

from ddspec.evaluate.protocol import evaluate_distilled

__all__ = ["evaluate_distilled"]
