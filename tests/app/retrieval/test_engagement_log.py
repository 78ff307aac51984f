"""EngagementLog under a live stream: the growing timeline and incremental trending, checked
against a re-sort of every event and a brute-force recount over random adds and clocks."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from app.retrieval import engagement
from app.retrieval.engagement import EngagementLog, _DecayedWindow


def _frame(users, items, ts) -> pd.DataFrame:
    return pd.DataFrame({"user_id": np.asarray(users, np.int64), "item_id": np.asarray(items, np.int64),
                         "timestamp": np.asarray(ts, np.float64)})


def _brute_force(events: list[tuple[int, int, float]], now: float, half_life: float,
                 horizon: float) -> dict[int, float]:
    """Every item's decayed count over [now − horizon, now], one event at a time."""
    scores: dict[int, float] = {}
    for _, item, t in events:
        if now - horizon <= t <= now:
            scores[item] = scores.get(item, 0.0) + 2.0 ** (-(now - t) / half_life)
    return scores


def _assert_top_k(found: tuple[np.ndarray, np.ndarray], scores: dict[int, float], k: int, exact_order: bool) -> None:
    items, counts = found
    assert counts.dtype == np.float32 and len(items) == len(counts) == min(k, len(scores))
    assert len(set(items.tolist())) == len(items), "an item at most once"
    assert (np.diff(counts) <= 0).all(), "best first"
    best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    # Every returned count is the item's own count, and the counts are the k largest ones: the
    # top k up to ties (items whose counts are equal up to rounding may swap).
    np.testing.assert_allclose(counts, [scores[i] for i in items.tolist()], rtol=1e-5)
    np.testing.assert_allclose(counts, [v for _, v in best], rtol=1e-5)
    if exact_order:
        assert items.tolist() == [i for i, _ in best]


class _Recounts:
    """Counts the calls of a log's recount fallback."""

    def __init__(self, log: EngagementLog) -> None:
        self.calls, self._recount = 0, log.trending_recount
        log.trending_recount = self  # type: ignore[method-assign]

    def __call__(self, *args):
        self.calls += 1
        return self._recount(*args)


KINDS = {"add": 0.35, "late": 0.08, "very_late": 0.03, "new_items": 0.03, "query": 0.45, "jump": 0.03, "back": 0.03}


def _random_stream(seed: int, discrete: bool, n_ops: int = 400):
    """(op, payload) steps: batches in time order, late and very late batches, new item ids, and
    clocks that move forward a little, jump far ahead (the window empties), or go back (replays)."""
    rng = np.random.default_rng(seed)
    newest, user, n_items = 0.0, 0, 40
    for _ in range(n_ops):
        kind = rng.choice(list(KINDS), p=list(KINDS.values()))
        if kind in ("add", "late", "very_late", "new_items"):
            m = int(rng.integers(1, 12))
            if kind == "new_items":
                n_items = min(int(n_items * 1.5) + 1, 3_000)  # ids past the dense arrays: they grow
            lo = {"add": newest, "late": newest - 8.0, "very_late": newest - 200.0, "new_items": newest}[kind]
            ts = rng.uniform(max(lo, 0.0), newest + 6.0, m)
            if discrete:
                ts = np.round(ts)
            items = np.minimum(rng.zipf(1.3, m) - 1, n_items - 1) if rng.random() < 0.7 else rng.integers(0, n_items, m)
            users = rng.integers(0, 15, m) + user
            user = (user + 1) % 7
            newest = max(newest, float(ts.max()))
            yield "add", (users, items, ts)
        else:
            step = {"query": rng.uniform(0, 4.0), "jump": rng.uniform(20, 400), "back": -rng.uniform(1, 60)}[kind]
            now = newest + step
            if discrete:
                now = float(np.round(now))
            yield "query", (now, int(rng.choice([1, 3, 10, 50])))


