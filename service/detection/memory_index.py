"""The memory store's fingerprint index: per (model, layer, bucket), ``key -> recent query ids``
(``service.detection.store.MemoryDetectionStore``; the Redis store keeps the same in Lua)."""

from __future__ import annotations

from collections import defaultdict

Index = dict[tuple[str, str, int], dict[bytes, list[int]]]


def nearest(
    index: Index, model: str, keys: list[bytes], buckets: list[int], threshold: int
) -> int | None:
    """The stored query sharing the most of ``keys`` (ties: the latest), if over threshold."""
    counts: dict[int, int] = defaultdict(int)
    for key in dict.fromkeys(keys):
        for b in buckets:
            for qid in index[(model, "near", b)].get(key, ()):
                counts[qid] += 1
    if not counts:
        return None
    best = max(counts, key=lambda qid: (counts[qid], qid))
    return best if counts[best] > threshold else None


def append(
    ids_of: dict[bytes, list[int]], key: bytes, seq: int, cap: int, keep_first: bool = False
) -> None:
    """Add ``seq`` to ``key``'s ids; past ``cap`` drop the oldest, or with ``keep_first`` the
    second oldest (the exact index: the first id is an image's first answer)."""
    ids = ids_of.setdefault(key, [])
    ids.append(seq)
    if len(ids) > cap:
        del ids[1 if keep_first else 0]
