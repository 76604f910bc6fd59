"""MkDocs hook: the settings reference, generated from the service's ``Settings`` at build time.

A page holding the marker ``<!-- settings-reference -->`` (docs/serving/settings.md) gets, in its
place, one table of every field of ``Settings`` (environment variable, flag, type, default,
description) and one table per nested model (the entries of ``SND_MODELS`` and what they hold),
walked from the fields' annotations. Nothing is written by hand but :data:`GROUPS` (headings)
and :data:`NOTES` (words a field's ``description`` lacks); both name fields, and a name that is
no longer a field stops the build, so the page cannot drift from the class.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from service.settings import Settings

MARKER = "<!-- settings-reference -->"

# the first field of each group of Settings, in declaration order: a heading before it
GROUPS: dict[str, str] = {
    "host": "Server",
    "model": "One model (the flat shortcut; refused beside `SND_MODELS`)",
    "device": "Inference, batching and limits",
    "redis_url": "Accounting, Redis and access",
    "detection_secret": "Stateful detection (per server; each model chooses its action)",
}

# what a field's own description does not say (the key is a field of Settings or of a nested
# model, written ``Model.field`` for the nested ones)
NOTES: dict[str, str] = {
    "host": "address to listen on (`0.0.0.0` in the container image)",
    "port": "port to listen on",
    "log_level": "uvicorn and the service's log level",
    "model": "zoo entry: `resnet20-mnist`, `resnet20-cifar10`, `resnet50-imagenet`, or a "
    "comparison defense (`resnet20-mnist-rse`, `-pni`, `-pgdat`)",
    "weights": "local weights file (`torch.load(weights_only=True)`); CIFAR-10 and ImageNet "
    "need one",
    "defense": "`rp`: random resize and pad (Xie et al. 2018)",
    "sigma": "SND noise standard deviation, in [0, 1] pixel units",
    "noise": "the noise's distribution, with the same standard deviation σ",
    "sigma_distribution": "`beta`: σ scaled by k ~ Beta(α, β) per image (paper App. C)",
    "alpha": "α of the Beta distribution",
    "beta": "β of the Beta distribution",
    "clip": "clip noisy images to [0, 1]",
    "label_only": "never return scores (decision-based threat model)",
    "hide_defense_params": "`GET /models` shows the defense kind only",
    "detection": "the one model's detection action",
    "models": "several models, as a JSON list of model entries (below); replaces the flat "
    "one-model settings",
    "device": "`auto`: `cuda` when available, else `cpu`",
    "batch_wait_ms": "with 0 a lone request is answered at once",
    "allow_download": "ResNet-50 weights only; nothing downloads otherwise",
    "max_body_bytes": "largest request body; larger is 413 `body_too_large`",
    "admin_token_sha256": "sha256 hex of the admin token; unset: admin routes off. Admin "
    "routes need `Authorization: Bearer <token>`",
    "api_keys": "keys are stored hashed and compared in constant time; clients send `X-API-Key`",
    "default_budget": "query budget of every caller not in `budgets`; unset: no limit",
    "fail_open": "`false`: while the counter is unreachable, 503 + `Retry-After` and `/readyz` "
    "fails; `true`: uncounted answers, counted in the metric `snd_queries_uncounted_total`",
    "trusted_proxies": 'CIDRs (`["10.0.0.0/8"]`); `X-Forwarded-For` is honoured only from '
    "these peers",
    "retry_after_s": "the `Retry-After` of a 429 or 503",
    "ModelSettings.name": "the name clients ask for (`model` of a request, `/v2/models/{name}`)",
    "ModelSettings.defense": "the defense in front of the model",
    "ModelSettings.detection": "stateful detection in front of the model",
    "DefenseSettings.kind": "`none`, `snd`, or `rp` (random resize and pad)",
    "DetectionSettings.layers": "`exact`: keyed digest of the pixels; `near`: Blacklight's "
    "probabilistic fingerprint",
}


def _constraints(metadata: list[Any]) -> str:
    words = []
    for item in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if isinstance(item, annotated_types.BaseMetadata) and value is not None:
                words.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
        if isinstance(item, annotated_types.MinLen):
            words.append("not empty" if item.min_length == 1 else f"≥ {item.min_length} long")
    return ", ".join(words)


def _type(annotation: Any, models: list[tuple[type[BaseModel], str]], where: str) -> str:
    """The annotation in words; a nested model is queued for its own table and linked."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " / ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        text = " or ".join(_type(a, models, where) for a in present)
        return text + (", optional" if len(present) < len(args) else "")
    if origin is list:
        return "JSON list of " + _type(args[0], models, where + "[]")
    if origin is dict:
        return f"JSON object {_type(args[0], models, where)} → {_type(args[1], models, where)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if all(model is not annotation for model, _ in models):
            models.append((annotation, where))
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if annotation is SecretStr:
        return "secret string"
    return getattr(annotation, "__name__", str(annotation)).replace("Path", "path")


def _value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, list | dict):
        return f"`{value!r}`".replace("'", '"')
    return f"`{value}`"


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return _value(field.default_factory())
    if field.default is PydanticUndefined:
        return "required"
    return _value(field.default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _description(key: str, field: Any, used: set[str]) -> str:
    parts = [field.description or ""]
    if key in NOTES:
        used.add(key)
        parts.append(NOTES[key])
    return _cell("; ".join(p for p in parts if p))


def _settings_table(models: list[tuple[type[BaseModel], str]], used: set[str]) -> list[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    lines: list[str] = []
    for name, field in Settings.model_fields.items():
        if name in GROUPS:
            used.add(name + "@group")
            lines += ["", f"### {GROUPS[name]}", "", "| setting | type | default | meaning |"]
            lines.append("|---|---|---|---|")
        env = f"{prefix}{name}".upper()
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            flag += f"`, `--no-{name.replace('_', '-')}"
        kind = _type(field.annotation, models, env)
        limits = _constraints(field.metadata)
        if limits:
            kind += f" ({limits})"
        described = _description(name, field, used)
        lines.append(f"| `{env}`<br>`{flag}` | {kind} | {_default(field)} | {described} |")
    return lines


def _model_table(
    model: type[BaseModel], where: str, models: list[tuple[type[BaseModel], str]], used: set[str]
) -> list[str]:
    doc = " ".join((model.__doc__ or "").split())
    lines = [
        "",
        f"### {model.__name__}",
        "",
        f"Where: `{where}`. {doc}",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        kind = _type(field.annotation, models, f"{where}.{name}")
        limits = _constraints(field.metadata)
        if limits:
            kind += f" ({limits})"
        described = _description(f"{model.__name__}.{name}", field, used)
        lines.append(f"| `{name}` | {kind} | {_default(field)} | {described} |")
    return lines


def render() -> str:
    """The reference's Markdown."""
    used: set[str] = set()
    models: list[tuple[type[BaseModel], str]] = []
    lines = _settings_table(models, used)
    lines += ["", "## Nested settings", ""]
    lines.append(
        "The keys of the JSON objects that the settings above take, one table per kind of "
        "object, found by walking the fields' types."
    )
    done = 0
    while done < len(models):  # a table may queue further models
        model, where = models[done]
        lines += _model_table(model, where, models, used)
        done += 1
    stale = sorted(set(NOTES) - used) + sorted(
        name for name in GROUPS if name + "@group" not in used
    )
    if stale:
        raise ValueError(f"settings reference: no such settings field any more: {stale}")
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs event: replace the marker with the generated reference."""
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
