#!/usr/bin/env bash
# Wheels for the GPU machine (benchmarks/device_check.sh), built HERE, where pip reaches the package index: the
# dependencies of ddspec that the machine's image lacks (its package list: /work/.library/device/KINDS.md), at the
# versions installed in this checkout's .venv, for CPython 3.12 on manylinux x86-64, into .whl/ (git-ignored
# through .git/info/exclude). A package with no binary wheel (pure Python, sdist only) is built into a wheel here.
#
#     bash benchmarks/device_wheels.sh          # then carry .whl with the device run of device_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# pydantic and its parts (typing_extensions: pydantic needs a newer one than some images hold); cvxpy and its
# solvers and their needs (clarabel needs cffi); higher; mnist1d; highspy (the milp backend, and cvxpy's);
# scikit-learn (ddspec needs >= 1.8, newer than some images hold).
PACKAGES=(pydantic pydantic_core annotated-types typing-inspection typing_extensions cvxpy osqp clarabel cffi pycparser
          scs qdldl sparsediffpy higher mnist1d highspy scikit-learn)
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
for name in "${PACKAGES[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null) || {
    echo "skip $name: not installed in $PY"; continue; }
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${PLATFORMS[@]}" -d .whl "$name==$version"; then
    "$PY" -m pip wheel -q --no-deps -w .whl "$name==$version"  # pure Python from its sdist
  fi
done
ls -l .whl
du -sh .whl
