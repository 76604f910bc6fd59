"""``python -m service [--flags]``: run the gateway under uvicorn.

Every field of :class:`service.settings.Settings` is a flag (``--sigma 0.01``) and an environment
variable (``SND_SIGMA=0.01``); flags win. Dict and list settings take JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, get_args, get_origin

import uvicorn
from pydantic import ValidationError

from service.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    invoked = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(
        prog=invoked if invoked == "snd-gateway" else "python -m service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = field.description or ""
        annotation = field.annotation
        choices = (
            get_args(annotation)
            if get_origin(annotation) is not None
            and all(isinstance(a, str) for a in get_args(annotation))
            else None
        )
        if annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(
                flag,
                dest=name,
                default=None,
                choices=choices,
                help=f"{help_text} (env SND_{name.upper()})".strip(),
            )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes (use Redis to count across them)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        value = getattr(args, name)
        if value is None:
            continue
        if isinstance(value, str) and get_origin(field.annotation) in (dict, list):
            value = json.loads(value)
        overrides[name] = value
    return overrides


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    overrides = settings_from_args(args)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:  # refuse to start, saying which setting is wrong
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"snd-gateway: invalid settings: {problems}")
    problem = settings.detection_needs_a_secret(args.workers)
    if problem:
        sys.exit(f"snd-gateway: invalid settings: detection_secret: {problem}")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.workers > 1:
        # workers re-create the app from the environment: pass the flags through it
        import os

        for key, value in overrides.items():
            os.environ["SND_" + key.upper()] = (
                json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
            )
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=args.workers,
            log_level=settings.log_level,
            timeout_graceful_shutdown=30,
            proxy_headers=False,
        )
        return
    from service.app import create_app

    # proxy_headers=False: uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1;
    # the app honours it only from the configured `trusted_proxies` (service.api.deps)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
