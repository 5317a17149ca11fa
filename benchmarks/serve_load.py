"""Benchmark: `towerkit serve` under load, on loopback, with wrk as the load generator.

For each run (ML-1M YouTubeDNN and SASRec) and index (exact, HNSW) the script exports the run,
starts the server (uvicorn, one process) on a free loopback port and drives it with wrk (one
thread, C connections, for a fixed time) for three kinds of request:
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
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import numpy as np

from towerkit.export import export_run
from towerkit.runs import RunDir

RESULTS = Path(__file__).parent / "results" / "serve_load.md"
TOKEN = "load-test"
log = logging.getLogger("serve_load")

# wrk Lua: cycle through prepared bodies, count non-200 answers, print a JSON summary. wrk runs
# for a fixed time: its thread:stop() ends the sending but not the clock, so a request count
# limit would understate the rate.
LUA = textwrap.dedent(
    """
    local bodies = {}
    local index = 0
    for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    request = function()
      index = index %% #bodies + 1
      return wrk.format(nil, "%(path)s", nil, bodies[index])
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


def wrk(url: str, path: str, lines: list[str], connections: int, seconds: int) -> dict:
    """Run wrk (one thread) for ``seconds`` against ``url + path``; its summary as a dict."""
    with tempfile.TemporaryDirectory() as tmp:
        body_file = Path(tmp) / "bodies.txt"
        body_file.write_text("\n".join(lines) + "\n")
        script = Path(tmp) / "load.lua"
        script.write_text(LUA % {"bodies": body_file, "path": path})
        done = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
             str(script), url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        )  # fmt: skip
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["rps"] = summary["requests"] / summary["seconds"]
    return summary


def in_process(directory: Path, run: RunDir, rng: np.random.Generator) -> dict[str, float]:
    """Milliseconds of the same work without HTTP: the served model's jobs, run directly."""
    from towerkit.serve.bodies import RecommendRequest
    from towerkit.serve.model import load_served
    from towerkit.serve.routes import _job
    from towerkit.serve.state import run_jobs

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


def reload_under_load(server: Server, directory: Path, lines: list[str], seconds: int) -> dict:
    """wrk sends history requests for ``seconds`` while the admin endpoint reloads the model
    10 times (all of them inside the load window)."""
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(wrk, server.url, "/recommend", lines, 16, seconds)
        time.sleep(1.0)
        start, reloads = time.monotonic(), 0
        for _ in range(10):
            response = httpx.post(
                f"{server.url}/admin/reload", json={"path": str(directory)},
                headers={"authorization": f"Bearer {TOKEN}"}, timeout=120,
            )  # fmt: skip
            reloads += response.status_code == 200
        took = time.monotonic() - start
        summary = load.result()
    if took + 1.0 >= seconds:
        log.warning("the reloads took %.1f s, longer than the load (%d s)", took, seconds)
    return {"reloads": reloads, "reload_seconds": took, "requests": summary["requests"],
            "failed": summary["errors"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", type=Path, required=True)
    parser.add_argument("--index", nargs="*", default=["exact", "faiss-hnsw"])
    parser.add_argument("--connections", nargs="*", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=int, default=10, help="seconds per measurement")
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
                            summary = wrk(server.url, path, lines, c, args.seconds)
                            rows.append((name, index, kind, c, summary))
                            log.info("%s %s %s c=%d: %s", name, index, kind, c, summary)
                    if index == "exact":
                        reload_rows.append(
                            (name, reload_under_load(server, directory,
                                                     bodies(run, "history", 500, rng), 30))
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
        f"measurement: wrk for {args.seconds} s. `id`: a known user's id, k=10; `history`: 20 "
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
        "wrk sends history requests on 16 connections for 30 s while the admin endpoint reloads "
        "the same export 10 times, one after another.\n",
        "| model | reloads done | seconds for the 10 | requests | failed requests |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in reload_rows:
        lines.append(
            f"| {name} | {r['reloads']} | {r['reload_seconds']:.1f} | {r['requests']:,} "
            f"| {r['failed']} |"
        )
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
