"""Structural facts about a problem and the well-posedness rules checked before compiling."""
