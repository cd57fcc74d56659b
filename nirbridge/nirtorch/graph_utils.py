"""Graph helpers of the legacy graph executor (parents, children, execution order)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

__all__ = ["find_children", "find_parents", "find_all_ancestors", "trace_execution",
           "GraphInputNode", "GraphOutputNode"]

T = TypeVar("T")


def find_children(node, edges) -> set:
    """The direct successors of ``node``."""
    return {b for a, b in edges if a == node}


def find_parents(node, edges) -> set:
    """The direct predecessors of ``node``."""
    return {a for a, b in edges if b == node}


def find_all_ancestors(node, edges, roots=None, parents_found=None, nodes_inspected=None) -> set:
    """Every node from which ``node`` can be reached (stopping at ``roots``)."""
    roots = set(roots or ())
    if node in roots:
        return set()
    found, todo, seen = set(), [node], set()
    while todo:
        cur = todo.pop()
        if cur in seen or (cur in roots and cur is not node):
            continue
        seen.add(cur)
        for p in find_parents(cur, edges):
            found.add(p)
            todo.append(p)
    return found


def trace_execution(node: T, edge_fn: Callable[[T], list[T]], visited: set[T] | None = None) -> list[T]:
    """Depth-first order from ``node`` along ``edge_fn``, each node once (cycles are cut)."""
    visited = set() if visited is None else visited
    out: list[T] = []

    def visit(n):
        if n in visited:
            return
        visited.add(n)
        out.append(n)
        for c in list(edge_fn(n)):
            visit(c)

    visit(node)
    return out


class GraphInputNode(nn.Module):
    """Marker module for a graph input."""


class GraphOutputNode(nn.Module):
    """Marker module for a graph output."""
