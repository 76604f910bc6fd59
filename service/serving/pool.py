"""The pool of one server's model hosts: each request's forward pass goes through its host's
dynamic batcher (or straight to the host), local networks on one shared inference thread.

Forward passes run on one dedicated inference thread under ``torch.inference_mode``, so the
event loop never blocks and CPU cores are not oversubscribed by concurrent passes.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from service.metrics import FORWARD_BATCH
from service.serving.batcher import DynamicBatcher
from service.serving.local import LocalHost, select_device
from service.serving.upstream import UpstreamHost
from service.settings import Settings

Host = LocalHost | UpstreamHost
"""A served model: a zoo network here (:mod:`service.serving.local`), or an upstream OIP v2 server
(:mod:`service.serving.upstream`)."""


@dataclass
class ModelPool:
    """All hosts of one server, and the single inference thread the zoo hosts share."""

    hosts: dict[str, Host]
    default: str
    batching: bool = True
    batch_max_images: int = 256
    batch_wait_s: float = 0.0
    queue_max_images: int = 4096
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    )
    batchers: dict[str, DynamicBatcher] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelPool:
        threads = settings.torch_threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        device = select_device(settings.device)
        hosts: dict[str, Host] = {
            m.name: UpstreamHost.create(m)
            if m.upstream is not None
            else LocalHost.load(
                m,
                device,
                settings.allow_download,
                settings.precision,
                graph=settings.graph,
                chunk_images=settings.forward_chunk_images,
            )
            for m in settings.models
        }
        return cls(
            hosts,
            settings.default_model,
            batching=settings.batching,
            batch_max_images=settings.batch_max_images,
            batch_wait_s=settings.batch_wait_ms / 1000,
            queue_max_images=settings.queue_max_images,
        )

    def batcher(self, host: Host) -> DynamicBatcher:
        batcher = self.batchers.get(host.name)
        if batcher is None:
            upstream = host.upstream if isinstance(host, UpstreamHost) else None
            batcher = DynamicBatcher(
                host.forward,
                self.executor,
                max_images=upstream.max_batch if upstream else self.batch_max_images,
                max_inflight=upstream.concurrency if upstream else 1,
                max_wait_s=self.batch_wait_s,
                max_queue=self.queue_max_images,
                on_batch=FORWARD_BATCH.labels(host.name).observe,
            )
            self.batchers[host.name] = batcher
        return batcher

    async def predict(self, host: Host, images: np.ndarray) -> np.ndarray:
        """Defended probabilities, from a shared forward pass when batching is on."""
        if self.batching:
            return await self.batcher(host).submit(images)
        if isinstance(host, UpstreamHost):
            return await host.forward(images)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, host.forward, images)

    async def start(self) -> None:
        """Learn the proxied models' upstream metadata (retried in the background if down)."""
        proxies = [h for h in self.hosts.values() if isinstance(h, UpstreamHost)]
        await asyncio.gather(*(h.connect() for h in proxies))

    async def ready(self, host: Host) -> bool:
        return await host.ready() if isinstance(host, UpstreamHost) else True

    async def aclose(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
        for host in self.hosts.values():
            if isinstance(host, UpstreamHost):
                await host.aclose()
        self.close()

    def close(self) -> None:
        self.executor.shutdown(wait=True)
