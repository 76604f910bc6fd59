"""Model hosts: setup (load weights, place on device), predict (defense + forward), off-loop.

Forward passes run on one dedicated inference thread under ``torch.inference_mode``, so the
event loop never blocks and CPU cores are not oversubscribed by concurrent passes.

Two CPU-side speed-ups, both measured in ``docs/performance.md``:

* ``graph="trace"``: a deterministic fp32 network is traced and frozen (BatchNorm folded into
  the convolutions) and checked against eager mode at load. A traced forward is one C++ call
  that releases the GIL for its whole length, so HTTP work on the event loop overlaps it; an
  eager forward re-takes the GIL between every layer and stalls behind the event loop.
* ``forward_chunk_images``: on the CPU a large merged batch runs in cache-sized chunks (the
  defense's noise is drawn once over the whole batch first).
"""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from service.batching import DynamicBatcher
from service.config import ModelSettings, Settings
from service.defenses import Defense, build_defense
from service.metrics import FORWARD_BATCH
from service.models import ModelSpec, get_spec
from service.models.noise import noise_sources
from service.oip import INPUT_NAME
from service.proxy import ProxyHost

log = logging.getLogger(__name__)


def select_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class ModelHost:
    """One served model: its zoo spec, the network on its device, and the defense in front."""

    name: str
    spec: ModelSpec
    settings: ModelSettings
    network: nn.Module
    defense: Defense
    device: torch.device
    precision: str = "fp32"
    chunk_images: int = 0
    graph: torch.jit.ScriptModule | None = None

    @classmethod
    def load(
        cls,
        settings: ModelSettings,
        device: torch.device,
        allow_download: bool,
        precision: str = "fp32",
        *,
        graph: str = "eager",
        chunk_images: int = 0,
    ) -> ModelHost:
        spec = get_spec(settings.zoo_name)
        network = spec.build(settings.weights, allow_download=allow_download).to(device)
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision fp16 needs CUDA; use bf16 on the CPU")
        traced = None
        if graph == "trace" and precision == "fp32" and not noise_sources(network):
            traced = trace_network(network, spec.input_shape, device)
        log.info(
            "loaded %s (%s) on %s behind %s%s",
            settings.name,
            spec.name,
            device,
            settings.defense.kind,
            " (traced)" if traced is not None else "",
        )
        return cls(
            settings.name,
            spec,
            settings,
            network,
            build_defense(settings.defense),
            device,
            precision,
            chunk_images if device.type == "cpu" else 0,
            traced,
        )

    @property
    def output_modes(self) -> tuple[str, ...]:
        return ("label",) if self.settings.label_only else ("scores", "label")

    @property
    def input_name(self) -> str:
        """The input's name in the Open Inference Protocol metadata."""
        return INPUT_NAME

    def forward(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(N, classes)`` of the defended model for [0, 1] images.

        The defense runs in float32 pixel space before any autocast. Under fp16/bf16 the first
        convolution still sees the noisy input rounded to 16 bits (bf16 resolves ~0.016 near 2
        after normalization), so very small σ (≤ 0.001) is partly quantized: keep fp32 there."""
        with torch.inference_mode():
            # a request's decoded buffer is read-only: torch may not share it (a copy is cheap)
            x = torch.from_numpy(images if images.flags.writeable else images.copy())
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = self.defense(x)
            # the traced graph has the model's input shape (R&P resizes: eager mode there)
            network = self.network
            if self.graph is not None and tuple(x.shape[1:]) == self.spec.input_shape:
                network = self.graph
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                if self.chunk_images and len(x) > self.chunk_images:
                    logits = torch.cat([network(part) for part in x.split(self.chunk_images)])
                else:
                    logits = network(x)
            return torch.softmax(logits.float(), dim=1).cpu().numpy()


def trace_network(
    network: nn.Module, input_shape: tuple[int, ...], device: torch.device
) -> torch.jit.ScriptModule | None:
    """``network`` traced and frozen, or ``None`` (with a warning) if it cannot be or if it
    disagrees with eager mode on a probe batch."""
    probe = torch.rand((3, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of compile
            graph = torch.jit.freeze(torch.jit.trace(network, probe[:2]))
            expected, got = network(probe), graph(probe)
    except Exception as exc:  # tracing is an optimization: eager mode always works
        log.warning("could not trace the network (%s): running it eagerly", exc)
        return None
    if not torch.allclose(expected, got, rtol=1e-4, atol=1e-4):
        log.warning("the traced network disagrees with eager mode: running it eagerly")
        return None
    return graph


Host = ModelHost | ProxyHost
"""A served model: a zoo network here, or an upstream OIP v2 server (:mod:`service.proxy`)."""


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
            m.name: ProxyHost.create(m)
            if m.upstream is not None
            else ModelHost.load(
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
            upstream = host.upstream if isinstance(host, ProxyHost) else None
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
        if isinstance(host, ProxyHost):
            return await host.forward(images)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, host.forward, images)

    async def start(self) -> None:
        """Learn the proxied models' upstream metadata (retried in the background if down)."""
        proxies = [h for h in self.hosts.values() if isinstance(h, ProxyHost)]
        await asyncio.gather(*(h.connect() for h in proxies))

    async def ready(self, host: Host) -> bool:
        return await host.ready() if isinstance(host, ProxyHost) else True

    async def aclose(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
        for host in self.hosts.values():
            if isinstance(host, ProxyHost):
                await host.aclose()
        self.close()

    def close(self) -> None:
        self.executor.shutdown(wait=True)
