"""Table formatting for the report: Markdown tables, CSV files, the cells' number formats, and
Table 1 (clean accuracy)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from attacks_client.evaluation.runs import Run


def short(q: int) -> str:
    """1000 -> 1k, 2500 -> 2.5k, 300 -> 300."""
    return f"{q / 1000:g}k" if q >= 1000 else str(q)


def fmt_rate(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 100:.1f}"


def fmt_l2(value: float) -> str:
    return "–" if math.isnan(value) else ("∞" if math.isinf(value) else f"{value:.3f}")


def markdown_table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def describe_defense(defense: dict[str, Any]) -> str:
    kind = defense.get("kind", "?")
    if kind != "snd" or "sigma" not in defense:
        return kind
    text = f"SND σ={defense['sigma']}"
    if defense.get("distribution") == "beta":
        text += f", k~Beta({defense.get('alpha')}, {defense.get('beta')})"
    if defense.get("noise", "gaussian") != "gaussian":
        text += f", {defense['noise']}"
    return text


def clean_accuracy_table(run: Run, tables: Path) -> str:
    """Table 1: clean accuracy (mean ± std over repeats), P_mis on clean images and σ̂ per
    endpoint; also written to ``tables/table1_clean_accuracy.csv``."""
    rows, csv_rows = [], []
    for row in run.accuracy:
        acc = np.array(row["accuracies"]) * 100
        clean_p_mis, sigma_hat = row.get("clean_p_mis"), row.get("sigma_hat")
        architecture = run.architecture(row)
        rows.append(
            [
                row["endpoint"],
                architecture or "–",
                describe_defense(row.get("defense") or {}),
                f"{acc.mean():.2f} ± {acc.std():.2f}",
                str(len(acc)),
                str(row["images"]),
                "–" if clean_p_mis is None else f"{clean_p_mis:.4f}",
                "–" if sigma_hat is None else f"{sigma_hat:.4f}",
            ]
        )
        csv_rows.append(
            [
                row["endpoint"],
                architecture,
                acc.mean(),
                acc.std(),
                len(acc),
                row["images"],
                clean_p_mis,
                sigma_hat,
            ]
        )
    write_csv(
        tables / "table1_clean_accuracy.csv",
        [
            "endpoint",
            "architecture",
            "accuracy_mean",
            "accuracy_std",
            "repeats",
            "images",
            "clean_p_mis",
            "sigma_hat",
        ],
        csv_rows,
    )
    return markdown_table(
        [
            "Endpoint",
            "Model",
            "Defense",
            "Clean accuracy (%)",
            "Repeats",
            "Images",
            "P_mis on clean images",
            "σ̂ (margin-loss std)",
        ],
        rows,
    )
