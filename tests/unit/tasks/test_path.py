"""The path task against breadth-first search written here: paths valid and shortest."""

from __future__ import annotations

import itertools

import pytest

from llada.errors import UserError
from llada.tasks import TaskItem, get_task


def distances(edges: list[list[int]], source: int) -> dict[int, int]:
    """Edges from `source` to every node it reaches, by plain breadth-first search."""
    dist, frontier = {source: 0}, [source]
    while frontier:
        nxt = []
        for u in frontier:
            for a, b in edges:
                for x, y in ((a, b), (b, a)):
                    if x == u and y not in dist:
                        dist[y] = dist[u] + 1
                        nxt.append(y)
        frontier = nxt
    return dist


def all_shortest(edges: list[list[int]], s: int, t: int) -> set[str]:
    """Every shortest path from s to t, written as the task writes answers."""
    d, adj = distances(edges, s)[t], {frozenset(e) for e in edges}
    nodes = sorted({x for e in edges for x in e})
    return {"-".join(map(str, (s, *mid, t))) for mid in itertools.product(nodes, repeat=d - 1)
            if all(frozenset(p) in adj for p in itertools.pairwise((s, *mid, t)))}


@pytest.mark.parametrize("sizes", [{}, {"nodes": 12, "extra_edges": 10, "min_distance": 3}, {"nodes": 5, "extra_edges": 0, "min_distance": 1}])
def test_graphs_are_connected_and_the_reference_is_a_shortest_path(sizes):
    task = get_task("path", **sizes)
    cfg = task.config
    for split in ("train", "test"):
        for item in task.items(split, 30, seed=2):
            edges, s, t = item.problem["edges"], item.problem["source"], item.problem["target"]
            assert len({frozenset(e) for e in edges}) == len(edges) == cfg.nodes - 1 + cfg.extra_edges
            assert set(distances(edges, s)) == set(range(cfg.nodes))  # connected, labels 0..nodes-1
            assert distances(edges, s)[t] >= cfg.min_distance
            assert item.prompt == ",".join(f"{u}-{v}" for u, v in edges) + f" {s}>{t}="
            assert item.answer in all_shortest(edges, s, t)
            assert task.reward(item, item.answer) == 1.0


def test_every_shortest_path_is_accepted_and_longer_ones_are_not():
    task = get_task("path")
    checked = 0
    for item in task.items("train", 40, seed=0):
        edges, s, t = item.problem["edges"], item.problem["source"], item.problem["target"]
        for path in all_shortest(edges, s, t):
            assert task.reward(item, path) == 1.0
            checked += 1
        d = distances(edges, s)[t]
        # a walk one step longer: out to a neighbour of s and back would repeat s; any longer path is refused
        nb = next(b if a == s else a for a, b in edges if s in (a, b))
        assert task.reward(item, f"{s}-{nb}-{s}-" + item.answer.split("-", 1)[1]) == 0.0
        assert d >= 2
    assert checked > 40  # some problems have several shortest paths


ITEM = TaskItem("0-1,1-2,0-3,3-2,2-4 0>4=", "0-1-2-4",
                {"edges": [[0, 1], [1, 2], [0, 3], [3, 2], [2, 4]], "source": 0, "target": 4})


@pytest.mark.parametrize("response,reward", [
    ("0-1-2-4", 1.0), ("0-3-2-4", 1.0), (" 0 - 3 - 2 - 4 \n", 1.0),
    ("0-1-2", 0.0), ("1-2-4", 0.0), ("0-2-4", 0.0), ("0-1-2-3-2-4", 0.0), ("0-1-0-1-2-4", 0.0),
    ("4-2-1-0", 0.0), ("0-1-2-4-", 0.0), ("0,1,2,4", 0.0), ("0-1-2-٤", 0.0), ("0-1-2-+4", 0.0), ("", 0.0),
    ("0-" + "9" * 100_000 + "-4", 0.0), ("__import__('os')", 0.0), ("0-1/0-4", 0.0),
    ("(" * 10_000 + "0-1-2-4" + ")" * 10_000, 0.0),
])
def test_reward(response, reward):
    assert get_task("path").reward(ITEM, response) == reward


def test_position_scores_are_per_node():
    task = get_task("path")
    assert task.position_scores(ITEM, "0-3-2-4") == [True, False, True, True]
    assert task.position_scores(ITEM, "0-1") == [True, True, False, False]


def test_splits_are_disjoint_and_deterministic():
    task = get_task("path")
    train, test = task.items("train", 500, seed=0), task.items("test", 60, seed=0)
    assert not {task.key(it) for it in train} & {task.key(it) for it in test}
    assert task.items("test", 60, seed=0) == test


@pytest.mark.parametrize("sizes,message", [
    ({"nodes": 1}, "path nodes must be in 2..100, got 1"),
    ({"nodes": 4, "extra_edges": 4}, r"extra_edges must be in 0..3 for 4 nodes"),
    ({"nodes": 4, "extra_edges": 0, "min_distance": 4}, r"min_distance must be in 1..3 for 4 nodes, got 4"),
])
def test_bad_sizes_are_one_line_user_errors(sizes, message):
    with pytest.raises(UserError, match=message):
        get_task("path", **sizes)
