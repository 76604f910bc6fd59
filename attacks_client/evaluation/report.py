"""``python -m attacks_client report runs/<name>``: the paper's tables and plots from a run.

Writes ``report.md`` (Markdown tables), ``tables/*.csv`` and ``plots/*.png`` into the run
directory. Tables: 1 (clean accuracy, mean ± std over repeats), 2/3 (success rate at each
checkpoint with the mean L2 of the q-th query in parentheses, one table per epsilon), 4/6 (the
adaptive attack against T), 5 (P_mis), 7 (SND variants), and median candidate L2.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from attacks_client.data import load_images
from attacks_client.evaluation.measures import (
    mean_query_l2,
    median_l2,
    p_mis,
    reference_success_counts,
    success_counts,
    success_rate,
    wilson_interval,
)
from attacks_client.evaluation.plots import plot_median_l2
from attacks_client.evaluation.runs import Run
from attacks_client.evaluation.tables import (
    clean_accuracy_table,
    describe_defense,
    fmt_l2,
    fmt_rate,
    markdown_table,
    short,
    write_csv,
)


class Report:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.tables = run.directory / "tables"
        self.plots = run.directory / "plots"

    def plain_attacks(self, norm: str = "l2") -> list[dict[str, Any]]:
        return [a for a in self.attacks(norm) if a["repeat"] == 1]

    def attacks(self, norm: str = "l2") -> list[dict[str, Any]]:
        """The attacks judged in ``norm`` (``l2`` or ``linf``)."""
        return [a for a in self.run.attacks if a.get("norm", "l2") == norm]

    def table1(self) -> str:
        return clean_accuracy_table(self.run, self.tables)

    def success_table(self, attacks: list[dict[str, Any]], epsilon: float, name: str) -> str:
        header = ["Endpoint"] + [
            f"{a['key']} {short(q)}" for a in attacks for q in self.run.checkpoints
        ]
        rows, csv_rows = [], []
        for endpoint in self.run.endpoints:
            cells = [endpoint]
            for attack in attacks:
                records = self.run.select(attack["key"], endpoint)
                for q in self.run.checkpoints:
                    rate, ql2 = success_rate(records, q, epsilon), mean_query_l2(records, q)
                    cells.append(f"{fmt_rate(rate)} ({fmt_l2(ql2)})" if records else "–")
                    csv_rows.append(
                        [
                            endpoint,
                            attack["key"],
                            q,
                            epsilon,
                            rate,
                            ql2,
                            median_l2(records, q),
                            len(records),
                        ]
                    )
            rows.append(cells)
        write_csv(
            self.tables / f"{name}.csv",
            [
                "endpoint",
                "attack",
                "queries",
                "epsilon",
                "success_rate",
                "mean_query_l2",
                "median_l2",
                "images",
            ],
            csv_rows,
        )
        return markdown_table(header, rows)

    def attacks_by_endpoint(
        self, cell: Callable[[str, str, list[dict[str, Any]]], str], norm: str = "l2"
    ) -> str:
        """A table with the attacks judged in ``norm`` as rows and the attacked endpoints as
        columns; ``cell(attack, endpoint, records)`` fills a cell that has records, the others
        read "–"."""
        attacks = self.attacks(norm)
        endpoints = [
            e for e in self.run.endpoints if any(self.run.select(a["key"], e) for a in attacks)
        ]
        rows = [
            [attack["key"]]
            + [
                cell(attack["key"], endpoint, records)
                if (records := self.run.select(attack["key"], endpoint))
                else "–"
                for endpoint in endpoints
            ]
            for attack in attacks
        ]
        return markdown_table(["Attack"] + endpoints, rows)

    def glance_table(self, epsilons: list[float], norm: str = "l2") -> str:
        """Attacks as rows, endpoints as columns, at the full budget: success rate at each ε
        and the median L2 of the candidate (the paper's tables, transposed and narrowed)."""
        q = self.run.checkpoints[-1]

        def cell(attack: str, endpoint: str, records: list[dict[str, Any]]) -> str:
            rates = " / ".join(
                fmt_rate(success_rate(records, q, eps)).removesuffix(".0") for eps in epsilons
            )
            return f"{rates} ({fmt_l2(median_l2(records, q))}; n={len(records)})"

        return self.attacks_by_endpoint(cell, norm)

    def interval_table(self, epsilon: float, norm: str = "l2") -> str:
        """Success at ``epsilon`` after the full budget as hits / images, with the 95% Wilson
        interval: how far a rate over this many images can be trusted."""
        q = self.run.checkpoints[-1]
        csv_rows: list[list[Any]] = []

        def cell(attack: str, endpoint: str, records: list[dict[str, Any]]) -> str:
            hits, n = success_counts(records, q, epsilon)
            lo, hi = wilson_interval(hits, n)
            csv_rows.append([attack, endpoint, hits, n, lo, hi])
            return f"{hits}/{n} [{lo * 100:.0f}–{hi * 100:.0f}]"

        table = self.attacks_by_endpoint(cell, norm)
        write_csv(
            self.tables / f"success_interval_{'linf_' if norm == 'linf' else ''}eps{epsilon}.csv",
            ["attack", "endpoint", "successes", "images", "wilson95_low", "wilson95_high"],
            csv_rows,
        )
        return table

    def reference_table(self, epsilons: list[float], norm: str = "l2") -> str:
        """The at-a-glance shape, with success decided by the noise-free reference h."""
        q = self.run.checkpoints[-1]

        def cell(attack: str, endpoint: str, records: list[dict[str, Any]]) -> str:
            counts = [
                reference_success_counts(records, self.run.judgements, q, eps) for eps in epsilons
            ]
            n = counts[0][1]
            return " / ".join(f"{100 * h / n:.0f}" for h, _ in counts) + f" (n={n})" if n else "–"

        return self.attacks_by_endpoint(cell, norm)

    def median_table(self) -> str:
        attacks = self.plain_attacks()
        header = ["Endpoint"] + [f"{a['key']} @{q}" for a in attacks for q in self.run.checkpoints]
        rows = [
            [e]
            + [
                fmt_l2(median_l2(self.run.select(a["key"], e), q))
                if self.run.select(a["key"], e)
                else "–"
                for a in attacks
                for q in self.run.checkpoints
            ]
            for e in self.run.endpoints
        ]
        return markdown_table(header, rows)

    def counts_table(self) -> str:
        """How many images each (attack, endpoint) cell holds (a cut-short run has fewer)."""
        attacks = self.run.attacks
        rows = [
            [e] + [str(len(self.run.select(a["key"], e))) for a in attacks]
            for e in self.run.endpoints
        ]
        return markdown_table(["Endpoint"] + [a["key"] for a in attacks], rows)

    def table5(self) -> str:
        attacks = self.run.attacks
        rows, csv_rows = [], []
        for endpoint in self.run.endpoints:
            cells = [endpoint]
            for attack in attacks:
                value = p_mis(self.run.select(attack["key"], endpoint))
                cells.append(fmt_rate(value))
                csv_rows.append([endpoint, attack["key"], value])
            rows.append(cells)
        write_csv(self.tables / "table5_p_mis.csv", ["endpoint", "attack", "p_mis"], csv_rows)
        return markdown_table(["Endpoint"] + [a["key"] for a in attacks], rows)

    def adaptive_table(self, epsilon: float) -> str | None:
        names = {a["name"] for a in self.attacks() if a["repeat"] > 1}
        if not names:
            return None
        header = ["Attack", "T", "Endpoint"] + [f"{q}" for q in self.run.checkpoints] + ["P_mis"]
        rows = []
        for attack in sorted(
            (a for a in self.attacks() if a["name"] in names),
            key=lambda a: (a["name"], a["repeat"]),
        ):
            for endpoint in self.run.endpoints:
                records = self.run.select(attack["key"], endpoint)
                if not records:
                    continue
                rows.append(
                    [attack["name"], str(attack["repeat"]), endpoint]
                    + [
                        f"{fmt_rate(success_rate(records, q, epsilon))} "
                        f"({fmt_l2(mean_query_l2(records, q))})"
                        for q in self.run.checkpoints
                    ]
                    + [fmt_rate(p_mis(records))]
                )
        return markdown_table(header, rows)

    def table7(self, epsilon: float) -> str | None:
        snd = [
            e
            for e in self.run.endpoints
            if self.run.defense(e).get("kind") == "snd" and "sigma" in self.run.defense(e)
        ]
        if not snd:
            return None
        attacks = self.plain_attacks()
        accuracy = {r["endpoint"]: np.array(r["accuracies"]) * 100 for r in self.run.accuracy}
        header = ["Defense", "Clean acc. (%)", "E‖η‖₂"] + [
            f"{a['key']} {q}" for a in attacks for q in self.run.checkpoints
        ]
        rows = []
        for endpoint in snd:
            d = self.run.defense(endpoint)
            dim = self._dimension(endpoint)
            k = d["alpha"] / (d["alpha"] + d["beta"]) if d.get("distribution") == "beta" else 1.0
            acc = accuracy.get(endpoint)
            rows.append(
                [
                    describe_defense(d),
                    f"{acc.mean():.2f} ± {acc.std():.2f}" if acc is not None else "–",
                    fmt_l2(k * d["sigma"] * math.sqrt(dim)) if dim else "–",
                ]
                + [
                    fmt_rate(success_rate(self.run.select(a["key"], endpoint), q, epsilon))
                    for a in attacks
                    for q in self.run.checkpoints
                ]
            )
        return markdown_table(header, rows)

    def _dimension(self, endpoint: str) -> int | None:
        """Pixels per image: from the endpoint's accuracy row (``/models``' input shape), or
        else from the run's dataset (rows written before the shape was recorded)."""
        for row in self.run.accuracy:
            if row["endpoint"] == endpoint and row.get("input_shape"):
                return int(np.prod(row["input_shape"]))
        return self._dataset_pixels

    @functools.cached_property
    def _dataset_pixels(self) -> int | None:
        try:
            return int(load_images(self.run.experiment["dataset"]).images[0].size)
        except (KeyError, OSError, ValueError):
            return None

    def linf_sections(self) -> list[str]:
        """The at-a-glance and interval tables of the rows judged in L∞."""
        radii = list(self.run.experiment.get("linf_epsilons", [0.1, 0.2, 0.3]))
        if not self.attacks("linf"):
            return []
        listed = " / ".join(str(e) for e in radii)
        parts = [
            f"\n## L∞ attacks at a glance: success rate (%) at {self.run.checkpoints[-1]} queries",
            f'\nRows judged in L∞ (`norm = "linf"` in the experiment file). Each cell: success at '
            f"ε∞ = {listed} (median L∞ distance of the candidate; images).\n",
            self.glance_table(radii, "linf"),
        ]
        for epsilon in radii:
            parts += [f"\nε∞ = {epsilon}:\n", self.interval_table(epsilon, "linf")]
        if self.run.judgements:
            parts += [f"\nJudged by the noise-free h, at ε∞ = {listed}:\n"]
            parts += [self.reference_table(radii, "linf")]
        return parts

    def markdown(self) -> str:
        exp = self.run.experiment
        eps = exp["primary_epsilon"]
        parts = [
            f"# Report: {exp['name']}",
            "",
            f"{exp['images']} correctly classified images (seed {exp['seed']}, reference endpoint "
            f"`{exp['reference']}`), budget {exp['budget']} queries, ε ∈ {exp['epsilons']} "
            f"(L2, primary {eps}), success judged by a majority of {exp['eval_draws']} "
            "evaluator draws on the attacked endpoint. Cells: success rate % (mean L2 of the "
            "q-th query image ‖x0 − x_q‖₂).",
            "",
            "## Table 1: clean accuracy",
            "",
            self.table1(),
            "",
            f"## At a glance: success rate (%) at {exp['budget']} queries",
            "",
            f"Each cell: success at ε = {' / '.join(str(e) for e in exp['epsilons'])} (median "
            "L2 of the candidate; images).",
            "",
            self.glance_table(list(exp["epsilons"])),
        ]
        parts += [
            "",
            f"## Success after {exp['budget']} queries, with 95% intervals",
            "",
            "Each cell: successes / images [Wilson 95% interval, %].",
        ]
        for epsilon in [eps] + [e for e in exp["epsilons"] if e != eps]:
            parts += [
                "",
                f"ε = {epsilon}{' (primary)' if epsilon == eps else ''}:",
                "",
                self.interval_table(epsilon),
            ]
        if self.run.judgements:
            parts += [
                "",
                "## Success judged by the noise-free reference h (`rejudge`)",
                "",
                f"As at a glance, but a candidate counts when h (the endpoint's network "
                f"without its noise) misclassifies it, not the defended endpoint's "
                f"majority. Each cell: success at ε = "
                f"{' / '.join(str(e) for e in exp['epsilons'])} (images judged).",
                "",
                self.reference_table(list(exp["epsilons"])),
            ]
        parts += self.linf_sections()
        plain = self.plain_attacks()
        for epsilon in exp["epsilons"]:
            name = f"table2_success_eps{epsilon}"
            parts += [
                "",
                f"## Tables 2/3: attack success rate (%), ε = {epsilon}",
                "",
                self.success_table(plain, epsilon, name),
            ]
        for epsilon in exp.get("linf_epsilons", []) if self.attacks("linf") else []:
            name = f"table2_success_linf_eps{epsilon}"
            parts += [
                "",
                f"## Tables 2/3, L∞ attacks: success rate (%), ε∞ = {epsilon}",
                "",
                self.success_table(self.plain_attacks("linf"), epsilon, name),
            ]
        parts += ["", "## Median L2 of the adversarial candidate", "", self.median_table()]
        parts += ["", "## Images per cell", "", self.counts_table()]
        adaptive = self.adaptive_table(eps)
        if adaptive:
            parts += [
                "",
                f"## Tables 4/6: adaptive attack (T repeats per query), ε = {eps}",
                "",
                adaptive,
            ]
        parts += [
            "",
            "## Table 5: P_mis = P(h(x) ≠ h(x + η)) over the attacks' queries (%)",
            "",
            self.table5(),
        ]
        table7 = self.table7(eps)
        if table7:
            parts += ["", f"## Table 7: SND variants, ε = {eps}", "", table7]
        plots = plot_median_l2(self.run, self.plots)
        if plots:
            parts += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
        return "\n".join(parts) + "\n"


def report(directory: Path) -> Path:
    run = Run.load(directory)
    text = Report(run).markdown()
    path = directory / "report.md"
    path.write_text(text)
    return path
