"""Run loop, progress, checkpoints and resume, seeding, artifacts, report."""
