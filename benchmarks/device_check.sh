#!/usr/bin/env bash
# The GPU check (one GPU, under 8 minutes): the `cuda` tests, then the GPU rows of the benchmarks — the bilevel
# engines torch_func vs higher at K = 10 and 50 (benchmarks/bilevel.py --device cuda) and matching (DM) and bilevel
# on MNIST-1D at the reference budgets (benchmarks/device_runs.py) — each under its own time limit. Results:
# benchmarks/results/device_tests.md (the pytest summary), device_bilevel_engines.md/.json, device_runs.md/.json;
# copied to $OUT too when it is set (the device machine's return folder).
#
#     bash benchmarks/device_wheels.sh                     # here: wheels of what the GPU image lacks, into .whl/
#     bash benchmarks/device_check.sh                      # there, from the repository root, with .whl carried
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
RESULTS=benchmarks/results
failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, remember a failure, go on
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start))s"
  [ "$rc" -eq 0 ] || failed+=("$name (exit $rc)")
}

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print(torch.__version__, torch.cuda.get_device_name(0))" \
  || exit 1
step tests 210 bash -c "'$PY' -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider -o addopts='' 2>&1 \
  | tee /tmp/device_tests.log; exit \${PIPESTATUS[0]}"
{ echo "# CUDA tests (pytest -m cuda tests/test_cuda.py)"; echo; echo '```'; tail -n 40 /tmp/device_tests.log; echo '```'
  echo; echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0), "torch", torch.__version__)')."
  echo "Reproduce: \`bash benchmarks/device_check.sh\`"; } > "$RESULTS/device_tests.md"
step engines 90 "$PY" benchmarks/bilevel.py --skip-accuracy --skip-learners --device cuda --name device_bilevel_engines
step runs 150 "$PY" benchmarks/device_runs.py --name device_runs
if [ -n "${OUT:-}" ]; then
  cp "$RESULTS"/device_tests.md "$RESULTS"/device_bilevel_engines.* "$RESULTS"/device_runs.* "$OUT"/ 2>/dev/null
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "device check: failed: ${failed[*]}"
  exit 1
fi
echo "device check: every step passed"
