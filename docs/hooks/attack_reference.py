"""MkDocs hook: each attack's hyperparameters and defaults, read from the attack classes.

On a page with markers ``<!-- attack-params: NAME -->`` (docs/attacking/attacks.md) each marker
becomes a table of the attack's ``__init__`` hyperparameters (type, default, and the line its
docstring's ``Args:`` gives, if any): what ``python -m attacks_client NAME --show-params``
prints. Every registered attack must have its marker there, so an attack added to the registry
without a section, or a section of an attack that is gone, stops the build.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Literal, get_args, get_origin

from attacks_client.attacks import ATTACKS
from attacks_client.attacks.params import attack_signature

MARKER = re.compile(r"<!-- attack-params: ([a-z0-9-]+) -->")


def _args_section(cls: type) -> dict[str, str]:
    """``name -> description`` from a Google-style ``Args:`` block of the class docstring."""
    doc = inspect.getdoc(cls) or ""
    if "Args:" not in doc:
        return {}
    out: dict[str, str] = {}
    current = None
    for line in doc.split("Args:", 1)[1].splitlines():
        entry = re.match(r"^    (\w+(?:, \w+)*): (.*)$", line)
        if entry:
            current = entry.group(1)
            out[current] = entry.group(2)
        elif line.startswith("        ") and current:
            out[current] += " " + line.strip()
        elif line.strip():
            break
    for names in [k for k in out if ", " in k]:  # "a, b: the schedule" describes each
        for name in names.split(", "):
            out.setdefault(name, out[names])
    return {k: _plain(v) for k, v in out.items()}


def _plain(text: str) -> str:
    """Docstring markup as Markdown: ````x```` and ``:class:`~a.B``` become code spans."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text.replace("``", "`"))
    return " ".join(text.split())


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " / ".join(f"`{choice}`" for choice in get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "none").replace(" | ", " or ")


def _value(default: Any) -> str:
    """A default as ``--param`` spells it."""
    if default is None or isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default}`"


def table(name: str) -> str:
    """The Markdown table of one attack's hyperparameters."""
    cls = ATTACKS[name]
    described = _args_section(cls)
    kind = "scores (score-based)" if cls.needs_scores else "labels only (decision-based)"
    signature = attack_signature(cls)
    lines = [f"Asks for: {kind}. Class: `{cls.__module__}.{cls.__qualname__}`.", ""]
    if any(param in described for param in signature):
        lines += ["| `--param` | type | default | meaning |", "|---|---|---|---|"]
    else:
        lines += ["| `--param` | type | default |", "|---|---|---|"]
    for param, (annotation, default) in signature.items():
        row = f"| `{param}` | {_type_name(annotation)} | {_value(default)} |"
        if any(param in described for param in signature):
            row += " " + described.get(param, "").replace("|", "\\|") + " |"
        lines.append(row)
    return "\n".join(lines)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs event: replace every marker with its table; every attack needs one."""
    found = MARKER.findall(markdown)
    if not found:
        return markdown
    missing = sorted(set(ATTACKS) - set(found))
    unknown = sorted(set(found) - set(ATTACKS))
    if missing or unknown:
        raise ValueError(f"attack reference: no section for {missing}; not attacks: {unknown}")
    return MARKER.sub(lambda match: table(match.group(1)), markdown)
