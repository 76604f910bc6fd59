"""The package root is the public API, and the example in its docstring and the README runs."""

from __future__ import annotations

import contextlib
import io
import re

import attacks_client
from tests.servers import ROOT, ServiceProcess

PUBLIC = {
    "ATTACKS",
    "Attack",
    "AttackResult",
    "Experiment",
    "HttpOracle",
    "OipOracle",
    "evaluate",
    "get_attack",
    "open_oracle",
}


def example(text: str, marker: str) -> str:
    """The first ```python block after ``marker`` (or the indented one of a docstring)."""
    after = text[text.index(marker) :]
    fenced = re.search(r"```python\n(.*?)```", after, re.S)
    if fenced:
        return fenced.group(1)
    block = re.search(r"\n\n((?:    .*\n|\n)+)", after)
    assert block, "no example found"
    return "\n".join(line[4:] for line in block.group(1).splitlines())


def test_the_root_exports_the_public_api() -> None:
    assert set(attacks_client.__all__) == PUBLIC
    assert all(getattr(attacks_client, name) is not None for name in PUBLIC)
    assert list(attacks_client.ATTACKS)[:4] == ["boundary", "sign-opt", "hsja", "geoda"]


def test_the_examples_run_against_a_real_server() -> None:
    readme = example((ROOT / "README.md").read_text(), "**From Python**")
    docstring = example(attacks_client.__doc__ or "", "the ART adapter")
    assert readme.strip() == docstring.strip()  # one example, said the same way in both places
    with ServiceProcess({"defense": "none"}) as server:
        code = readme.replace("http://127.0.0.1:8000", server.url)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README example", "exec"), {})
    queries, l2 = out.getvalue().split()
    # image 1 is classified correctly, so the attack has work to do: a real, nonzero distance
    assert int(queries) == 1000 and 0.1 < float(l2) < 10
