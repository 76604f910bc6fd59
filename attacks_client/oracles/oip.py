"""``OipOracle``: a model behind any Open Inference Protocol (KServe v2) server — the gateway's
``/v2`` routes, or Triton, KServe and MLServer directly — seen as a black-box classifier.

Per kserve/open-inference-protocol ``inference_rest.md``: shapes and names come from the model
metadata (``GET /v2/models/{m}``) only; the request is ``POST /v2/models/{m}/infer`` with one
FP32 input, sent with Triton's binary tensor data extension (``Inference-Header-Content-Length``,
``binary_data_size``, outputs with ``binary_data``) when the server lists ``binary_tensor_data``
in its metadata (``GET /v2``), as JSON otherwise. The answer's score output is the output named
``probabilities`` or else the first ``[N, classes]`` FP32 output (a softmax is applied when its
rows are not already probabilities); labels are the ``label`` output where there is one, the
scores' argmax otherwise. Budget, chunking, counting, retries and the typed errors are
:class:`~attacks_client.oracles.http.HttpOracle`'s.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from attacks_client.oracles.base import OracleError
from attacks_client.oracles.http import HttpOracle, OutputMode, _error_message, _queries_used

log = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
DTYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT64": "<i8", "INT32": "<i4"}


def _softmax_unless_probabilities(scores: np.ndarray) -> np.ndarray:
    if scores.min() >= 0 and np.allclose(scores.sum(1), 1.0, atol=1e-3):
        return scores
    shifted = np.exp(scores - scores.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


class OipOracle(HttpOracle):
    """The model ``model`` of the OIP v2 server at ``url`` (``binary``: None = as listed)."""

    def __init__(
        self, url: str, model: str | None = None, *, binary: bool | None = None, **options: Any
    ) -> None:
        """``options`` as :class:`HttpOracle` takes them (api_key, output, budget, ...)."""
        self._binary_choice = binary
        super().__init__(url.removeprefix("v2+"), model, **options)

    def _model_info(self, model: str | None) -> dict[str, Any]:
        if not model:
            raise OracleError(f"an OIP v2 endpoint ({self.url}) needs a model name (--model)")
        extensions = self._send("GET", "/v2").json().get("extensions") or []
        listed = "binary_tensor_data" in extensions
        self.binary = listed if self._binary_choice is None else self._binary_choice
        self._path = f"/v2/models/{quote(model, safe='')}"
        meta = self._send("GET", self._path).json()
        inputs, outputs = meta.get("inputs") or [], meta.get("outputs") or []
        if len(inputs) != 1 or inputs[0].get("datatype") != "FP32" or len(inputs[0]["shape"]) != 4:
            raise OracleError(f"model {model!r} needs one FP32 input [N, C, H, W]: {inputs}")
        self.input_name = str(inputs[0]["name"])
        matrices = [o for o in outputs if o.get("datatype") == "FP32" and len(o["shape"]) == 2]
        named = [o for o in matrices if o["name"] == "probabilities"]
        self.score_output: str | None = (named or matrices or [{"name": None}])[0]["name"]
        self.label_output = next((o["name"] for o in outputs if o["name"] == "label"), None)
        if self.score_output is None and self.label_output is None:
            raise OracleError(f"model {model!r} answers no scores [N, classes] or labels")
        num_classes = next(
            (int(o["shape"][1]) for o in matrices if o["name"] == self.score_output), 0
        )
        modes = ["label"] + (["scores"] if self.score_output else [])
        log.info(
            "%s%s: input %s, outputs %s, binary %s",
            self.url,
            self._path,
            inputs[0],
            [o["name"] for o in outputs],
            self.binary,
        )
        return {
            "name": meta.get("name", model),
            "input_shape": [int(d) for d in inputs[0]["shape"][1:]],
            "num_classes": num_classes,
            "outputs": modes,
        }

    def _request(self, chunk: np.ndarray, names: list[str]) -> tuple[bytes, dict[str, str]]:
        tensor: dict[str, Any] = {
            "name": self.input_name,
            "shape": list(chunk.shape),
            "datatype": "FP32",
        }
        if not self.binary:
            tensor["data"] = chunk.ravel().tolist()
            body = {"inputs": [tensor], "outputs": [{"name": n} for n in names]}
            return json.dumps(body).encode(), {"Content-Type": "application/json"}
        blob = chunk.astype("<f4", copy=False).tobytes()
        tensor["parameters"] = {"binary_data_size": len(blob)}
        asked = [{"name": n, "parameters": {"binary_data": True}} for n in names]
        head = json.dumps({"inputs": [tensor], "outputs": asked}).encode()
        return head + blob, {
            "Content-Type": "application/octet-stream",
            HEADER_LENGTH: str(len(head)),
        }

    def _verify_key(self) -> None:
        """An empty batch passes authentication and is refused (nothing counted); 401 raises."""
        body, headers = self._request(
            np.zeros((0, *self.input_shape), np.float32),
            [self.label_output or str(self.score_output)],
        )
        try:
            self._send("POST", self._path + "/infer", content=body, headers=headers)
        except OracleError as exc:
            if "refused the API key" in str(exc):
                self.close()
                raise
            log.debug("key check: %s", exc)

    def _exchange(
        self, chunk: np.ndarray, output: OutputMode
    ) -> tuple[dict[str, np.ndarray], int | None]:
        if output == "scores" or self.label_output is None:
            names = [str(self.score_output)] + ([self.label_output] if self.label_output else [])
        else:
            names = [self.label_output]
        body, headers = self._request(chunk, names)
        response = self._send("POST", self._path + "/infer", content=body, headers=headers)
        arrays = self._outputs(response)
        scores = arrays.get(str(self.score_output))
        payload: dict[str, np.ndarray] = {}
        if scores is not None:
            payload["scores"] = _softmax_unless_probabilities(scores.astype(np.float32))
        label = arrays.get(str(self.label_output))
        payload["labels"] = label if label is not None else payload["scores"].argmax(1)
        if len(payload["labels"]) != len(chunk):
            raise OracleError(f"{self.url} answered {len(payload['labels'])} of {len(chunk)}")
        return payload, _queries_used(response)

    def _outputs(self, response: httpx.Response) -> dict[str, np.ndarray]:
        body = response.content
        size = int(response.headers.get(HEADER_LENGTH, len(body)))
        try:
            head = json.loads(body[:size])
            arrays, offset = {}, size
            for out in head["outputs"]:
                dtype, shape = DTYPES[out["datatype"]], tuple(out["shape"])
                nbytes = (out.get("parameters") or {}).get("binary_data_size")
                if nbytes is None:
                    arrays[out["name"]] = np.asarray(out["data"], dtype).reshape(shape)
                else:
                    raw = body[offset : offset + int(nbytes)]
                    arrays[out["name"]] = np.frombuffer(raw, dtype).reshape(shape)
                    offset += int(nbytes)
        except (ValueError, KeyError, TypeError) as exc:
            raise OracleError(f"{self.url} answered an invalid inference response: {exc}") from None
        return arrays

    def _error_of(self, response: httpx.Response) -> tuple[str, str]:
        """The gateway's ``/v2`` errors carry ``/predict``'s codes; a foreign server's carry
        none: only a 413 naming a limit and a 404 are then read by status (a 429 is read as
        ``BudgetExhausted`` by :meth:`HttpOracle._raise_for`). A 403 says nothing more: it may
        be label-only, a suspended caller or a flagged query."""
        code, message = _error_message(response)
        if code:
            return code, message
        status = response.status_code
        if status == 413 and "limit" in message:
            return "batch_too_large", message
        return ("unknown_model" if status == 404 else ""), message
