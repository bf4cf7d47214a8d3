"""Length order and length groups: how texts are put together in model calls."""

from __future__ import annotations

import itertools

import pytest

from scoring.lengths import length_groups, length_order, token_estimate


def test_length_order_is_shortest_first_and_stable():
    assert length_order(["ccc", "a", "bb", "", "d"]) == [3, 1, 4, 2, 0]
    assert length_order([]) == []


def test_token_estimate_counts_words_up_to_the_cap():
    assert token_estimate("Wheat  exports\nrose") == 3
    assert token_estimate("a b c d", cap=2) == 2
    assert token_estimate("") == 0


def _cost(groups, lengths, call_cost, step_cost):
    return sum(call_cost + (step_cost + len(g)) * max(max(lengths[i] for i in g), 1) for g in groups)


@pytest.mark.parametrize("step_cost", [0, 3, 40])
@pytest.mark.parametrize("call_cost", [1, 100, 500, 2000, 10_000])
def test_groups_are_the_cheapest_cut_of_the_sorted_batch(call_cost, step_cost):
    lengths = [300, 8, 290, 12, 300, 10, 95, 100]
    groups = length_groups(lengths, call_cost, step_cost)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    flat = [i for g in groups for i in g]
    assert [lengths[i] for i in flat] == sorted(lengths)  # contiguous runs of the sorted batch
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = min(_cost(_cut(order, cuts), lengths, call_cost, step_cost)
               for k in range(len(lengths)) for cuts in itertools.combinations(range(1, len(lengths)), k))
    assert _cost(groups, lengths, call_cost, step_cost) == best


def _cut(order, cuts):
    bounds = [0, *cuts, len(order)]
    return [order[a:b] for a, b in zip(bounds, bounds[1:])]


def test_one_call_when_a_split_saves_less_than_a_call_costs():
    assert len(length_groups([300, 8, 290, 12], 2000)) == 1  # saves 2 × 290 < 2000
    assert len(length_groups([300, 8, 290, 12], 100)) == 2
    assert length_groups([5, 5, 5], 1) == [[0, 1, 2]]  # nothing to save
    assert length_groups([300, 8], 0) == [[1, 0]]  # 0: never split
    assert length_groups([], 10) == []
    assert len(length_groups([300, 8, 290, 12], 100, step_cost=200)) == 1  # the short call's steps cost more
