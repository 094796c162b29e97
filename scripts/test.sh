#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then run the default test suite (slow tests are benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
