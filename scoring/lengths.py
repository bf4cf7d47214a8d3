"""Texts in length order, so a model call holds texts of similar length.

Recurrent exports cut each batch to its longest text, so a batch costs in proportion to its
size times its longest member: a short text batched with a long one pays for the long one.
Callers that score many texts at once (a job's chunk) score them in length order and put the
answers back in input order.  Characters stand in for tokens: counting them costs nothing
and orders texts almost exactly as their token counts would.
"""

from __future__ import annotations

from collections.abc import Sequence


def length_order(texts: Sequence[str]) -> list[int]:
    """Indices of ``texts`` from shortest to longest; equal lengths keep their input order."""
    return sorted(range(len(texts)), key=lambda i: len(texts[i]))


def token_estimate(text: str, cap: int | None = None) -> int:
    """Roughly the tokens a model reads of ``text``: its words, at most ``cap``."""
    words = len(text.split())
    return words if cap is None else min(words, cap)


def length_groups(lengths: Sequence[int], call_cost: int, step_cost: int = 0) -> list[list[int]]:
    """Indices of a batch cut into model calls of similar-length texts, shortest first.

    In token steps (one text through one recurrent step), a call costs ``call_cost``, plus
    ``step_cost`` for each of its time steps, plus its size times its longest text; the texts
    are cut, in length order, where the total is least (one call when splitting saves less than
    it costs; ``call_cost`` 0 never splits).  Exact dynamic programming over the sorted
    lengths: O(n²) for a batch of n texts, well under a millisecond for a micro-batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if call_cost <= 0 or len(order) < 2:
        return [order] if order else []
    sizes = [max(lengths[i], 1) for i in order]
    best = [0] + [0] * len(order)
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = sizes[end - 1]
        best[end], cut[end] = min((best[start] + call_cost + (step_cost + end - start) * longest, start)
                                  for start in range(end))
    groups, end = [], len(order)
    while end:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]
