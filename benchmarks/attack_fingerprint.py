"""A fingerprint of every attack's behaviour: each attack in-process on the embedded model (no
defense), images 1-3 of the test split, budget 500, fixed seeds; per run the queries, the
reference count, the final candidate's L2 and the stop reason, as JSON. Two trees that print the
same JSON run the same attacks (used to check that the layout change moved code only).

    python -m benchmarks.attack_fingerprint > after.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attacks_client.attacks import ATTACKS as NAMES  # noqa: E402
from attacks_client.attacks import get_attack  # noqa: E402
from attacks_client.oracles import FunctionOracle  # noqa: E402
from service.model_settings import ModelSettings  # noqa: E402
from service.offline.datasets import mnist_subset  # noqa: E402
from service.serving.local import LocalHost  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    host = LocalHost.load(ModelSettings(defense={"kind": "none"}), torch.device("cpu"), False)
    test = mnist_subset("test")
    out = {}
    for name in NAMES:
        cls = get_attack(name)
        for i in (1, 2, 3):
            oracle = FunctionOracle(host.forward, (1, 28, 28), 10, scores=cls.needs_scores)
            r = cls()(oracle, test.images[i], int(test.labels[i]), 500, seed=i)
            out[f"{name}/{i}"] = [
                r.queries,
                r.reference_queries,
                round(r.l2_at(500), 6),
                r.stop_reason,
            ]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
