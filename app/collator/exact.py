"""Exact slot allocation: the same problem as an integer program, solved with scipy's milp (HiGHS).

Formulation: a path through a layered graph with side constraints. A state (s, n, c) means
"regular slot s is next, n ads are in slots < s, and c organic items have followed the last ad"
(c capped at min_gap; the first ad is free of the gap rule, so the start state has c = min_gap).
The organic item that would fill slot s is therefore j = s − n, known from the state, which makes
every term of the objective and every rule local to one edge:

    organic edge  (s,n,c) -> (s+1, n, min(c+1, g))   value α·v_j·W[s], engagement e_j·W[s]
    ad edge a     (s,n,g) -> (s+1, n+1, 0)           value (β·price_a − γ·u_a)·W[s], engagement pctr_a·W[s]
    end edge      (s,n,c) -> T_n    when slot s is past the page (s = M) or the organic list ran out
                                    (j = O: an ad edge may still follow the last organic item)
    T_n -> sink                                       value −γ·crowding(n)

Ad edges exist only where the rules allow them: slot not reserved and at or after no_ads_before,
n < K (the cap), and both organic neighbours (j−1 before; j after, if it stays on the page) brand
safe for the ad. T_n exists only when n ads push no close-friend item off the page
(close friend j shown without ads requires n <= M−1−j). Binary edge variables, flow conservation,
each ad used at most once, and the engagement floor as one linear row over the edges. The
objective is exactly `objective.collator_score` of the page the chosen path builds, and the
LP relaxation is a shortest-path problem plus a few coupling rows, so HiGHS closes it quickly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.collator.allocation import AllocationProblem, Placement, placement_score

_INF = np.inf
_INTEGRAL_TOL = 1e-7


@dataclass(frozen=True)
class ExactResult:
    """A placement and whether HiGHS proved it optimal; `placement` is None without a solution."""

    placement: Placement | None
    optimal: bool
    objective: float | None  # CollatorScore of the page
    status: str


@dataclass(frozen=True)
class _Edge:
    tail: int
    head: int
    ad: int  # −1 for non-ad edges
    slot: int  # regular slot the edge fills, −1 for end/sink edges
    value: float
    engagement: float


def _graph(p: AllocationProblem, K: int) -> tuple[list[_Edge], int, int, int]:
    """Edges of the reachable layered graph, the number of nodes, the source and the sink."""
    O, A, M, g = p.n_organic, p.n_ads, p.n_slots, p.rules.min_gap
    W = p.slot_weight
    alpha = p.weights.alpha
    cf = [j for j in range(min(O, M)) if p.close_friend[j]]
    max_n_cf = M - 1 - max(cf) if cf else K
    nodes: dict[tuple, int] = {}

    def node(key: tuple) -> int:
        if key not in nodes:
            nodes[key] = len(nodes)
        return nodes[key]

    source = node((0, 0, g))
    sink = node(("sink",))
    edges: list[_Edge] = []
    frontier = [(0, 0, g)]
    seen = {(0, 0, g)}
    terminals: set[int] = set()
    while frontier:
        s, n, c = frontier.pop()
        tail = nodes[(s, n, c)]
        j = s - n  # the organic item that would fill slot s
        heads: list[tuple[tuple, int, int, float, float]] = []  # (state, ad, slot, value, engagement)
        if s == M or j >= O:
            edges.append(_Edge(tail, node(("T", n)), -1, -1, 0.0, 0.0))
            terminals.add(n)
            if s == M:
                continue
        else:
            heads.append(((s + 1, n, min(c + 1, g)), -1, s, alpha * p.value[j] * W[s], p.engage[j] * W[s]))
        if c >= g and n < K and p.ad_allowed[s] and j <= O:  # an ad may follow the last organic item
            follows = j < O and s + 1 < M
            for a in range(A):
                if j >= 1 and p.unsafe[a, j - 1]:
                    continue
                if follows and p.unsafe[a, j]:
                    continue
                heads.append(((s + 1, n + 1, 0), a, s, p.ad_net[a] * W[s], p.ad_pctr[a] * W[s]))
        for state, a, slot, value, engagement in heads:
            edges.append(_Edge(tail, node(state), a, slot, float(value), float(engagement)))
            if state not in seen:
                seen.add(state)
                frontier.append(state)
    crowd = p.weights.gamma * p.model.page_crowding_penalty
    for n in sorted(terminals):
        if n <= max_n_cf:
            edges.append(_Edge(nodes[("T", n)], sink, -1, -1, -crowd * n * (n - 1) / 2, 0.0))
    return edges, len(nodes), source, sink


def solve_exact(problem: AllocationProblem, time_limit_s: float = 10.0) -> ExactResult:
    """The optimal placement of `problem` (see the module docstring)."""
    # scipy.optimize costs ~1 s to import: only the exact solver (an offline option) pays it.
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    p = problem
    K = p.max_ads()
    if K == 0:
        return ExactResult((), True, placement_score(p, ()), "no ads allowed")
    edges, n_nodes, source, sink = _graph(p, K)
    n = len(edges)
    rows, cols, vals = [], [], []
    for col, e in enumerate(edges):
        rows += [e.tail, e.head]
        cols += [col, col]
        vals += [-1.0, 1.0]  # inflow − outflow
    b = np.zeros(n_nodes)
    b[source], b[sink] = -1.0, 1.0
    lb, ub = list(b), list(b)
    n_rows = n_nodes
    ad_cols: dict[int, list[int]] = {}
    for col, e in enumerate(edges):
        if e.ad >= 0:
            ad_cols.setdefault(e.ad, []).append(col)
    for a, cs in ad_cols.items():
        if len(cs) > 1:
            rows += [n_rows] * len(cs)
            cols += cs
            vals += [1.0] * len(cs)
            lb.append(-_INF)
            ub.append(1.0)
            n_rows += 1
    if p.rules.min_page_engagement > 0:
        for col, e in enumerate(edges):
            if e.engagement:
                rows.append(n_rows)
                cols.append(col)
                vals.append(e.engagement)
        lb.append(p.rules.min_page_engagement * p.engagement_reference - 1e-9)
        ub.append(_INF)
        n_rows += 1
    matrix = coo_matrix((vals, (rows, cols)), shape=(n_rows, n)).tocsr()
    c = -np.array([e.value for e in edges])
    constraints = LinearConstraint(matrix, np.asarray(lb), np.asarray(ub))
    bounds = Bounds(np.zeros(n), np.ones(n))
    options = {"time_limit": time_limit_s, "mip_rel_gap": 1e-9}
    # The LP relaxation is usually integral already (a path problem with a few coupling rows); an
    # integral LP optimum is the integer optimum, and solving the LP skips HiGHS' MIP overhead.
    relaxed = milp(c, constraints=constraints, integrality=np.zeros(n), bounds=bounds, options=options)
    if relaxed.status == 0 and np.all(np.abs(relaxed.x - np.round(relaxed.x)) <= _INTEGRAL_TOL):
        res, how = relaxed, "LP relaxation integral"
    else:
        res = milp(c, constraints=constraints, integrality=np.ones(n), bounds=bounds, options=options)
        how = "branch and bound"
    if res.x is None:
        return ExactResult(None, False, None, f"{how}: {res.message}")
    chosen = np.round(res.x).astype(bool)
    placement = tuple(sorted(((e.ad, e.slot) for e, on in zip(edges, chosen) if on and e.ad >= 0), key=lambda t: t[1]))
    return ExactResult(placement, res.status == 0, -float(res.fun), how)
