"""The serve suite's server under load: `simsearch serve` started on a free loopback port, its memory, CPU time and
forward batch sizes read while it runs, and the HTTP load runs against it (see `serve`)."""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.record import REPO
from benchmarks.suites import BenchmarkError

#: One request of a load run: method, url, body, headers.
Request = tuple[str, str, bytes | None, dict[str, str]]


# ---------------------------------------------------------------------------------------------------- the server


def start_server(
    col: Path, args: argparse.Namespace, workers: str = "auto"
) -> tuple[subprocess.Popen, int, dict[str, float]]:
    """`simsearch serve` on a free loopback port; returns it, the port, and seconds from spawn to live and ready."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    command = [sys.executable, "-m", "cli.main", "serve", "-c", str(col), "--port", str(port), "--device", device]
    command += ["--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms), "--log-level", "error"]
    command += [] if workers == "auto" else ["--forward-workers", workers]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)}
    env.pop("SIMSEARCH_TOKEN", None)
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    times: dict[str, float] = {}
    while "ready_s" not in times:
        if proc.poll() is not None:
            raise BenchmarkError(f"the server exited: {(proc.stderr.read() if proc.stderr else '')[-500:]}")
        if time.perf_counter() - started > 600:
            proc.kill()
            raise BenchmarkError("the server was not ready within 10 minutes")
        for name, url in (("live_s", "/health/live"), ("ready_s", "/health/ready")):
            if name not in times and _status(port, url) == 200:
                times[name] = time.perf_counter() - started
        time.sleep(0.02)
    return proc, port, times


def _status(port: int, url: str) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", url)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM of /proc/PID/status)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mib": fields.get("VmRSS", 0.0), "peak_rss_mib": fields.get("VmHWM", 0.0)}


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used, all its threads together (user + system, from /proc/PID/stat)."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def _stat_cpu_seconds(stat: Path) -> float:
    """User + system seconds of a /proc stat file (a process's or one thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of a server's threads so far, in three groups: its event loop (the main thread: HTTP, routing, the
    response), its forward workers (the model and the index search after each pass), and the rest: the request
    threads (decoding and transforming uploads) and, where one pass runs on several threads, the model's own pool."""
    from server.batching import FORWARD_THREAD

    groups = {"event_loop": 0.0, "forward_workers": 0.0, "other_threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            seconds = _stat_cpu_seconds(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
        group = "event_loop" if int(task.name) == pid else "forward_workers" if comm.startswith(FORWARD_THREAD) else ""
        groups[group or "other_threads"] += seconds
    return groups


def batch_counts(port: int) -> tuple[float, float]:
    """(sum, count) of the server's forward batch sizes so far, from /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    found = dict(re.findall(r"^simsearch_forward_batch_images_(sum|count) (\S+)$", text, re.MULTILINE))
    return float(found.get("sum", 0)), float(found.get("count", 0))


# ------------------------------------------------------------------------------------------------------ the load


def load_run(
    port: int,
    make: Callable[[int], Request],
    check: Callable[[int, dict[str, Any]], bool],
    requests: int,
    concurrency: int,
    max_seconds: float,
) -> dict[str, Any]:
    """`requests` requests from `concurrency` keep-alive connections (bounded by `max_seconds`); every answer is
    checked, and a non-200 or a wrong answer is counted, never ignored."""
    counter = itertools.count()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    wrong = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            while (i := next(counter)) < requests and time.perf_counter() < deadline:
                method, url, body, headers = make(i)
                started = time.perf_counter()
                conn.request(method, url, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                took = time.perf_counter() - started
                ok = response.status == 200 and check(i, json.loads(payload))
                with lock:
                    latencies.append(took)
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    wrong[0] += response.status == 200 and not ok
        finally:
            conn.close()

    wall = in_threads(worker, concurrency)
    ms = np.asarray(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "seconds": wall,
        "qps": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": sum(v for k, v in statuses.items() if k >= 500),
        "wrong_answers": wrong[0],
    }


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n\r\n'.encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def in_threads(work: Callable[[], None], count: int) -> float:
    """Run `work` in `count` threads at once; returns the seconds until the last one ends."""
    threads = [threading.Thread(target=work) for _ in range(count)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started