@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "discrete-ties"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_trending_equals_a_brute_force_recount(seed: int, discrete: bool, monkeypatch) -> None:
    """Three (half-life, horizon) windows over random adds and clocks; the short half-lives move
    the decay anchor (every 4 half-lives here, 128 in production) and the short horizons drop
    events all along."""
    monkeypatch.setattr(engagement, "_REBASE_HALF_LIVES", 4.0)
    steps: Counter[str] = Counter()

    def counting(name: str):
        step = getattr(_DecayedWindow, name)

        def counted(self, *args):
            steps[name] += 1
            return step(self, *args)
        return counted

    for name in ("_enter", "_leave", "_rebase", "_rebuild", "_choose"):
        monkeypatch.setattr(_DecayedWindow, name, counting(name))
    windows = [(1.5, 12.0), (20.0, 200.0), (1.0, 40.0)]  # the last: a clock going back recounts
    first = [(int(u), int(i), float(t)) for u, i, t in zip(range(30), np.arange(30) % 9, np.linspace(0, 20, 30))]
    log = EngagementLog(_frame(*zip(*first)))
    recounts = _Recounts(log)
    events = list(first)
    queries = 0
    for op, payload in _random_stream(seed, discrete):
        if op == "add":
            users, items, ts = payload
            assert log.add(_frame(users, items, ts)) == len(ts)
            events.extend(zip(users.tolist(), items.tolist(), ts.tolist()))
            continue
        now, k = payload
        for half_life, horizon in windows:
            found = log.trending(now, half_life, horizon, k)
            _assert_top_k(found, _brute_force(events, now, half_life, horizon), k, exact_order=not discrete)
            reference = log.trending_recount(now, half_life, horizon, k)
            np.testing.assert_allclose(found[1], reference[1], rtol=1e-5)
            queries += 1
    assert queries > 200
    assert steps["_enter"] > 3 * steps["_rebuild"] and steps["_leave"] > 50 and steps["_rebase"] > 10, steps
    if not discrete:  # ties at the candidates' bound are the only reason to recount
        assert recounts.calls == queries  # the test's own reference calls, nothing more


def test_trending_on_a_live_stream_recounts_nothing() -> None:
    """Batches in time order with a request after each: every answer equals the recount, and no
    call falls back to it; the candidate set stays small."""
    rng = np.random.default_rng(7)
    n = 5_000
    log = EngagementLog(_frame(rng.integers(0, 300, n), rng.zipf(1.2, n) % 2_000, np.sort(rng.uniform(0, 1e5, n))))
    recounts = _Recounts(log)
    half_life, horizon, k = 3_600.0, 36_000.0, 25
    now = 1e5
    for step in range(300):
        now += float(rng.uniform(1, 120))
        ts = now - rng.uniform(0, 30, 8)  # a few seconds late at most
        log.add(_frame(rng.integers(0, 300, 8), rng.zipf(1.2, 8) % 2_000, ts))
        found = log.trending(now, half_life, horizon, k)
        if step % 10 == 0:
            reference = log.trending_recount(now, half_life, horizon, k)
            np.testing.assert_array_equal(found[0], reference[0])
            np.testing.assert_allclose(found[1], reference[1], rtol=1e-6)
    assert recounts.calls == 30
    window = log._windows[(half_life, horizon)]
    assert window.n_cand <= 4 * (2 * k + 64) + 1024


