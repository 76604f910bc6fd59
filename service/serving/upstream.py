"""Proxy mode: a model answered by an existing Open Inference Protocol (KServe v2) server.

A :class:`UpstreamHost` stands where a :class:`service.serving.local.LocalHost` stands: the pipeline
validates and charges as for a zoo model, the host adds the defense's noise here, in the
gateway, and forwards the noisy batch to the upstream (``POST /v2/models/{m}/infer``, JSON or
Triton's binary tensor extension; kserve/open-inference-protocol ``inference_rest.md``) over a
keep-alive ``httpx`` pool. An upstream that fails answers 502 and one that is too slow 504; the
pipeline refunds the charge of either. Shapes and names come from the upstream's model
metadata (``GET /v2/models/{m}``), learned at start-up and retried until known (503 before).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import httpx
import numpy as np
import torch

from service.defenses import Defense, build_defense
from service.errors import ApiError
from service.model_settings import ModelSettings, UpstreamSettings
from service.protocol.oip import (
    HEADER_LENGTH,
    UpstreamModel,
    decode_response,
    encode_request,
    parse_metadata,
)
from service.serving.signature import Signature

log = logging.getLogger(__name__)
RETRY_S = 2.0
OFF_LOOP_ELEMENTS = 1 << 18  # a batch this large is noised and encoded on a worker thread


@dataclass
class UpstreamHost:
    """One model behind SND whose forward pass is an upstream OIP v2 server."""

    name: str
    settings: ModelSettings
    upstream: UpstreamSettings
    defense: Defense
    client: httpx.AsyncClient
    model: UpstreamModel | None = None
    _retry: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, settings: ModelSettings) -> UpstreamHost:
        assert settings.upstream is not None
        upstream = settings.upstream
        limits = httpx.Limits(
            max_connections=upstream.concurrency * 2,
            max_keepalive_connections=upstream.concurrency * 2,
        )
        client = httpx.AsyncClient(
            base_url=upstream.url, timeout=upstream.timeout_s, limits=limits, trust_env=False
        )
        return cls(settings.name, settings, upstream, build_defense(settings.defense), client)

    @property
    def model_path(self) -> str:
        version = f"/versions/{self.upstream.version}" if self.upstream.version else ""
        return f"/v2/models/{self.upstream.model}{version}"

    @property
    def known(self) -> UpstreamModel:
        if self.model is None:
            raise ApiError(
                503,
                "upstream_unavailable",
                f"the upstream of model {self.name!r} has not answered its metadata yet",
                {"Retry-After": str(int(RETRY_S))},
            )
        return self.model

    @property
    def signature(self) -> Signature:
        model = self.known
        return Signature(
            architecture=f"upstream:{self.upstream.model}",
            input_shape=model.input_shape,
            classes=tuple(str(i) for i in range(model.num_classes)),
            input_name=model.input_name,
        )

    @property
    def output_modes(self) -> tuple[str, ...]:
        return ("label",) if self.settings.label_only else ("scores", "label")

    async def _learn(self) -> None:
        try:  # server metadata only tells the extensions: without it, no binary under "auto"
            server = (await self.client.get("/v2")).json()
        except ValueError:
            server = {}
        response = await self.client.get(self.model_path)
        response.raise_for_status()
        binary = None if self.upstream.binary == "auto" else bool(self.upstream.binary)
        self.model = parse_metadata(server, response.json(), self.upstream.output, binary)

    async def connect(self) -> bool:
        """Learn the upstream model's metadata; on failure keep retrying in the background."""
        try:
            await self._learn()
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("upstream of %s not usable yet (%s); retrying", self.name, exc)
            if self._retry is None or self._retry.done():
                self._retry = asyncio.create_task(self._keep_trying(), name=f"meta-{self.name}")
            return False
        log.info(
            "model %s proxies %s%s: %s", self.name, self.upstream.url, self.model_path, self.model
        )
        return True

    async def _keep_trying(self) -> None:
        while self.model is None:
            await asyncio.sleep(RETRY_S)
            with contextlib.suppress(Exception):
                await self._learn()
                log.info("model %s: upstream metadata learned", self.name)

    async def ready(self) -> bool:
        """The upstream model answers ``GET .../ready`` with 200."""
        if self.model is None:
            return False
        try:
            return (await self.client.get(self.model_path + "/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    def _request(self, model: UpstreamModel, images: np.ndarray) -> tuple[bytes, dict[str, str]]:
        return encode_request(model, self.defense(torch.from_numpy(images)).numpy())

    async def forward(self, images: np.ndarray) -> np.ndarray:
        """Defended probabilities: noise here, the network upstream; 502/504 on failure."""
        model = self.known
        if images.size < OFF_LOOP_ELEMENTS:
            body, headers = self._request(model, images)
        else:  # large batches: noise and encoding off the event loop
            body, headers = await asyncio.to_thread(self._request, model, images)
        try:
            response = await self.client.post(
                self.model_path + "/infer", content=body, headers=headers
            )
        except httpx.TimeoutException:
            raise ApiError(
                504,
                "upstream_timeout",
                f"the upstream did not answer within {self.upstream.timeout_s} s; "
                "this request was not counted",
            ) from None
        except httpx.HTTPError as exc:
            raise ApiError(
                502,
                "upstream_unreachable",
                f"the upstream is unreachable ({type(exc).__name__}); this request was not counted",
            ) from None
        if response.status_code != 200:
            log.warning(
                "upstream of %s answered %d: %s",
                self.name,
                response.status_code,
                response.text[:300],
            )
            raise ApiError(
                502, "upstream_error", f"the upstream answered {response.status_code}; not counted"
            )
        try:
            header = response.headers.get(HEADER_LENGTH)
            scores = decode_response(model, response.content, header, len(images))
        except (ValueError, KeyError, TypeError, ApiError) as exc:
            log.warning("upstream of %s answered something unusable: %s", self.name, exc)
            raise ApiError(502, "upstream_error", "the upstream's answer was unusable") from None
        if self.upstream.outputs_are == "logits":
            return torch.softmax(torch.from_numpy(scores), dim=1).numpy()
        return scores

    async def aclose(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        await self.client.aclose()
