"""Categorical data distilled by integer programming: statistics Q over cells, the count program and its solvers,
the rounding heuristic, the differentiable relaxation, and the classifiers the evaluation fits (docs/categorical.md)."""
