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
        pairs: pairs above the threshold with their exact scores (`pairs_above`).
        vectors: exact stored vectors by id, for a cross pair that `pairs` lacks.
    """
    triples = zip(pairs.a.tolist(), pairs.b.tolist(), pairs.score.tolist(), strict=True)
    known: dict[tuple[int, int], float] = {(a, b): s for a, b, s in triples}
    group_of: dict[int, int] = {}
    members: dict[int, list[int]] = {}

    def score(u: int, v: int) -> float:
        key = (u, v) if u < v else (v, u)
        if key not in known:
            pair = vectors(np.asarray(key, dtype=np.int64))
            known[key] = float(pair[0] @ pair[1])
        return known[key]

    def joinable(left: list[int], right: list[int]) -> bool:
        return all(score(u, v) >= threshold for u in left for v in right)

    for a, b in zip(pairs.a.tolist(), pairs.b.tolist(), strict=True):
        ga, gb = group_of.get(a, a), group_of.get(b, b)
        if ga == gb:
            continue
        left, right = members.get(ga, [a]), members.get(gb, [b])
        if not joinable(left, right):
            continue
        if len(left) < len(right):
            ga, gb, left, right = gb, ga, right, left
        merged = left + right
        members[ga] = merged
        members.pop(gb, None)
        group_of.update((i, ga) for i in merged)
    groups = [sorted(m) for m in members.values() if len(m) > 1]
    return sorted(groups, key=lambda g: g[0])


def min_pair_score(ids: Sequence[int], vectors: Callable[[np.ndarray], np.ndarray]) -> float:
    """The lowest exact cosine between any two of `ids` (the group's weakest link; checks the rule)."""
    v = vectors(np.asarray(ids, dtype=np.int64))
    s = v @ v.T
    return float(s[np.triu_indices(len(ids), 1)].min()) if len(ids) > 1 else 1.0
