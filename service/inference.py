"""Model hosts: setup (load weights, place on device), predict (defense + forward), off-loop.

Forward passes run on one dedicated inference thread under ``torch.inference_mode``, so the
event loop never blocks and CPU cores are not oversubscribed by concurrent passes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from service.batching import DynamicBatcher
from service.config import ModelSettings, Settings
from service.defenses import Defense, build_defense
from service.models import ModelSpec, get_spec

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

    @classmethod
    def load(cls, settings: ModelSettings, device: torch.device, allow_download: bool,
             precision: str = "fp32") -> ModelHost:
        spec = get_spec(settings.zoo_name)
        network = spec.build(settings.weights, allow_download=allow_download).to(device)
        log.info("loaded %s (%s) on %s behind %s", settings.name, spec.name, device,
                 settings.defense.kind)
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision fp16 needs CUDA; use bf16 on the CPU")
        return cls(settings.name, spec, settings, network, build_defense(settings.defense), device,
                   precision)

    @property
    def output_modes(self) -> tuple[str, ...]:
        return ("label",) if self.settings.label_only else ("scores", "label")

    def forward(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(N, classes)`` of the defended model for [0, 1] images.

        The defense runs in float32 pixel space before any autocast. Under fp16/bf16 the first
        convolution still sees the noisy input rounded to 16 bits (bf16 resolves ~0.016 near 2
        after normalization), so very small σ (≤ 0.001) is partly quantized: keep fp32 there."""
        with torch.inference_mode():
            x = torch.from_numpy(images)
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = self.defense(x)
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                logits = self.network(x)
            return torch.softmax(logits.float(), dim=1).cpu().numpy()


@dataclass
class ModelPool:
    """All hosts of one server, and the single inference thread they share."""

    hosts: dict[str, ModelHost]
    default: str
    batching: bool = True
    batch_max_images: int = 256
    batch_wait_s: float = 0.002
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
        hosts = {
            m.name: ModelHost.load(m, device, settings.allow_download, settings.precision)
            for m in settings.models
        }
        return cls(hosts, settings.default_model, batching=settings.batching,
                   batch_max_images=settings.batch_max_images,
                   batch_wait_s=settings.batch_wait_ms / 1000,
                   queue_max_images=settings.queue_max_images)

    def batcher(self, host: ModelHost) -> DynamicBatcher:
        batcher = self.batchers.get(host.name)
        if batcher is None:
            batcher = DynamicBatcher(host.forward, self.executor,
                                     max_images=self.batch_max_images,
                                     max_wait_s=self.batch_wait_s,
                                     max_queue=self.queue_max_images)
            self.batchers[host.name] = batcher
        return batcher

    async def predict(self, host: ModelHost, images: np.ndarray) -> np.ndarray:
        """Defended probabilities, from a shared forward pass when batching is on."""
        if self.batching:
            return await self.batcher(host).submit(images)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, host.forward, images)

    async def aclose(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
        self.close()

    def close(self) -> None:
        self.executor.shutdown(wait=True)
