#!/usr/bin/env bash
# Install everything the tests need (a venv, the package with [test,plots,parity,oip], redis-server)
# and run them.
# The install step is scripts/install.sh, the same script the Dockerfile runs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv EXTRAS=test,plots,parity,oip EDITABLE=1 INSTALL_REDIS=1 bash scripts/install.sh
.venv/bin/python -m pytest --durations=30 "$@"
