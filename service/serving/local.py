"""The local model host: setup (load the zoo network, place it on its device), predict (defense
+ forward).

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

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from service.defenses import Defense, build_defense
from service.model_settings import ModelSettings
from service.models import ModelSpec, get_spec
from service.models.noise import noise_sources
from service.protocol.oip import INPUT_NAME
from service.serving.signature import Signature

log = logging.getLogger(__name__)


def select_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class LocalHost:
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
    ) -> LocalHost:
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
    def signature(self) -> Signature:
        return Signature(self.spec.name, self.spec.input_shape, self.spec.classes, INPUT_NAME)

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
