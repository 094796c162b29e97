#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then run the main job: examples/quickstart.yaml → runs/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out="${1:-runs/quickstart}"
# A finished run is kept (a new folder is used); an interrupted one is resumed.
resume=()
if [ -e "$out/metrics.json" ]; then out="$out-$(date +%Y%m%d-%H%M%S)"
elif [ -e "$out/checkpoint.pt" ] || [ -e "$out/distilled.safetensors" ]; then resume=(--resume); fi
exec .venv/bin/ddspec run examples/quickstart.yaml --out "$out" "${resume[@]}"