def test_timeline_grows_in_place_and_equals_a_sorted_concat() -> None:
    """The global timeline equals the old concat-and-re-sort of every batch (late events and
    equal timestamps included), while the buffer is reallocated O(log n) times, not per batch."""
    rng = np.random.default_rng(3)
    ref_ts, ref_items = np.zeros(0), np.zeros(0, np.int64)
    per_user: dict[int, list[tuple[float, int]]] = {}
    log = EngagementLog()
    buffers, newest = set(), 0.0
    for step in range(400):
        m = int(rng.integers(1, 20))
        late = rng.random() < 0.15
        ts = np.round(rng.uniform(newest - (50 if late else 0), newest + 5, m))
        users, items = rng.integers(0, 25, m), rng.integers(0, 60, m)
        log.add(_frame(users, items, ts))
        buffers.add(id(log._ts_buf))
        newest = max(newest, float(ts.max()))
        # The old behaviour: sort the batch by (timestamp, item), concatenate, stable re-sort.
        order = np.lexsort((items, ts))
        ref_ts, ref_items = np.concatenate([ref_ts, ts[order]]), np.concatenate([ref_items, items[order]])
        order = np.argsort(ref_ts, kind="stable")
        ref_ts, ref_items = ref_ts[order], ref_items[order]
        for u, i, t in zip(users.tolist(), items.tolist(), ts.tolist()):
            per_user.setdefault(u, []).append((t, i))
        got_ts, got_items = log.timeline()
        np.testing.assert_array_equal(got_ts, ref_ts)
        np.testing.assert_array_equal(got_items, ref_items)
    assert len(log) == len(ref_ts) and log.last_timestamp == ref_ts[-1]
    assert len(buffers) <= 1 + int(np.log2(len(ref_ts))), "capacity doubles: few reallocations"
    for user, rows in per_user.items():
        rows = sorted(rows, key=lambda r: r[0])  # Python's sort is stable: arrival order on ties
        expected_ts = [t for t, _ in rows]
        items, ts = log.recent_items(user, now=newest, window_s=None, limit=10_000)
        np.testing.assert_array_equal(ts[::-1], expected_ts)
        assert sorted(log.user_items(user).tolist()) == sorted(i for _, i in rows)
    assert len(log.interactions()) == len(ref_ts)


def test_sparse_item_ids_fall_back_to_the_recount() -> None:
    """Ids outside [0, 2^24) cannot index dense counts: trending recounts, with the same answer."""
    log = EngagementLog(_frame([1, 2, 3], [5, 6, 5], [10.0, 11.0, 12.0]))
    assert log.trending(12.0, 5.0, 50.0, 2)[0].tolist() == [5, 6]  # the incremental path is built
    log.add(_frame([4, 5, 6, 7], [2**40, 2**40, -3, 6], [13.0, 13.5, 13.6, 14.0]))
    items, counts = log.trending(14.0, 5.0, 50.0, 3)
    assert items.tolist() == [2**40, 6, 5]
    np.testing.assert_allclose(counts, log.trending_recount(14.0, 5.0, 50.0, 3)[1])
    assert not log._windows


def test_empty_and_degenerate_requests() -> None:
    log = EngagementLog()
    assert log.trending(0.0, 1.0, 10.0, 5)[0].size == 0
    log.add(_frame([1], [3], [100.0]))
    assert log.trending(50.0, 1.0, 10.0, 5)[0].size == 0  # before every event
    assert log.trending(100.0, 1.0, 10.0, 0)[0].size == 0
    assert log.trending(100.0, 1.0, 10.0, 5)[0].tolist() == [3]
    assert log.trending(500.0, 1.0, 10.0, 5)[0].size == 0  # the event left the horizon
    assert log.trending(105.0, 1.0, 10.0, 5)[0].tolist() == [3]  # and a replay brings it back


def test_candidates_are_chosen_again_when_their_counts_fall() -> None:
    """The candidates are chosen while 100 items lead on old events; once those events leave the
    horizon the leaders fall below items that were never candidates, and the answer follows."""
    heavy, steady = np.arange(100), np.arange(1_000, 1_100)
    rows = [(1, i, 0.0) for i in heavy for _ in range(4)]
    rows += [(2, i, 40.0 + 0.01 * j) for j, i in enumerate(heavy)]
    rows += [(3, i, 45.0 + 0.01 * j) for j, i in enumerate(steady) for _ in range(2)]
    log = EngagementLog(_frame(*zip(*rows)))
    recounts = _Recounts(log)
    half_life, horizon, k = 100.0, 60.0, 2
    assert set(log.trending(50.0, half_life, horizon, k)[0].tolist()) <= set(heavy.tolist())
    found = log.trending(70.0, half_life, horizon, k)  # the 4 old events per heavy item left
    assert found[0].tolist() == [1_099, 1_098]
    _assert_top_k(found, _brute_force(rows, 70.0, half_life, horizon), k, exact_order=True)
    assert recounts.calls == 0


