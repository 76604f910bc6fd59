#!/usr/bin/env bash
# Install the package: the one install step of `scripts/test.sh` (the README's) and the Dockerfile.
#
#   bash scripts/install.sh               # .venv, redis-server when absent, pip install -e '.[test,plots]'
#   bash scripts/install.sh --torch-only  # only torch/torchvision (the Docker layer that survives edits)
#
# Environment (the defaults are the README's development install; the Dockerfile sets the rest):
#   VENV=.venv        the virtual environment to create and install into; empty: the current python
#   EXTRAS=test,plots the extras; empty: none
#   EDITABLE=1        pip install -e (0: a regular, non-editable install)
#   INSTALL_REDIS=1   install redis-server with apt-get when it is missing (the tests need it)
#   TORCH_INDEX=      a PyTorch wheel index for torch/torchvision first, e.g.
#                     https://download.pytorch.org/whl/cpu or .../whl/cu124; empty: pip's own
#                     index (and find-links), first only with --torch-only
#   PYTHON=python3.11 the interpreter that creates the venv (or installs, with VENV empty)
#   DRY_RUN=1         print the commands instead of running them
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV-.venv}
EXTRAS=${EXTRAS-test,plots}
EDITABLE=${EDITABLE:-1}
INSTALL_REDIS=${INSTALL_REDIS:-1}
TORCH_INDEX=${TORCH_INDEX:-}
TORCH_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --torch-only) TORCH_ONLY=1 ;;
        *) echo "install.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

run() {
    if [ -n "${DRY_RUN:-}" ]; then echo "+ $*"; else "$@"; fi
}

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ "$INSTALL_REDIS" = 1 ] && ! command -v redis-server >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    run $SUDO apt-get update -qq
    run $SUDO apt-get install -y -qq redis-server
fi

if [ -n "$VENV" ]; then
    [ -x "$VENV/bin/python" ] || run "$PYTHON" -m venv "$VENV"
    PY="$VENV/bin/python"
else
    PY="$PYTHON"
fi

if [ -n "$TORCH_INDEX" ] || [ "$TORCH_ONLY" = 1 ]; then
    # the pins live in pyproject.toml only; a local tag (2.14.1+cpu) satisfies torch==2.14.1
    mapfile -t TORCH_PINS < <(sed -n 's/^ *"\(torch[a-z]*==[^"]*\)".*/\1/p' pyproject.toml)
    [ "${#TORCH_PINS[@]}" -gt 0 ] || { echo "install.sh: no torch pin in pyproject.toml" >&2; exit 1; }
    # no TORCH_INDEX: pip's own index and find-links (a local wheel directory)
    run "$PY" -m pip install -q ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "${TORCH_PINS[@]}"
fi
[ "$TORCH_ONLY" = 1 ] && exit 0

TARGET="."
[ -n "$EXTRAS" ] && TARGET=".[$EXTRAS]"
if [ "$EDITABLE" = 1 ]; then
    run "$PY" -m pip install -q -e "$TARGET"
else
    run "$PY" -m pip install -q "$TARGET"
fi
