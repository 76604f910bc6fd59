"""The package as users get it: the sdist and the wheel build (the wheel from the sdist, as
``python -m build`` does), the wheel installs into a fresh venv, ``pip show`` says what it is,
and the console scripts ``snd-gateway`` and ``snd-attack`` answer ``--help``."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME, VERSION = PROJECT["name"], PROJECT["version"]
DIST = NAME.replace("-", "_")


def run(*command: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_the_sdist_and_wheel_build_and_the_wheel_installs(tmp_path: Path) -> None:
    run(sys.executable, "-m", "build", "--outdir", tmp_path / "dist", ROOT, cwd=tmp_path)
    sdist = tmp_path / "dist" / f"{DIST}-{VERSION}.tar.gz"
    wheel = tmp_path / "dist" / f"{DIST}-{VERSION}-py3-none-any.whl"
    with tarfile.open(sdist) as tar:
        names = {Path(n).relative_to(f"{DIST}-{VERSION}").as_posix() for n in tar.getnames()[1:]}
    assert {"LICENSE", "README.md", "pyproject.toml", "service/weights/resnet20-mnist.pt"} <= names
    with zipfile.ZipFile(wheel) as whl:
        files = set(whl.namelist())
        scripts = whl.read(f"{DIST}-{VERSION}.dist-info/entry_points.txt").decode()
        metadata = whl.read(f"{DIST}-{VERSION}.dist-info/METADATA").decode()
    assert f"{DIST}-{VERSION}.dist-info/licenses/LICENSE" in files
    assert "service/weights/resnet20-mnist.pt" in files  # the embedded default model
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in files)
    assert "snd-gateway = service.__main__:main" in scripts
    assert "snd-attack = attacks_client.cli.parser:entry" in scripts
    assert "License-Expression: MIT" in metadata.splitlines()

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    pip = [venv / "bin" / "python", "-m", "pip"]
    run(*pip, "install", "-q", "--no-deps", "--no-index", wheel)
    shown = dict(
        line.split(": ", 1) for line in run(*pip, "show", NAME).splitlines() if ": " in line
    )
    assert (shown["Name"], shown["Version"]) == (NAME, VERSION)
    assert shown["Summary"] == PROJECT["description"]
    for script in ("snd-gateway", "snd-attack"):  # installed; their imports need the deps
        assert (venv / "bin" / script).is_file()


@pytest.mark.parametrize(
    ("script", "usage"),
    [("snd-gateway", "usage: snd-gateway [-h]"), ("snd-attack", "usage: snd-attack [-h]")],
)
def test_the_console_scripts_answer_help(script: str, usage: str) -> None:
    """The scripts of the README's install (this venv), next to ``python -m ...``."""
    path = Path(sys.executable).parent / script
    assert path.is_file(), f"{script} is not installed: pip install -e . again"
    assert run(path, "--help").startswith(usage)


def test_the_license_and_citation_files_agree_with_the_project() -> None:
    assert PROJECT["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert (citation["version"], citation["license"]) == (VERSION, "MIT")
    cited = {
        ident["value"] for ref in citation["references"] for ident in ref.get("identifiers", [])
    }
    assert "arXiv:2101.04829" in cited  # the SND paper
    # every paper an attack (or the detector) cites by arXiv id is in the citation file
    sources = [*(ROOT / "attacks_client" / "attacks").glob("*.py")]
    sources += [*(ROOT / "service" / "detection").glob("*.py")]
    in_code = {m for f in sources for m in re.findall(r"arXiv:\d{4}\.\d{5}", f.read_text())}
    assert in_code and in_code <= cited, in_code - cited
