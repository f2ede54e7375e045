"""Seeded subsets: which records a benchmark evaluates and which a paper trains on.

Two rules, because the field uses two and a published number depends on which:

* :func:`shuffled_head` is VLM-R1's evaluation subset (its ``src/eval/test_rec_r1.py``): seed
  Python's ``random`` with the seed, shuffle the whole split in place, keep the first ``n``.  The
  subset depends on the order of the records in the file, so the paper's subsets come back only
  from the same file (docs/data.md says which).
* :func:`random_sample` is the training-set rule ("2,000 random samples of ..."): ``n`` records drawn
  without replacement with ``random.Random(seed).sample``, the rule ``data.max_train_samples`` uses,
  optionally after leaving out records another subset took (a test set drawn from the same pool).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

T = TypeVar("T")


def shuffled_head(items: Sequence[T], n: int | None, seed: int) -> list[T]:
    """``random.seed(seed); random.shuffle(items); items[:n]`` without touching the global RNG or ``items``.

    ``random.Random(seed)`` draws the same numbers as the module's functions after
    ``random.seed(seed)``, so the result equals VLM-R1's subset record for record.  ``n=None``
    keeps the whole shuffled split.
    """
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    return shuffled if n is None else shuffled[:n]


def random_sample(items: Sequence[T], n: int, seed: int, *, exclude: Collection[str] = (),
                  key: Callable[[T], str] | None = None) -> list[T]:
    """``n`` items drawn with ``random.Random(seed).sample``, after dropping those whose ``key`` is in ``exclude``.

    Asking for more than there are keeps them all (in their order): "2,000 random samples" of a
    fixture of ten is the ten.
    """
    pool = [item for item in items if key is None or key(item) not in exclude]
    if n >= len(pool):
        return pool
    return random.Random(seed).sample(pool, n)
