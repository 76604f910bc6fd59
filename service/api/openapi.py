"""The error responses' OpenAPI schemas, in each protocol's shape, for the routes' ``responses``."""

from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


OIP_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
}


def error_responses(*statuses: int, oip: bool = False) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` entries for the error statuses a route can return (``oip``: in the
    Open Inference Protocol's shape)."""
    schema = OIP_ERROR_SCHEMA if oip else ERROR_SCHEMA
    return {
        status: {
            "description": "error",
            "content": {"application/json": {"schema": schema}},
        }
        for status in statuses
    }
