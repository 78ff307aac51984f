"""benchmarks/serve_load.py: the server-side CPU figure attached to each load step."""
import asyncio
import time

from benchmarks import serve_load
from benchmarks.serve_load import StepResult, measured


async def _step(spin_s: float, sleep_s: float) -> StepResult:
    result = StepResult("closed c=1", 1.0)
    end = time.process_time() + spin_s
    while time.process_time() < end:  # the client's own CPU: must not count as the server's
        pass
    await asyncio.sleep(sleep_s)
    result.statuses[200] += 4
    return result


def test_the_clients_own_cpu_is_not_counted_as_the_servers(monkeypatch):
    # A fake machine clock that saw 2 s of busy CPU across the step, of which the client spent ~0.2.
    readings = iter([100.0, 102.0])
    monkeypatch.setattr(serve_load, "machine_busy_cpu_s", lambda: next(readings))
    summary = measured(_step(0.2, 0.0)).summary()
    assert 1600 <= summary["server_cpu_ms_per_request"] * 4 <= 1820  # (2 s - ~0.2 s) over 4 requests


def test_server_cpu_is_absent_where_the_machine_clock_is_unavailable(monkeypatch):
    monkeypatch.setattr(serve_load, "machine_busy_cpu_s", lambda: None)
    assert measured(_step(0.0, 0.0)).summary()["server_cpu_ms_per_request"] is None


def test_the_machine_clock_advances_with_work():
    before = serve_load.machine_busy_cpu_s()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    after = serve_load.machine_busy_cpu_s()
    assert before is not None and after - before >= 0.25


def test_processes_are_filed_by_role():
    role = serve_load.process_role
    assert role("ray::ServeReplica:rayfeed:Ranking") == "Ranking"
    assert role("ray::ServeReplica:rayfeed:Auction.reconfigure") == "Auction"  # in a method
    assert role("ray::ServeReplica:rayfeed:FeedIngress.check_health") == "Ingress"
    assert role("ray::ServeReplica:rayfeed:FeedIngress") == role("ray::ServeReplica:floor:PlainIngress") == "Ingress"
    assert role("ray::ServeController.listen_for_change") == role("ray::ServeController") == "ServeController"
    assert role("/usr/bin/redis-server 127.0.0.1:6379") == "redis-server"
    assert role("") == "other"


def test_a_processs_cpu_is_filed_under_its_name():
    import subprocess
    import sys

    spin = "import sys, time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\nprint('spun', flush=True)\ntime.sleep(30)"
    child = subprocess.Popen(["bash", "-c", f'exec -a rayfeed-spin-test "{sys.executable}" -c "{spin}"'],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "spun"
        assert serve_load.process_cpu_s().get("rayfeed-spin-test", 0.0) >= 0.25
    finally:
        child.kill()
        child.wait()


async def _server_slowing_after(slow_from_s: float, slow_s: float):
    """A bare HTTP/1.1 server answering `{}` with 200 in ~5 ms, or after `slow_s` to requests that
    arrive `slow_from_s` after it started (like a refusal held past a closed loop's deadline)."""
    started = time.perf_counter()

    async def answer(reader, writer):
        while not (await reader.readuntil(b"\r\n\r\n")).startswith(b"GET"):
            pass
        await asyncio.sleep(slow_s if time.perf_counter() - started >= slow_from_s else 0.005)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def _closed_loop_against(slow_from_s: float, slow_s: float, seconds: float, max_requests: int):
    async def run():
        server = await _server_slowing_after(slow_from_s, slow_s)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await serve_load.closed_loop(f"http://127.0.0.1:{port}", 2, seconds, max_requests, 10, 5, 5.0)

    return asyncio.run(run())


def test_a_closed_loops_goodput_counts_its_window_not_the_drain_after_it():
    result = _closed_loop_against(0.6, 0.8, seconds=0.8, max_requests=10_000)
    summary = result.summary()
    # The last requests (sent after 0.6 s) are answered ~0.8 s later, past the 0.8 s window.
    assert summary["drain_s"] >= 0.4
    assert 0 < result.ok_in_window < result.statuses[200] == len(result.latencies)
    assert summary["throughput_rps"] == result.ok_in_window / result.window_s
    assert summary["throughput_with_drain_rps"] < summary["throughput_rps"]


def test_a_closed_loop_stopped_by_its_budget_keeps_the_whole_runs_rate():
    summary = _closed_loop_against(60.0, 0.0, seconds=30.0, max_requests=20).summary()
    assert summary["ok"] == 20 and summary["drain_s"] is None
    assert summary["throughput_rps"] == summary["throughput_with_drain_rps"]
