"""``python -m attacks_client demo``: attacker against an undefended and an SND-defended service.

Starts ``python -m service`` twice on free ports (undefended, and SND σ = 0.01; in-memory
counters), runs a short HSJA, SimBA-DCT and adaptive Square Attack (L2 ball of radius ε; the
noise-aware form, since the plain one mostly ends on a lucky noisy answer) evaluation on a few
correctly classified test images of the embedded model, and prints the side-by-side table
with a reading of it that names the strongest attack behind SND, whatever it shows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from attacks_client.evaluation.experiment import EndpointConfig, Experiment
from attacks_client.evaluation.grid import evaluate
from attacks_client.evaluation.measures import median_l2, success_rate
from attacks_client.evaluation.presets import attack_row
from attacks_client.evaluation.runs import Run

DEMO_ATTACKS = ("hsja", "simba-dct", "square-adaptive")


def demo_experiment(images: int, budget: int, sigma: float, epsilon: float) -> Experiment:
    checkpoints = tuple(sorted({budget // 2, budget}))
    return Experiment(
        name="demo",
        endpoints=(
            EndpointConfig(name="undefended", serve={"defense": "none"}),
            EndpointConfig(name=f"snd-{sigma}", serve={"defense": "snd", "sigma": sigma}),
        ),
        attacks=tuple(attack_row(a, epsilon) for a in DEMO_ATTACKS),
        images=images,
        budget=budget,
        checkpoints=checkpoints,
        epsilons=(epsilon,),
        primary_epsilon=epsilon,
        accuracy_repeats=1,
        accuracy_images=500,
        pmis_samples=100,
        sigma_hat_images=20,  # σ̂ over 20 images x 50 draws: enough for a demo's Table 1
        sigma_hat_draws=50,
    )


def demo_keys(epsilon: float) -> list[str]:
    """The record keys of the demo's attack rows."""
    return [attack_row(a, epsilon).key for a in DEMO_ATTACKS]


def summary_table(run: Run, epsilon: float) -> Table:
    q = run.checkpoints[-1]
    images = run.experiment["images"]
    table = Table(title=f"{images} images, {q} queries, success at L2 ≤ {epsilon}")
    table.add_column("endpoint")
    table.add_column("clean acc.", justify="right")
    keys = demo_keys(epsilon)
    for attack in keys:
        table.add_column(f"{attack} success", justify="right")
        table.add_column(f"{attack} median L2", justify="right")
    accuracy = {r["endpoint"]: sum(r["accuracies"]) / len(r["accuracies"]) for r in run.accuracy}
    for endpoint in run.endpoints:
        cells = [endpoint, f"{accuracy.get(endpoint, float('nan')) * 100:.1f}%"]
        for attack in keys:
            records = run.select(attack, endpoint)
            cells += [
                f"{success_rate(records, q, epsilon) * 100:.0f}%",
                f"{median_l2(records, q):.2f}",
            ]
        table.add_row(*cells)
    return table


def reading(run: Run, epsilon: float) -> str:
    """One paragraph that says what the numbers show, whatever they show: each attack with and
    without SND, and the strongest attack behind SND, which is the defense's number."""
    q = run.checkpoints[-1]
    plain, defended = run.endpoints
    parts, behind = [], {}
    keys = demo_keys(epsilon)
    for attack in keys:
        a = success_rate(run.select(attack, plain), q, epsilon) * 100
        b = behind[attack] = success_rate(run.select(attack, defended), q, epsilon) * 100
        verb = "cut" if b < a else ("left" if b == a else "raised")
        parts.append(
            f"{attack} succeeded on {a:.0f}% of the images without a defense and on "
            f"{b:.0f}% behind {defended} (SND {verb} it"
            + (f" by {a - b:.0f} points)" if b < a else ")")
        )
    acc = {r["endpoint"]: sum(r["accuracies"]) / len(r["accuracies"]) for r in run.accuracy}
    strongest = max(keys, key=lambda name: behind[name])
    if behind[strongest] > 0:
        closing = (
            f"The strongest attack here, {strongest}, still succeeded on "
            f"{behind[strongest]:.0f}% of the images behind {defended}: that, not the weakest "
            "attack, is what this σ protects against. "
        )
    else:
        closing = (
            f"No attack here succeeded behind {defended} within this budget on these images; "
            "that is no proof of safety (docs/results.md gives the strongest attack over more "
            "images and queries). "
        )
    return (
        f"Within {q} queries and L2 ≤ {epsilon}: " + "; ".join(parts) + ". "
        f"Clean accuracy moved from {acc[plain] * 100:.1f}% to {acc[defended] * 100:.1f}%. "
        + closing
        + "A short demo on few images is noisy itself (one image is "
        f"{100 / max(run.experiment['images'], 1):.0f} points); "
        "`python -m attacks_client evaluate` runs the full protocol, and docs/results.md "
        "reads it."
    )


def run_demo(
    images: int = 5,
    budget: int = 2000,
    sigma: float = 0.01,
    epsilon: float = 1.5,
    out_dir: Path | None = None,
    workers: int = 2,
    console: Console | None = None,
) -> Run:
    console = console or Console()
    out_dir = out_dir or Path(tempfile.mkdtemp(prefix="snd-demo-"))
    experiment = demo_experiment(images, budget, sigma, epsilon)
    console.print(
        f"[bold]SND demo[/]: starting an undefended and an SND σ={sigma} service, "
        f"then HSJA, SimBA-DCT and the adaptive Square on {images} images with {budget} "
        "queries each"
    )
    evaluate(experiment, out_dir, workers=workers)
    run = Run.load(out_dir)
    console.print(summary_table(run, epsilon))
    console.print(reading(run, epsilon))
    console.print(f"raw records: {out_dir / 'records.jsonl'}")
    return run
