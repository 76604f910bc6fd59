"""``HttpOracle``: a ``/predict`` endpoint seen as a black-box classifier.

* Transport: float32 ``.npy`` bodies (``application/x-npy``), never 8-bit images — attack probes
  are far below one 8-bit step. ``model`` and ``output`` go in the query string.
* One request per batch of independent probes, split into chunks of at most the server's batch
  limit; one keep-alive ``httpx.Client`` for the oracle's life.
* Counting: every image sent in an answered request is one query; the count equals the server's
  (``X-Queries-Used``, remembered in :attr:`HttpOracle.server_queries`). The optional client-side
  ``budget`` is enforced *before* sending: a batch that does not fit raises
  :class:`~attacks_client.oracles.BudgetExhausted` and sends nothing.
* Refusals are mapped by the error's stable ``code`` (the same on ``/predict`` and ``/v2``;
  :data:`REFUSALS`): ``budget_exhausted`` is ``BudgetExhausted``, ``label_only``
  :class:`~attacks_client.oracles.ScoresUnavailable`, a caller ``throttled`` or ``suspended``
  by stateful detection :class:`~attacks_client.oracles.Refused` (a ``BudgetExhausted``: the
  attack ends there, and a shared request is not resent run by run). Only an error without a
  code the oracle knows (a foreign server) is read by its status: 429 is ``BudgetExhausted``.
* Failures an attack cannot recover from are :class:`~attacks_client.oracles.OracleError` with a
  one-line message. A 503 is retried after ``Retry-After``.
"""

from __future__ import annotations

import io
import logging
import re
import time
from types import TracebackType
from typing import Any, Self

import httpx
import numpy as np

from attacks_client.oracles.base import (
    BatchTooLarge,
    BudgetExhausted,
    OracleError,
    Refused,
    ScoresUnavailable,
)
from attacks_client.oracles.sharing import OutputMode, SharedRequests

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 256
# An idle pooled connection is dropped after this long, well before uvicorn closes it (its
# keep-alive timeout, 5 s by default; httpx's own default expiry is also 5 s). Equal timeouts
# race: the client reuses a connection the server is closing, and the request dies with
# RemoteProtocolError, which cannot be retried safely (the server may have counted it).
KEEPALIVE_EXPIRY_S = 2.0
# the refusals an attack reacts to, by the error's code
REFUSALS: dict[str, type[Exception]] = {
    "budget_exhausted": BudgetExhausted,
    "label_only": ScoresUnavailable,
    "throttled": Refused,
    "suspended": Refused,
}


def _error_message(response: httpx.Response) -> tuple[str, str]:
    """``(code, message)`` of the service's JSON error body (``/predict``'s
    ``{"error": {"code", "message"}}``, or the Open Inference Protocol's
    ``{"error": "<message>", "code": "<code>"}``); ``""`` as the code where the body has none
    (a foreign server's ``{"error": "<message>"}``, or the raw text)."""
    try:
        body = response.json()
        error = body["error"]
        if isinstance(error, str):
            code = body.get("code")
            return (code if isinstance(code, str) else ""), error
        return str(error.get("code", "")), str(error.get("message", ""))
    except Exception:
        return "", response.text.strip()[:200]


