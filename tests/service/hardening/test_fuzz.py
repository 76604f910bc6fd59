"""schemathesis over the OpenAPI schema, against a real server: no 5xx, every response
conforms to the schema, every status the API answers is declared (``--checks all``, less the
two exceptions in ``schemathesis.toml``, each with its reason).

The schema is the server's own ``/openapi.json``, with the served model's image shape and the
batch limit filled into the ``/predict`` JSON body (the generic schema cannot know them), so
that fuzzing also reaches the 200 path and checks its answers, not only the refusals.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.servers import ServiceProcess
from tests.service.hardening.conftest import ADMIN, IMAGE, KEYS, LABEL_ONLY, MAX_BATCH, MODEL

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 40
OPERATIONS = {
    "POST /predict",
    "GET /models",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /usage",
    "GET /usage/me",
    "GET /detections",
    "GET /detections/{caller}",
    "POST /detections/{caller}/lift",
    "DELETE /detections/{caller}",
    "GET /usage/{caller}",
    "DELETE /usage/{caller}",
    "PUT /usage/{caller}/budget",
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/{model}",
    "GET /v2/models/{model}/versions/{version}",
    "GET /v2/models/{model}/ready",
    "GET /v2/models/{model}/versions/{version}/ready",
    "POST /v2/models/{model}/infer",
    "POST /v2/models/{model}/versions/{version}/infer",
}
INFER = ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer")


def deployed_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with this deployment's constraints: (C, H, W) = the model's, and N <= 2
    (the batch limit itself is in the bad-input matrix; generating 8 images of 784 numbers
    per example makes the run many times slower)."""
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    inputs = body["schema"]["properties"]["inputs"]
    inputs["maxItems"] = min(2, MAX_BATCH)
    level = inputs["items"]
    for size in IMAGE:
        level["minItems"] = level["maxItems"] = size
        level = level["items"]
    # /v2 infer: one image of the model's shape (name, datatype, shape and size fixed)
    for path in INFER:
        operation = schema["paths"][path]["post"]
        tensor = operation["requestBody"]["content"]["application/json"]["schema"]
        spec = tensor["properties"]["inputs"]["items"]["properties"]
        spec["name"]["enum"], spec["datatype"]["enum"] = ["input"], ["FP32"]
        spec["shape"] = {"type": "array", "enum": [[1, *IMAGE]]}
        spec["data"].update(minItems=784, maxItems=784)
        spec["data"]["items"].update(minimum=0, maximum=1)
    # the served models and version by name (other names are the 404 the bad-input tests check)
    for path, item in schema["paths"].items():
        for operation in item.values() if path.startswith("/v2/models/") else ():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    names = [MODEL, LABEL_ONLY] if parameter["name"] == "model" else ["1"]
                    parameter["schema"] = {"type": "string", "enum": names}
    return schema


def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    hardened: ServiceProcess, tmp_path: Path
) -> None:
    schema = httpx.get(hardened.url + "/openapi.json", timeout=30).json()
    operations = {
        f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item
    }
    assert operations == OPERATIONS  # a new route must be added here (and is fuzzed)
    (tmp_path / "openapi.json").write_text(json.dumps(deployed_schema(schema)))
    report = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        str(tmp_path / "openapi.json"),
        "--url",
        hardened.url,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",  # derandomized
        "--workers",
        "1",
        "--request-timeout",
        "60",
        # the admin routes are fuzzed with a valid admin token, /predict with a valid key
        "--header",
        f"Authorization: Bearer {ADMIN}",
        "--header",
        f"X-API-Key: {KEYS['fuzz']}",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-4000:]
    result = json.loads(report.read_text())
    assert result["operations"]["tested"] == len(OPERATIONS), result["operations"]
    assert result["test_cases"]["with_failures"] == 0 and result["test_cases"]["errored"] == 0
    assert result["test_cases"]["generated"] >= 4 * len(OPERATIONS)
    # the 200 path of /predict was reached (and its answers checked against the schema)
    predict = result["valid_rates"]["POST /predict"]
    assert sum(phase["accepted"] for phase in predict.values()) >= 10, predict
    v2 = result["valid_rates"]["POST /v2/models/{model}/infer"]
    assert sum(phase["accepted"] for phase in v2.values()) >= 5, v2
    assert "unexpected error" not in hardened.log()  # nothing crashed a handler
    print(
        f"schemathesis: {result['test_cases']['generated']} cases over "
        f"{len(OPERATIONS)} operations ({MAX_EXAMPLES} examples per operation and phase)"
    )
