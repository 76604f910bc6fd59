"""The one exception every layer raises for a client-visible failure: an HTTP status and a stable
code. How it is rendered on each protocol is :mod:`service.api.errors`; its OpenAPI schema
:mod:`service.api.openapi`."""

from __future__ import annotations


class ApiError(Exception):
    """An error a client caused or must know about, with its HTTP status and stable code."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def counter_unavailable(retry_after_s: int) -> ApiError:
    """503: the query counter (or the detection store in its Redis) cannot be reached."""
    return ApiError(
        503,
        "counter_unavailable",
        "query accounting is unavailable; try again later",
        {"Retry-After": str(retry_after_s)},
    )
