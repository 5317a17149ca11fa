"""Benchmark: `towerkit serve` under load, on loopback, with wrk as the load generator.

For each run (ML-1M YouTubeDNN and SASRec) and index (exact, HNSW) the script exports the run,
starts the server (uvicorn, one process) on a free loopback port and drives it with wrk (one
thread, C connections, a fixed count of requests and a time limit) for three kinds of request:
a known user's id, a history of 20 items (the user tower runs), and a batch of 100 histories.
It records requests/s and the p50/p95/p99 latency at each concurrency, the in-process cost of
the same work (no HTTP), and the failed requests while the server reloads 10 times under load.

Run (needs Debian's wrk; the server and wrk share this machine's cores):
    python benchmarks/serve_load.py --run runs/yt --run runs/sasrec

Writes benchmarks/results/serve_load.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import date
from pathlib import Path

import httpx
import numpy as np

from towerkit.export import export_run
from towerkit.runs import RunDir

RESULTS = Path(__file__).parent / "results" / "serve_load.md"
TOKEN = "load-test"
log = logging.getLogger("serve_load")

# wrk Lua: cycle through prepared bodies, stop after a fixed count, print a JSON summary.
LUA = textwrap.dedent(
    """
    local bodies = {}
    local index, received, failed, limit = 0, 0, 0, %(limit)d
    for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    request = function()
      index = index %% #bodies + 1
      return wrk.format(nil, "%(path)s", nil, bodies[index])
    end
    response = function(status, headers, body)
      received = received + 1
      if status ~= 200 then failed = failed + 1 end
      if received >= limit then wrk.thread:stop() end
      if received %% 50 == 0 then  -- the reload test says when to stop by a file
        local stop = io.open("%(stop)s", "r")
        if stop then stop:close(); wrk.thread:stop() end
      end
    end
    done = function(summary, latency, requests)
      local errors = summary.errors.connect + summary.errors.read + summary.errors.write
        + summary.errors.status + summary.errors.timeout
      io.write(string.format(
        '{"requests": %%d, "seconds": %%f, "p50": %%f, "p95": %%f, "p99": %%f, "errors": %%d}\\n',
        summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
        latency:percentile(95) / 1e3, latency:percentile(99) / 1e3, errors))
    end
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "towerkit.cli", "-q", "serve", str(directory), "--port",
             str(self.port), "--admin-token", TOKEN],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for _ in range(600):
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def bodies(run: RunDir, kind: str, n: int, rng: np.random.Generator) -> list[str]:
    users = run.user_vocab.raw
    items = run.item_vocab.raw

    def history() -> list:
        return [_plain(i) for i in items[rng.integers(0, len(items), 20)]]

    if kind == "id":
        return [json.dumps({"user": _plain(u), "k": 10}) for u in rng.choice(users, n)]
    if kind == "history":
        return [json.dumps({"history": history(), "k": 10}) for _ in range(n)]
    return [json.dumps({"queries": [{"history": history(), "k": 10} for _ in range(100)]})
            for _ in range(max(1, n // 20))]  # fmt: skip


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def wrk(url: str, path: str, lines: list[str], connections: int, limit: int, seconds: int):
    with tempfile.TemporaryDirectory() as tmp:
        body_file = Path(tmp) / "bodies.txt"
        body_file.write_text("\n".join(lines) + "\n")
        script = Path(tmp) / "load.lua"
        script.write_text(LUA % {"bodies": body_file, "path": path, "limit": limit,
                                 "stop": Path(tmp) / "stop"})  # fmt: skip
        done = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
             str(script), url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["rps"] = summary["requests"] / summary["seconds"]
    return summary


def in_process(directory: Path, run: RunDir, rng: np.random.Generator) -> dict[str, float]:
    """Milliseconds of the same work without HTTP: the served model's jobs, run directly."""
    from towerkit.serve.app import RecommendRequest, _job, run_jobs
    from towerkit.serve.model import load_served

    served = load_served(directory)
    out = {}
    for kind in ("id", "history", "batch"):
        requests = [json.loads(b) for b in bodies(run, kind, 200, rng)]
        if kind == "batch":
            requests = [q for b in requests[:1] for q in b["queries"]]
        jobs = [_job(served, RecommendRequest(**r))[0] for r in requests]
        times = []
        for repeat in range(30):
            batch = jobs if kind == "batch" else [jobs[repeat % len(jobs)]]
            start = time.perf_counter()
            run_jobs(batch)
            times.append(time.perf_counter() - start)
        out[kind] = statistics.median(times) * 1e3
    served.close()
    return out


def reload_under_load(server: Server, directory: Path, lines: list[str]) -> dict[str, int]:
    """wrk sends history requests while the admin endpoint reloads the model 10 times."""
    with tempfile.TemporaryDirectory() as tmp:
        body_file = Path(tmp) / "bodies.txt"
        body_file.write_text("\n".join(lines) + "\n")
        script = Path(tmp) / "load.lua"
        stop = Path(tmp) / "stop"
        script.write_text(LUA % {"bodies": body_file, "path": "/recommend", "limit": 10**9,
                                 "stop": stop})  # fmt: skip
        load = subprocess.Popen(
            ["wrk", "-t1", "-c16", "-d600s", "-s", str(script), server.url],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.0)
        reloads = 0
        for _ in range(10):
            response = httpx.post(
                f"{server.url}/admin/reload", json={"path": str(directory)},
                headers={"authorization": f"Bearer {TOKEN}"}, timeout=120,
            )  # fmt: skip
            reloads += response.status_code == 200
        time.sleep(1.0)
        stop.touch()  # wrk stops at its next 50th response and prints its summary
        out, _ = load.communicate(timeout=120)
    lines_out = [line for line in out.strip().splitlines() if line.startswith("{")]
    summary = json.loads(lines_out[-1]) if lines_out else {"requests": 0, "errors": -1}
    return {"reloads": reloads, "requests": summary["requests"], "failed": summary["errors"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", type=Path, required=True)
    parser.add_argument("--index", nargs="*", default=["exact", "faiss-hnsw"])
    parser.add_argument("--connections", nargs="*", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--count", type=int, default=20_000, help="requests per measurement")
    parser.add_argument("--seconds", type=int, default=15, help="time limit per measurement")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    rng = np.random.default_rng(0)
    rows, inprocess, reload_rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run_dir in args.run:
            run = RunDir(run_dir)
            name = run.config.model.name
            for index in args.index:
                directory = export_run(run, Path(tmp) / f"{name}-{index}", index=index)
                inprocess.append((name, index, in_process(directory, run, rng)))
                server = Server(directory)
                try:
                    for kind, path in (("id", "/recommend"), ("history", "/recommend"),
                                       ("batch", "/recommend/batch")):  # fmt: skip
                        lines = bodies(run, kind, 2000, rng)
                        for c in args.connections:
                            limit = args.count if kind != "batch" else max(200, args.count // 50)
                            summary = wrk(server.url, path, lines, c, limit, args.seconds)
                            rows.append((name, index, kind, c, summary))
                            log.info("%s %s %s c=%d: %s", name, index, kind, c, summary)
                    if index == "exact":
                        reload_rows.append(
                            (name, reload_under_load(server, directory,
                                                     bodies(run, "history", 500, rng)))
                        )  # fmt: skip
                finally:
                    server.stop()
    write(rows, inprocess, reload_rows, args)
    print(RESULTS.read_text())


def write(rows, inprocess, reload_rows, args) -> None:
    lines = [
        "# Serving under load: requests/s and latency on loopback\n",
        f"`python benchmarks/serve_load.py {' '.join(f'--run {r}' for r in args.run)}` "
        f"({date.today()}: {platform.machine()}, {os.cpu_count()} cores). The server (one "
        "uvicorn process: the event loop and one worker thread for the tower and the index) and "
        "the load generator (wrk, one thread) share the machine's cores, on loopback. Each "
        f"measurement: {args.count:,} requests (batches: {max(200, args.count // 50):,}) or "
        f"{args.seconds} s, whichever comes first. `id`: a known user's id, k=10; `history`: 20 "
        "item ids, the user tower runs, k=10; `batch`: 100 histories in one request.\n",
        "| model | index | request | connections | requests/s | p50 ms | p95 ms | p99 ms "
        "| errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, index, kind, c, s in rows:
        lines.append(
            f"| {name} | {index} | {kind} | {c} | {s['rps']:,.0f} | {s['p50']:.1f} | "
            f"{s['p95']:.1f} | {s['p99']:.1f} | {s['errors']} |"
        )
    lines += [
        "\n## The same work in process (no HTTP)\n",
        "Median milliseconds of one call of the server's job runner: one id query, one history "
        "query (tower + search), one batch of 100 histories.\n",
        "| model | index | id ms | history ms | batch of 100 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for name, index, ms in inprocess:
        lines.append(
            f"| {name} | {index} | {ms['id']:.2f} | {ms['history']:.2f} | {ms['batch']:.1f} |"
        )
    lines += [
        "\n## Hot reload under load\n",
        "wrk sends history requests on 16 connections while the admin endpoint reloads the same "
        "export 10 times.\n",
        "| model | reloads done | requests | failed requests |",
        "|---|---:|---:|---:|",
    ]
    for name, r in reload_rows:
        lines.append(f"| {name} | {r['reloads']} | {r['requests']:,} | {r['failed']} |")
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