def test_live_apply_benchmark_runs_on_a_tiny_world(tmp_path, capsys) -> None:
    """benchmarks/live_apply.py end to end on a generated 300-user world: the replica's apply
    path, the old log beside it, and the incremental trending equal to the recount at the end."""
    import torch

    from benchmarks.live_apply import main

    threads = torch.get_num_threads()
    try:
        main(["--users", "300", "--items", "2000", "--data-cache", str(tmp_path), "--batches", "30",
              "--legacy-batches", "5"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "incremental trending after the run equals the recount: yes" in out
    assert "apply (LiveEngagement.observe)" in out and "before P50" in out


def test_user_timelines_after_live_batches_equal_one_log_built_from_every_event():
    """The artifact's batch lands in the compact table, later batches (late events and guest ids
    among them) in per-user arrays: every read must equal a log that saw all events at once."""
    rng = np.random.default_rng(4)
    guest = engagement._TABLE_USER_LIMIT + 5
    ts = rng.permutation(np.arange(3000, dtype=np.float64))  # distinct times: one right order
    users = rng.integers(0, 60, len(ts))
    users[::97] = guest
    items = rng.integers(1, 500, len(ts))
    first = slice(0, 2000)
    live = EngagementLog(_frame(users[first], items[first], ts[first]))
    for start in range(2000, 3000, 250):  # later batches, many of them late against the first
        live.add(_frame(users[start:start + 250], items[start:start + 250], ts[start:start + 250]))
    whole = EngagementLog(_frame(users, items, ts))
    for user in [*range(0, 62), guest, -3]:
        assert live.user_items(user).tolist() == whole.user_items(user).tolist()
        for got, want in zip(live.recent_items(user, 2500.0, 800.0, 7), whole.recent_items(user, 2500.0, 800.0, 7)):
            assert got.tolist() == want.tolist()
    by_user = ["user_id", "timestamp"]
    pd.testing.assert_frame_equal(live.interactions().sort_values(by_user, ignore_index=True),
                                  whole.interactions().sort_values(by_user, ignore_index=True))


def test_a_saved_log_is_mapped_back_equal_and_live_batches_never_write_the_files(tmp_path):
    rng = np.random.default_rng(9)
    n = 4000
    frame = _frame(rng.integers(1, 80, n), rng.integers(1, 300, n), rng.uniform(0, 1e5, n))
    built = EngagementLog(frame)
    built.save(tmp_path / "log")
    files = {p.name: p.read_bytes() for p in (tmp_path / "log").iterdir()}
    mapped = EngagementLog.load(tmp_path / "log")
    assert len(mapped) == n and isinstance(mapped._users.table()[1], np.ndarray)
    for user in range(0, 82):
        assert mapped.user_items(user).tolist() == built.user_items(user).tolist()
    late_and_new = _frame([3, 3, 81, 5000], [7, 8, 9, 10], [50.0, 2e5, 2e5 + 1, 2e5 + 2])
    for log in (mapped, built):
        log.add(late_and_new)
    for user in (3, 81, 5000, 40):
        for got, want in zip(mapped.recent_items(user, 3e5, None, 20), built.recent_items(user, 3e5, None, 20)):
            assert got.tolist() == want.tolist()
    for got, want in zip(mapped.trending(2e5, 5e4, 2e5, 10), built.trending(2e5, 5e4, 2e5, 10)):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    pd.testing.assert_frame_equal(mapped.interactions(), built.interactions())
    assert {p.name: p.read_bytes() for p in (tmp_path / "log").iterdir()} == files  # copy-on-write


def test_an_artifact_without_a_saved_log_or_with_an_empty_one_loads_as_such(tmp_path):
    assert EngagementLog.load(tmp_path / "nothing") is None
    EngagementLog().save(tmp_path / "empty")
    empty = EngagementLog.load(tmp_path / "empty")
    assert empty is not None and len(empty) == 0
    empty.add(_frame([1], [2], [3.0]))
    assert empty.user_items(1).tolist() == [2]
