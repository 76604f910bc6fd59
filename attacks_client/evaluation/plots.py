"""The report's plots: median L2 of the adversarial candidate against queries (matplotlib)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from attacks_client.evaluation.runs import Run


def plot_median_l2(run: Run, directory: Path) -> list[Path]:
    """One PNG per attack: the median L2 of the candidate against queries, a line per
    endpoint, with the primary ε marked; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    by_attack: dict[str, dict[str, list[list[Any]]]] = defaultdict(dict)
    for attack in run.attacks:
        for endpoint in run.endpoints:
            records = run.select(attack["key"], endpoint)
            if records:
                by_attack[attack["key"]][endpoint] = [r["candidate_l2"] for r in records]
    for key, series in by_attack.items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for endpoint, curves in series.items():
            q = np.array([p[0] for p in curves[0]])
            values = np.array([[math.inf if p[1] is None else p[1] for p in c] for c in curves])
            median = np.median(values, axis=0)
            ax.plot(q, np.where(np.isfinite(median), median, np.nan), label=endpoint)
        epsilon = run.experiment["primary_epsilon"]
        ax.axhline(epsilon, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(
            f"ε = {epsilon}",
            (0.99, epsilon),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=7,
            color="grey",
        )
        images = max(len(c) for c in series.values())
        ax.set(
            xlabel="queries", ylabel="median L2 of the candidate", title=f"{key} ({images} images)"
        )
        ax.set_yscale("log")
        plain = ScalarFormatter()
        plain.set_scientific(False)
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        ascii_key = key.replace(" ", "_").replace("ε∞", "eps").replace("ε", "eps")
        slug = "".join(c for c in ascii_key if c.isascii() and (c.isalnum() or c in "_-"))
        path = directory / f"l2_{slug}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_calibration(
    sigmas: list[float],
    accuracy: list[float],
    accuracy_std: list[float],
    success: dict[str, list[float]],
    path: Path,
    *,
    chosen: float | None = None,
    accuracy_floor: float | None = None,
) -> Path:
    """Clean accuracy (%, left axis, ± std) and each attack's success (%, right axis) against σ
    on a log axis; σ = 0 sits one decade left of the smallest σ, labelled 0. The chosen σ and
    the accuracy floor of the choice rule are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positive = [s for s in sigmas if s > 0]
    zero_at = min(positive) / 10 if positive else 1.0
    x = np.array([s if s > 0 else zero_at for s in sigmas])
    fig, left = plt.subplots(figsize=(6, 3.8))
    left.errorbar(
        x, accuracy, yerr=accuracy_std, color="black", marker="o", capsize=3, label="clean accuracy"
    )
    if accuracy_floor is not None:
        left.axhline(
            accuracy_floor,
            color="black",
            linestyle=":",
            linewidth=0.8,
            label="accuracy floor of the choice",
        )
    left.set(xscale="log", xlabel="σ (SND noise std)", ylabel="clean accuracy (%)")
    right = left.twinx()
    for attack, values in success.items():
        right.plot(x, [100 * v for v in values], marker="s", linestyle="--", label=attack)
    right.set(ylabel="attack success (%)", ylim=(-5, 105))
    if chosen is not None:
        left.axvline(
            chosen if chosen > 0 else zero_at,
            color="tab:green",
            alpha=0.25,
            linewidth=6,
            label=f"chosen σ = {chosen:g}",
        )
    left.set_xticks(x, [f"{s:g}" for s in sigmas], rotation=45, fontsize=7)
    left.minorticks_off()
    handles = left.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    left.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="lower left")
    left.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
