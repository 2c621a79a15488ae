"""Duplicate groups that never chain: complete linkage over the pairs above a threshold.

The rule: every pair of images in a group scores at least the threshold (exact cosine). Linking pairs one by one
(single linkage, what union-find over neighbour lists gives) lets A~B and B~C put A and C together however far apart
they are, so one busy image can pull unrelated photos into a group: a calibrated threshold then says nothing about
the group. Checking only each member against a representative bounds the distance to the representative, but two
members may still be twice as far from each other. Complete linkage keeps the threshold's meaning for every pair the
group claims, which is what a user deleting "the others" relies on.

Pairs are merged from the highest score down; two groups join only if every cross pair reaches the threshold. Cross
pairs are looked up among the pairs found (the search returns every pair above the threshold); one the search did
not return (an approximate index) is scored from the exact vectors before the groups are allowed to join.
Exact copies (same SHA-256) have identical vectors: the caller pairs up one of each set and expands the groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from simsearch.dedup.neighbours import PairList

__all__ = ["complete_linkage", "min_pair_score"]


def complete_linkage(
    pairs: PairList,
    threshold: float,
    vectors: Callable[[np.ndarray], np.ndarray],
) -> list[list[int]]:
    """Groups (of two or more ids) in which every pair's cosine is at least `threshold`.

    Args:
        pairs: pairs above the threshold with their exact scores (`pairs_above`), highest first.
        vectors: exact stored vectors by id; a group's are read once when it forms and kept while it grows, so a
            join is one small matrix product (every cross pair, found by the search or not).
    """
    group_of: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    stacked: dict[int, np.ndarray] = {}
    refused: set[tuple[int, int]] = set()  # groups only grow: two that cannot join never can while both exist

    def vectors_of(root: int) -> np.ndarray:
        found = stacked.get(root)
        return vectors(np.asarray([root], dtype=np.int64)) if found is None else found

    for a, b in zip(pairs.a.tolist(), pairs.b.tolist(), strict=True):
        ga, gb = group_of.get(a, a), group_of.get(b, b)
        if ga == gb or (min(ga, gb), max(ga, gb)) in refused:
            continue
        left, right = members.get(ga, [a]), members.get(gb, [b])
        va, vb = vectors_of(ga), vectors_of(gb)
        # Two single images are a pair the search scored above the line; groups need every cross pair checked.
        if (len(left) > 1 or len(right) > 1) and float((va @ vb.T).min()) < threshold:
            refused.add((min(ga, gb), max(ga, gb)))
            continue
        if len(left) < len(right):
            ga, gb, left, right, va, vb = gb, ga, right, left, vb, va
        members[ga] = left + right
        stacked[ga] = np.concatenate([va, vb])
        members.pop(gb, None)
        stacked.pop(gb, None)
        group_of.update((i, ga) for i in right)
        group_of[ga] = ga
    groups = [sorted(m) for m in members.values() if len(m) > 1]
    return sorted(groups, key=lambda g: g[0])


def min_pair_score(ids: Sequence[int], vectors: Callable[[np.ndarray], np.ndarray]) -> float:
    """The lowest exact cosine between any two of `ids` (the group's weakest link; checks the rule)."""
    v = vectors(np.asarray(ids, dtype=np.int64))
    s = v @ v.T
    return float(s[np.triu_indices(len(ids), 1)].min()) if len(ids) > 1 else 1.0
