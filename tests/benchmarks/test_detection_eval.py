"""The detection measurement: configurations measured later merge into the table's order."""

from __future__ import annotations

from benchmarks.detection_eval import configs, merge_rows


def row(config: str, snd: bool, image: int = 0) -> dict[str, object]:
    return {"config": config, "snd": snd, "image": image}


def test_merged_rows_replace_a_remeasured_configuration_and_keep_the_table_order() -> None:
    old = [row("boundary", True), row("popskipjump", True, 1), row("boundary", False)]
    new = [row("popskipjump", True, 2), row("popskipjump", False, 2), row("hsja", True)]
    merged = merge_rows(old, new)
    keys = [(r["config"], r["snd"], r["image"]) for r in merged]
    # SND first, each in configs() order; the old popskipjump row is gone
    assert keys == [
        ("boundary", True, 0),
        ("hsja", True, 0),
        ("popskipjump", True, 2),
        ("boundary", False, 0),
        ("popskipjump", False, 2),
    ]


def test_the_noise_aware_attacks_are_configurations_with_their_own_labels() -> None:
    labels = [c.label for c in configs()]
    assert len(labels) == len(set(labels))
    assert {"square (confirm=3)", "popskipjump", "rays (L∞ 0.3)"} <= set(labels)
