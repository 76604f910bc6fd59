#!/usr/bin/env bash
# What to run when a GPU is lent: the CUDA tests, then the GPU figures into docs/performance-gpu.md.
#   bash scripts/gpu-check.sh            (about 5 minutes on one GPU; at most 8)
# Without a CUDA device it prints "no CUDA device" and exits 0. It exits non-zero when a CUDA test
# fails (the page is still written, saying so). PYTHON picks the interpreter (default: .venv's,
# else python3); it needs the package and its [test] extra installed (scripts/install.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x "$PY" ]] || PY=$(command -v python3)
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "no CUDA device"
  exit 0
fi
if ! "$PY" -c "import service, attacks_client, pytest" 2>/dev/null; then
  echo "gpu-check: $PY cannot import the package and pytest; run scripts/install.sh first" >&2
  exit 2
fi
"$PY" -c "import torch; print('CUDA device:', torch.cuda.get_device_name(0))"
timeout 180 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/service/test_cuda.py
tests=$?
case $tests in
  0) outcome="all passed" ;;
  124) outcome="**timed out** (180 s)" ;;
  *) outcome="**failed** (pytest exit $tests)" ;;
esac
timeout 300 "$PY" -m benchmarks.bench_gpu --write docs/performance-gpu.md --tests "$outcome"
bench=$?
if [[ $tests -ne 0 ]]; then
  echo "gpu-check: CUDA tests $outcome" >&2
  exit 1
fi
exit $bench
