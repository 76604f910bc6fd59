"""Tables of docs/results/decision-attacks.md from the CLI's JSONL records.

``python docs/results/decision_attacks_tables.py runs/fidelity`` reads
``{none,snd}-{hsja,sign-opt,boundary,geoda}.jsonl[.gz]`` (one record per image, as written by
``python -m attacks_client <attack> --output ...``) and prints Markdown; the committed raw
records are in ``docs/results/decision-attacks/``.
"""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

import numpy as np

ATTACKS = {"boundary": "Boundary", "sign-opt": "Sign-OPT", "hsja": "HSJA", "geoda": "GeoDA"}
EPSILONS = ("1", "1.5", "2", "3")


def find(root: Path, defense: str, attack: str) -> Path | None:
    for name in (f"{defense}-{attack}.jsonl", f"{defense}-{attack}.jsonl.gz"):
        if (root / name).exists():
            return root / name
    return None


def load(path: Path) -> list[dict]:
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main(root: Path) -> None:
    whitebox_path = root / "whitebox.json"
    whitebox = json.loads(whitebox_path.read_text()) if whitebox_path.exists() else {}
    for defense in ("none", "snd"):
        paths = {a: find(root, defense, a) for a in ATTACKS}
        runs = {a: load(p) for a, p in paths.items() if p is not None}
        if not runs:
            continue
        checkpoints = next(iter(runs.values()))[0]["checkpoints"]
        heads = " | ".join(f"{q // 1000}k" for q in checkpoints)
        print(f"\n#### Median L2 of the attack's candidate (defense: {defense})\n")
        print(f"| attack | images | {heads} |" + (" 10k ÷ white-box |" if whitebox else ""))
        print("|---|---|" + "---|" * len(checkpoints) + ("---|" if whitebox else ""))
        for attack, recs in runs.items():
            l2 = np.array([[math.inf if v is None else v for v in r["l2"]] for r in recs])
            cells = " | ".join(f"{v:.2f}" for v in np.median(l2, 0))
            ratio = ""
            if whitebox:
                wb = np.array([whitebox[str(r["image_index"])] for r in recs])
                ratio = f" {np.median(l2[:, -1] / wb):.2f} |"
            print(f"| {ATTACKS[attack]} | {len(recs)} | {cells} |{ratio}")
        for eps in EPSILONS:
            print(
                f"\n#### Success rate at ε = {eps} (defense: {defense}; evaluator: majority "
                "of 10 draws)\n"
            )
            print(f"| attack | {heads} |")
            print("|---|" + "---|" * len(checkpoints))
            for attack, recs in runs.items():
                rates = np.mean([r["success"][eps] for r in recs], 0) * 100
                print(f"| {ATTACKS[attack]} | " + " | ".join(f"{v:.0f}%" for v in rates) + " |")
        print(f"\n#### Mean ‖x0 − x_q‖ of the q-th query (paper Table 3; defense: {defense})\n")
        print(f"| attack | {heads} |")
        print("|---|" + "---|" * len(checkpoints))
        for attack, recs in runs.items():
            values = np.array([r["query_l2_at"] for r in recs], dtype=float)
            print(f"| {ATTACKS[attack]} | " + " | ".join(f"{v:.2f}" for v in values.mean(0)) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fidelity"))
