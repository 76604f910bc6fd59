"""The documentation site builds in strict mode (no broken link or anchor, no page left out of
the navigation), its settings reference names every setting, and the README stays short."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings
from tests.servers import ROOT

README_MAX_LINES = 150


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_site_builds_strictly(site: Path) -> None:
    for page in ("index.html", "attacking/protocol.html", "serving/settings.html"):
        assert (site / page).is_file(), page


def test_the_settings_reference_names_every_setting(site: Path) -> None:
    """The reference is generated from Settings when the site is built: a field that the
    page does not show means the generator is broken."""
    page = (site / "serving" / "settings.html").read_text()
    prefix = str(Settings.model_config.get("env_prefix", ""))
    missing = [name for name in Settings.model_fields if f"{prefix}{name}".upper() not in page]
    assert not missing, f"settings missing from the reference: {missing}"


def test_every_attack_has_its_section(site: Path) -> None:
    from attacks_client.attacks import ATTACKS

    page = (site / "attacking" / "attacks.html").read_text()
    assert "attack-params:" not in page  # every marker was replaced by its table
    for name in ATTACKS:
        assert f'id="{name}"' in page, name


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