class HttpOracle:
    """The model behind ``POST {url}/predict``, answering labels (and scores in score mode)."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        output: OutputMode = "label",
        budget: int | None = None,
        max_batch: int | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        verify: bool = True,
        transport: httpx.BaseTransport | None = None,
        sharing: SharedRequests | None = None,
    ) -> None:
        """``sharing``: send through a :class:`SharedRequests` with the other oracles of this
        URL, model, key and protocol (concurrent runs then share HTTP requests)."""
        if output not in ("label", "scores"):
            raise ValueError("output must be 'label' or 'scores'")
        self.url = url.rstrip("/")
        self.output: OutputMode = output
        self.budget = budget
        self.retries = retries
        self.queries = 0
        self.requests = 0
        self.server_queries: int | None = None
        self.sharing = sharing
        headers = {"X-API-Key": api_key} if api_key else {}
        self._client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S),
        )
        info = self._model_info(model)
        self.model: str = str(info["name"])
        self.input_shape: tuple[int, int, int] = tuple(info["input_shape"])  # type: ignore[assignment]
        self.num_classes: int = int(info["num_classes"])
        self.outputs: list[str] = list(info.get("outputs", ["label", "scores"]))
        self.defense: dict[str, Any] = dict(info.get("defense", {}))
        self.architecture: str | None = info.get("architecture")  # the zoo network, if told
        self.max_batch = max_batch or DEFAULT_MAX_BATCH
        if self.output == "scores" and "scores" not in self.outputs:
            self.close()
            raise ScoresUnavailable(f"model {self.model!r} answers labels only")
        if verify:
            self._verify_key()

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the Oracle protocol ------------------------------------------------------------------

    @property
    def has_scores(self) -> bool:
        return self.output == "scores"

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    def labels(self, x: np.ndarray) -> np.ndarray:
        """Top-1 labels ``(N,)``; costs N queries (asked as ``output=label`` in either mode)."""
        labels, _ = self._predict(x, "label")
        return labels

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, classes)``; costs N queries."""
        if not self.has_scores:
            raise ScoresUnavailable(f"this oracle was opened with output={self.output!r}")
        _, scores = self._predict(x, "scores")
        assert scores is not None
        return scores

    # -- HTTP ---------------------------------------------------------------------------------

    def _model_info(self, model: str | None) -> dict[str, Any]:
        response = self._send("GET", "/models")
        models = response.json().get("models", [])
        if not models:
            raise OracleError(f"{self.url} serves no models")
        if model is None:
            return next((m for m in models if m.get("default")), models[0])  # type: ignore[no-any-return]
        for info in models:
            if info["name"] == model:
                return info  # type: ignore[no-any-return]
        served = ", ".join(m["name"] for m in models)
        raise OracleError(f"unknown model {model!r} at {self.url}; served: {served}")

    def _verify_key(self) -> None:
        """Check the API key up front at no cost: an empty batch passes authentication and is
        then refused (422, nothing counted); a refused key answers 401."""
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((0, *self.input_shape), np.float32), allow_pickle=False)
        try:
            self._send(
                "POST",
                "/predict",
                content=buffer.getvalue(),
                params={"model": self.model, "output": "label"},
                headers={"Content-Type": "application/x-npy"},
            )
        except OracleError as exc:
            if "refused the API key" in str(exc):
                self.close()
                raise
            log.debug("key check: %s", exc)

    def _predict(self, x: np.ndarray, output: OutputMode) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"batch shape {x.shape} does not match (N, *{self.input_shape})")
        n = len(x)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.num_classes), np.float32)
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExhausted(f"{n} queries asked, {self.budget - self.queries} left")
        labels, scores = [], []
        start = 0
        while start < n:
            chunk = x[start : start + self.max_batch]
            try:
                payload = self._post_chunk(chunk, output)
            except BatchTooLarge as exc:  # nothing was counted: re-chunk and go on
                self.max_batch = max(1, min(exc.limit or len(chunk) // 2, len(chunk) - 1))
                log.info("server batch limit is %d images", self.max_batch)
                continue
            labels.append(payload["labels"])
            if output == "scores":
                scores.append(payload["scores"])
            start += len(chunk)
        return np.concatenate(labels), (np.concatenate(scores) if scores else None)

    def _post_chunk(self, chunk: np.ndarray, output: OutputMode) -> dict[str, np.ndarray]:
        """``chunk``'s labels (and scores), by a request of its own or a shared one; counted."""
        if self.sharing is not None:
            payload, used = self.sharing.exchange(self, chunk, output)
        else:
            payload, used = self._exchange(chunk, output)
        self.queries += len(chunk)
        self.requests += 1
        if used is not None:
            self.server_queries = used
        return payload

    def _exchange(
        self, chunk: np.ndarray, output: OutputMode
    ) -> tuple[dict[str, np.ndarray], int | None]:
        """One request for ``chunk``, counted by nobody: its ``labels`` (and ``scores``) and
        the server's ``X-Queries-Used``."""
        buffer = io.BytesIO()
        np.save(buffer, chunk, allow_pickle=False)
        response = self._send(
            "POST",
            "/predict",
            content=buffer.getvalue(),
            params={"model": self.model, "output": output},
            headers={"Content-Type": "application/x-npy"},
        )
        body = response.json()
        payload = {"labels": np.asarray(body["labels"], dtype=np.int64)}
        if output == "scores":
            payload["scores"] = np.asarray(body["scores"], dtype=np.float32)
        if len(payload["labels"]) != len(chunk):
            raise OracleError(f"{self.url} answered {len(payload['labels'])} of {len(chunk)}")
        return payload, _queries_used(response)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request with retries on 503; every other failure raised as a typed error."""
        for attempt in range(self.retries + 1):
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.TimeoutException:
                raise OracleError(
                    f"{self.url} did not answer within {self._client.timeout.read}s"
                ) from None
            except httpx.TransportError as exc:
                raise OracleError(f"cannot reach {self.url} ({type(exc).__name__})") from None
            if response.status_code == 503 and attempt < self.retries:
                delay = _retry_after(response)
                log.warning(
                    "%s answered 503 (%s); retrying in %.1fs",
                    self.url,
                    _error_message(response)[1],
                    delay,
                )
                time.sleep(delay)
                continue
            if response.is_success:
                return response
            self._raise_for(response)
        raise AssertionError("unreachable")

    def _error_of(self, response: httpx.Response) -> tuple[str, str]:
        return _error_message(response)

    def _raise_for(self, response: httpx.Response) -> None:
        """The typed error of a refusal: by its code (:data:`REFUSALS`), by its status only
        where the body has no code this oracle knows."""
        status = response.status_code
        code, message = self._error_of(response)
        if status == 413 and code == "batch_too_large":
            found = re.search(r"limit (\d+)", message)
            raise BatchTooLarge(int(found.group(1)) if found else 0)
        refusal = REFUSALS.get(code)
        if refusal is Refused:
            raise Refused(f"the server stopped answering ({code}): {message}")
        if refusal is BudgetExhausted or (refusal is None and status == 429):
            raise BudgetExhausted(f"the server refused the batch: {message}")
        if refusal is ScoresUnavailable:
            raise ScoresUnavailable(message)
        if status == 401:
            raise OracleError(f"{self.url} refused the API key ({code or status}): {message}")
        if status == 404 and code == "unknown_model":
            raise OracleError(message)
        if status == 404:
            raise OracleError(
                f"{self.url} has no such route ({response.request.url.path}); "
                "is this an SND gateway?"
            )
        if status == 503:
            raise OracleError(f"{self.url} is unavailable: {message}")
        raise OracleError(f"{self.url} answered {status} {code}: {message}".rstrip(": "))


def _queries_used(response: httpx.Response) -> int | None:
    used = response.headers.get("x-queries-used")
    return int(used) if used is not None and used.isdigit() else None


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.1), 30.0)
    except ValueError:
        return 1.0
