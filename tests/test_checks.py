"""The repository's own checks pass on the tree: ruff (lint and format), mypy, and the
pre-commit configuration that runs them (CONTRIBUTING.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

BIN = Path(sys.executable).parent
MYPY_TARGETS = [
    "attacks_client",
    "service",
    "benchmarks",
    "tests/attacks_client",
    "tests/benchmarks",
]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint_is_clean() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = run(str(BIN / "ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean(tmp_path: Path) -> None:
    result = run(str(BIN / "mypy"), "--cache-dir", str(tmp_path), *MYPY_TARGETS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_pre_commit_config_is_valid_and_runs_these_checks() -> None:
    if not (BIN / "pre-commit").exists():
        pytest.fail("pre-commit is part of the [test] extra; reinstall with scripts/test.sh")
    result = run(str(BIN / "pre-commit"), "validate-config", ".pre-commit-config.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    for entry in ("ruff check", "ruff format", "mypy " + " ".join(MYPY_TARGETS)):
        assert f"scripts/venv-tool.sh {entry}" in config
