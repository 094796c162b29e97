#!/usr/bin/env bash
# Create .venv/ in the repo root and install ddspec into it, with the CPU build of torch pinned first
# (a plain `pip install torch` would pull several GB of CUDA packages). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
