"""HSJA over OIP v2 against kserve's ModelServer directly and through the gateway (proxy mode,
SND σ = 0.01): starts both servers on loopback ports, runs ``experiments/oip-hsja.toml``
(``evaluate`` + ``report``) and prints the report's glance table.

    python -m benchmarks.oip_hsja --out runs/oip-hsja --workers 2
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from hashlib import sha256
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attacks_client.evaluation.experiment import Experiment  # noqa: E402
from attacks_client.evaluation.grid import evaluate  # noqa: E402
from attacks_client.evaluation.report import report  # noqa: E402
from tests.servers import ROOT, ServiceProcess, UpstreamProcess  # noqa: E402

log = logging.getLogger("oip_hsja")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/oip-hsja"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with UpstreamProcess() as upstream:
        proxied = {
            "name": "resnet20",
            "upstream": {"url": upstream.url, "model": "resnet20", "binary": True},
            "defense": {"kind": "snd", "sigma": 0.01},
        }
        keys = {"attacker": "oip-attacker-key", "evaluator": "oip-evaluator-key"}
        settings = {
            "models": [proxied],
            "api_keys": {sha256(k.encode()).hexdigest(): name for name, k in keys.items()},
        }
        with ServiceProcess(settings) as gateway:
            os.environ["KSERVE_V2_URL"] = f"v2+{upstream.url}"
            os.environ["GATEWAY_V2_URL"] = f"v2+{gateway.url}"
            os.environ["ATTACKER_KEY"], os.environ["EVALUATOR_KEY"] = keys.values()
            experiment = Experiment.load(ROOT / "experiments" / "oip-hsja.toml")
            evaluate(experiment, args.out, workers=args.workers, progress=False)
    page = report(args.out)
    text = page.read_text()
    log.info("%s", text.split("## At a glance")[1].split("\n## ")[0])
    log.info("report: %s", page)


if __name__ == "__main__":
    main()
