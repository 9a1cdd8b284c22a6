"""Path-finding: a shortest path between two nodes of a small random graph given as an edge list.

A planning task in the spirit of the synthetic planning task of Ye et al. 2025 ("Beyond
Autoregression", HKUNLP/diffusion-vs-ar): the first step of a good path depends on where it must
end, which a left-to-right decoder has to plan ahead and a diffusion model can fill from both ends.

    prompt "3-1,1-0,0-2,3-4,4-2,1-5 3>2="  ->  answer "3-4-2"

The graph is undirected and connected: a random spanning tree over `nodes` nodes (labelled in random
order) plus `extra_edges` more, listed in random order. The two ends are at least `min_distance`
edges apart. The reference answer is the breadth-first path that visits lower labels first; the
verifier accepts every path from the first end to the second along listed edges with the fewest
edges. The canonical problem is the set of edges and the two ends.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass

from llada.tasks.base import ReasoningTask, TaskConfig, TaskItem, check

MAX_NODES = 100


@dataclass(frozen=True)
class PathConfig(TaskConfig):
    nodes: int = 8
    """Nodes of the graph, labelled 0..nodes-1."""
    extra_edges: int = 4
    """Edges beyond a spanning tree (nodes - 1 edges); more edges make more shortcuts."""
    min_distance: int = 2
    """The two ends are at least this many edges apart."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ints("nodes", "extra_edges", "min_distance")
        check(2 <= self.nodes <= MAX_NODES, f"path nodes must be in 2..{MAX_NODES}, got {self.nodes}")
        room = self.nodes * (self.nodes - 1) // 2 - (self.nodes - 1)
        check(0 <= self.extra_edges <= room,
              f"extra_edges must be in 0..{room} for {self.nodes} nodes (the pairs a tree leaves), got {self.extra_edges}")
        check(1 <= self.min_distance <= self.nodes - 1,
              f"min_distance must be in 1..{self.nodes - 1} for {self.nodes} nodes, got {self.min_distance}")


def neighbours(edges: list[list[int]]) -> dict[int, list[int]]:
    """Each node's neighbours, in ascending order."""
    out: dict[int, list[int]] = {}
    for u, v in edges:
        out.setdefault(u, []).append(v)
        out.setdefault(v, []).append(u)
    return {u: sorted(vs) for u, vs in out.items()}


def shortest_path(edges: list[list[int]], source: int, target: int) -> list[int] | None:
    """A path with the fewest edges (breadth first, lower labels first), or None when there is none."""
    adj = neighbours(edges)
    parent = {source: source}
    queue = deque([source])
    while queue:
        u = queue.popleft()
        if u == target:
            path = [u]
            while path[-1] != source:
                path.append(parent[path[-1]])
            return path[::-1]
        for v in adj.get(u, []):
            if v not in parent:
                parent[v] = u
                queue.append(v)
    return None


def _random_graph(cfg: PathConfig, rng: random.Random) -> list[list[int]]:
    order = list(range(cfg.nodes))
    rng.shuffle(order)
    edges = {frozenset((order[i], order[rng.randrange(i)])) for i in range(1, cfg.nodes)}
    others = [frozenset((u, v)) for u in range(cfg.nodes) for v in range(u + 1, cfg.nodes)
              if frozenset((u, v)) not in edges]
    edges |= set(rng.sample(others, cfg.extra_edges))
    out = [sorted(e) for e in sorted(edges, key=sorted)]
    rng.shuffle(out)
    return [e if rng.random() < 0.5 else e[::-1] for e in out]  # each edge written either way round


class Path(ReasoningTask):
    name = "path"
    config_class = PathConfig
    config: PathConfig

    def sample(self, rng: random.Random, split: str) -> TaskItem | None:
        edges = _random_graph(self.config, rng)
        source = rng.randrange(self.config.nodes)
        far = [t for t in range(self.config.nodes)
               if t != source and len(shortest_path(edges, source, t)) - 1 >= self.config.min_distance]
        if not far:
            return None
        target = rng.choice(far)
        listed = ",".join(f"{u}-{v}" for u, v in edges)
        path = shortest_path(edges, source, target)
        return TaskItem(f"{listed} {source}>{target}=", "-".join(map(str, path)),
                        {"edges": edges, "source": source, "target": target})

    def key(self, item: TaskItem) -> str:
        edges = sorted(sorted(e) for e in item.problem["edges"])
        return f"{edges} {item.problem['source']}>{item.problem['target']}"

    def positions(self, answer: str) -> list[str]:
        return [p.strip() for p in answer.strip().split("-")]  # one position per node

    def verify(self, item: TaskItem, response: str) -> bool:
        p = item.problem
        text = response.strip()
        if len(text) > 4 * (len(p["edges"]) + 1):  # a shortest path visits each node once: longer is not one
            return False
        parts = [s.strip() for s in text.split("-")]
        if not all(s.isdecimal() and s.isascii() for s in parts):
            return False
        nodes = [int(s) for s in parts]
        edges = {frozenset(e) for e in p["edges"]}
        best = shortest_path(p["edges"], p["source"], p["target"])
        return (nodes[0] == p["source"] and nodes[-1] == p["target"] and len(nodes) == len(best)
                and all(frozenset((a, b)) in edges for a, b in itertools.pairwise(nodes)))
