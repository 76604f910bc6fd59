"""A real KServe ``ModelServer`` serving the embedded ResNet-20 (logits) over the Open Inference
Protocol: the upstream of the gateway's proxy mode in the tests, the benchmarks and the compose
``upstream`` profile. It knows nothing of the gateway: no noise, no accounting.

    python deploy/upstream/kserve_resnet20.py --http_port 8080 --model_name resnet20

Its input is ``images`` (FP32 ``[-1, 1, 28, 28]``, [0, 1] pixels), its output ``logits``
(FP32 ``[-1, 10]``). ``--delay_s`` makes every answer that much slower (the gateway's timeout
tests); ``--torch_threads`` sets torch's intra-op threads.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's `service`

import torch  # noqa: E402
from kserve import (  # noqa: E402
    InferOutput,
    InferRequest,
    InferResponse,
    Model,
    ModelServer,
    model_server,  # noqa: E402
)

from service.models import get_spec  # noqa: E402

log = logging.getLogger("kserve-resnet20")
SPEC = get_spec("resnet20-mnist")


class ResNet20(Model):
    """The zoo's ResNet-20 on MNIST as a KServe v2 model (one forward pass per request)."""

    def __init__(self, name: str, delay_s: float) -> None:
        super().__init__(name)
        self.delay_s = delay_s
        self.network = SPEC.build().eval()
        self.ready = True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "images", "datatype": "FP32", "shape": [-1, *SPEC.input_shape]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "logits", "datatype": "FP32", "shape": [-1, SPEC.num_classes]}]

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        images = torch.from_numpy(payload.inputs[0].as_numpy().astype("float32"))
        with torch.inference_mode():
            logits = self.network(images).numpy()
        output = InferOutput(name="logits", shape=list(logits.shape), datatype="FP32", data=logits)
        return InferResponse(
            response_id=payload.id or uuid.uuid4().hex,  # kserve requires a string id
            model_name=self.name,
            infer_outputs=[output],
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--delay_s", type=float, default=0.0)
    parser.add_argument("--torch_threads", type=int, default=1)
    args, _ = parser.parse_known_args()
    torch.set_num_threads(args.torch_threads)
    model = ResNet20(args.model_name, args.delay_s)
    ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start([model])


if __name__ == "__main__":
    main()
