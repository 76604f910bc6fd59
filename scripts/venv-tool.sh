#!/usr/bin/env bash
# Run a development tool (ruff, mypy, ...) from the project's .venv when there is one, else from
# PATH: the pre-commit hooks call this so they use the pinned tools without activating the venv.
set -euo pipefail
tool=$1
shift
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -x "$root/.venv/bin/$tool" ]]; then
  exec "$root/.venv/bin/$tool" "$@"
fi
exec "$tool" "$@"
