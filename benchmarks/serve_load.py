"""Benchmark: `towerkit serve` under load, on loopback, with wrk as the load generator, beside a
bare FastAPI endpoint under the same uvicorn settings in the same run.

For each run (ML-1M YouTubeDNN and SASRec) and index (exact, HNSW) the script exports the run,
starts the server (uvicorn, one process) on a free loopback port and drives it with wrk (one
thread, C connections, for a fixed time) for four kinds of request: a known user's id, a
history of 20 items (the user tower runs), a batch of 100 users and a batch of 100 histories.
Every row is also given as a ratio to the bare endpoint (the same request bodies, validated by
the same pydantic models, answered with ten fixed items) at the same concurrency, with the
server process's CPU time per request (user + system, from /proc). It also records the
in-process cost of the same work (no HTTP), the thread settings the server chose against the
others, and the requests (failed, slowest) while the server reloads 10 times under load.

With ``--towers fp32 int8 fp16`` each export is also written with its user tower quantized
(``towerkit export --quantize``) and every row is measured per tower; a table gives each tower's
size, its top-10 agreement with fp32 and the test HR@10 / NDCG@10 it serves on the run's data
(the ONNX tower on each test user's history, ranked exactly, seen items masked).

Run (needs Debian's wrk; the server and wrk share this machine's cores):
    python benchmarks/serve_load.py --run runs/yt --run runs/sasrec
    python benchmarks/serve_load.py --run runs/yt --run runs/sasrec --index exact \
        --connections 1 32 --towers fp32 int8 fp16 --results benchmarks/results/serve_towers.md

Writes benchmarks/results/serve_load.md (or ``--results``).
"""

from __future__ import annotations

import argparse
import functools
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

from towerkit.retrieval.export import ExportDir, export_run
from towerkit.runs import RunDir
from towerkit.serve.bodies import BatchRequest, RecommendRequest

RESULTS = Path(__file__).parent / "results" / "serve_load.md"
TOKEN = "load-test"
KINDS = {"id": "/recommend", "history": "/recommend", "batch-id": "/recommend/batch",
         "batch": "/recommend/batch"}  # fmt: skip
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
        '{"requests": %%d, "seconds": %%f, "p50": %%f, "p95": %%f, "p99": %%f, "max": %%f, '
        .. '"errors": %%d}\\n',
        summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
        latency:percentile(95) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3, errors))
    end
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`towerkit serve DIRECTORY` (or, with ``bare``, the bare endpoint) in a subprocess."""

    def __init__(self, directory: Path | None, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if directory is None:
            command = [sys.executable, __file__, "--bare-port", str(self.port)]
        else:
            command = [sys.executable, "-m", "towerkit.cli", "-q", "serve", str(directory),
                       "--port", str(self.port), "--admin-token", TOKEN, *args]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        for _ in range(600):
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def bare_app():
    """A bare FastAPI endpoint: the same request bodies, validated by the same pydantic
    models, answered with ten fixed items through FastAPI's own response path."""
    from fastapi import FastAPI

    app = FastAPI()
    items = [{"id": 1000 + i, "title": f"Film {i}", "score": 1.0 - i / 10} for i in range(10)]
    answer = {"items": items, "model_version": "bare", "index": "none", "history_truncated": False}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/recommend")
    async def recommend(body: RecommendRequest) -> dict:
        return answer

    @app.post("/recommend/batch")
    async def batch(body: BatchRequest) -> dict:
        return {"results": [answer] * len(body.queries)}

    return app


def run_bare(port: int) -> None:
    """The bare endpoint under the uvicorn settings of `towerkit serve` (towerkit.serve.app)."""
    import gc

    import uvicorn

    gc.set_threshold(20_000, 20, 20)
    uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def bodies(run: RunDir, kind: str, n: int, rng: np.random.Generator) -> list[str]:
    users = run.user_vocab.raw
    items = run.item_vocab.raw

    def history() -> list:
        return [_plain(i) for i in items[rng.integers(0, len(items), 20)]]

    def user() -> dict:
        return {"user": _plain(rng.choice(users)), "k": 10}

    if kind == "id":
        return [json.dumps(user()) for _ in range(n)]
    if kind == "history":
        return [json.dumps({"history": history(), "k": 10}) for _ in range(n)]
    if kind == "batch-id":
        return [json.dumps({"queries": [user() for _ in range(100)]})
                for _ in range(max(1, n // 20))]  # fmt: skip
    return [json.dumps({"queries": [{"history": history(), "k": 10} for _ in range(100)]})
            for _ in range(max(1, n // 20))]  # fmt: skip


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def wrk(server: Server, path: str, lines: list[str], connections: int, seconds: int) -> dict:
    """Run wrk (one thread) for ``seconds`` against the server; its summary as a dict, with
    the server's CPU milliseconds per request."""
    with tempfile.TemporaryDirectory() as tmp:
        body_file = Path(tmp) / "bodies.txt"
        body_file.write_text("\n".join(lines) + "\n")
        script = Path(tmp) / "load.lua"
        script.write_text(LUA % {"bodies": body_file, "path": path})
        cpu = server.cpu_seconds()
        done = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
             str(script), server.url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        )  # fmt: skip
        cpu = server.cpu_seconds() - cpu
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["rps"] = summary["requests"] / summary["seconds"]
    summary["cpu_ms"] = cpu * 1e3 / max(summary["requests"], 1)
    return summary


def interleaved(
    bare: Server,
    server: Server,
    path: str,
    lines: list[str],
    connections: int,
    seconds: int,
    rounds: int,
) -> tuple[dict, dict]:
    """``rounds`` rounds of the bare endpoint then the server, with the same bodies; the round
    whose ratio (server requests/s over bare) is the median: its two summaries."""
    measured = []
    for _ in range(rounds):
        reference = wrk(bare, path, lines, connections, seconds)
        measured.append((wrk(server, path, lines, connections, seconds), reference))
    measured.sort(key=lambda pair: pair[0]["rps"] / pair[1]["rps"])
    return measured[(len(measured) - 1) // 2]


def in_process(directory: Path, run: RunDir, rng: np.random.Generator) -> dict[str, float]:
    """Milliseconds of the same work without HTTP: the server's encoding and job runner, one
    thread for the tower and the index (the server's choice on two cores)."""
    from towerkit.serve.jobs import run_jobs
    from towerkit.serve.loading import load_served
    from towerkit.serve.routes import _jobs

    served = load_served(directory, threads=1)
    out = {}
    for kind in ("id", "history", "batch-id", "batch"):
        requests = [json.loads(b) for b in bodies(run, kind, 200, rng)]
        if kind.startswith("batch"):
            requests = [q for b in requests[:1] for q in b["queries"]]
        queries = [RecommendRequest(**r) for r in requests]
        times = []
        for repeat in range(30):
            batch = queries if kind.startswith("batch") else [queries[repeat % len(queries)]]
            start = time.perf_counter()
            run_jobs([job for job, _ in _jobs(served, batch, numbered=True)])
            times.append(time.perf_counter() - start)
        out[kind] = statistics.median(times) * 1e3
    served.close()
    return out


def reload_under_load(server: Server, directories: list[Path], lines: list[str],
                      seconds: int) -> dict:  # fmt: skip
    """wrk sends history requests for ``seconds`` while the admin endpoint reloads the model
    10 times, alternating between ``directories`` (all of the reloads inside the window)."""
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(wrk, server, "/recommend", lines, 16, seconds)
        time.sleep(1.0)
        start, reloads = time.monotonic(), 0
        for attempt in range(10):
            response = httpx.post(
                f"{server.url}/admin/reload", json={"path": str(directories[attempt % 2])},
                headers={"authorization": f"Bearer {TOKEN}"}, timeout=300,
            )  # fmt: skip
            reloads += response.status_code == 200
        took = time.monotonic() - start
        summary = load.result()
    if took + 1.0 >= seconds:
        log.warning("the reloads took %.1f s, longer than the load (%d s)", took, seconds)
    return {"reloads": reloads, "reload_seconds": took, "requests": summary["requests"],
            "failed": summary["errors"], "max": summary["max"], "p99": summary["p99"]}  # fmt: skip


#: (label, towerkit serve arguments, environment) of the thread settings compared
THREADS = [
    ("the server's choice (--threads 1 on 2 cores, OMP_WAIT_POLICY=PASSIVE)", [], {}),
    ("--threads 2, OMP_WAIT_POLICY=PASSIVE", ["--threads", "2"], {}),
    ("--threads 2, OMP_WAIT_POLICY=ACTIVE (spinning, as before)", ["--threads", "2"],
     {"OMP_WAIT_POLICY": "ACTIVE"}),
]  # fmt: skip


def threads(directory: Path, run: RunDir, bare: Server, rng, seconds: int) -> list:
    """The server under each thread setting of :data:`THREADS`, at 32 connections."""
    out = []
    for label, extra, env in THREADS:
        server = Server(directory, *extra, env=env)
        try:
            for kind in ("id", "history"):
                work = bodies(run, kind, 2000, rng)
                reference = wrk(bare, KINDS[kind], work, 32, seconds)
                summary = wrk(server, KINDS[kind], work, 32, seconds)
                out.append((label, kind, summary, reference))
                log.info("%s %s: %s (bare %s)", label, kind, summary, reference)
        finally:
            server.stop()
    return out


class OnnxModel:
    """An export's ONNX user tower and stored item vectors, as the evaluator calls a model."""

    training = False

    def __init__(self, directory: Path) -> None:
        import torch

        from towerkit.retrieval.export import ExportDir

        retriever = ExportDir(directory).retriever()
        self.tower, self.n_interests = retriever.tower, retriever.interests
        self.items = torch.from_numpy(np.asarray(retriever.item_vectors, dtype=np.float32))

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def encode_users(self, batch):
        import torch

        return torch.from_numpy(self.tower(batch.users.numpy(), batch.history.numpy(), None))

    def encode_items(self, ids):
        return self.items[ids - 1]


@functools.cache
def _test_stage(path: Path):
    """The test stage's evaluator of the run at ``path`` (its data prepared once, checked
    against the run's fingerprint, for every tower of the run)."""
    from towerkit.runs.components import stage_evaluator
    from towerkit.runs.pipeline import _open_finished

    run, prepared, _ = _open_finished(path)
    return stage_evaluator(run.config, prepared, "test")


def served_quality(directory: Path, run: RunDir) -> dict[str, float]:
    """Test metrics of the export's user tower (ONNX) from each test user's history, ranked
    exactly against the export's item vectors, as the run's test stage is."""
    return _test_stage(run.path).evaluate(OnnxModel(directory), run.config.similarity.build())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", type=Path)
    parser.add_argument("--index", nargs="*", default=["exact", "faiss-hnsw"])
    parser.add_argument("--connections", nargs="*", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=int, default=4, help="seconds per measurement")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of bare then server per row; the median round is kept",
    )
    parser.add_argument("--towers", nargs="*", default=["fp32"], choices=["fp32", "int8", "fp16"])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--bare-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_port:
        run_bare(args.bare_port)
        return
    if not args.run:
        parser.error("give --run at least once")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    rng = np.random.default_rng(0)
    rows, inprocess, reload_rows, thread_rows, towers = [], [], [], [], []
    load_before = os.getloadavg()
    bare = Server(None)  # measured just before each row, with the row's bodies
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in [RunDir(r) for r in args.run]:
                name = run.config.model.name
                for index, tower in ((i, t) for i in args.index for t in args.towers):
                    directory = export_run(run, Path(tmp) / f"{name}-{index}-{tower}", index=index,
                                           quantize=None if tower == "fp32" else tower)  # fmt: skip
                    label = name if len(args.towers) == 1 else f"{name} {tower}"
                    inprocess.append((label, index, in_process(directory, run, rng)))
                    if index == args.index[0] and len(args.towers) > 1:
                        onnx = ExportDir(directory).manifest["onnx"]
                        size = (directory / "user_tower.onnx").stat().st_size / 1e6
                        towers.append((name, tower, onnx, size, served_quality(directory, run)))
                    server = Server(directory)
                    try:
                        for kind, path in KINDS.items():
                            work = bodies(run, kind, 2000, rng)
                            for c in args.connections:
                                summary, reference = interleaved(
                                    bare, server, path, work, c, args.seconds, args.rounds
                                )
                                rows.append((label, index, kind, c, summary, reference))
                                log.info("%s %s %s c=%d: %s (bare %s)", label, index, kind, c,
                                         summary, reference)  # fmt: skip
                        if index == "exact" and tower == "fp32":
                            other = export_run(run, Path(tmp) / f"{name}-again", index=index)
                            reload_rows.append((name, reload_under_load(
                                server, [other, directory], bodies(run, "history", 500, rng), 30
                            )))  # fmt: skip
                    finally:
                        server.stop()
                    if index == "exact" and tower == "fp32" and not thread_rows:
                        thread_rows = threads(directory, run, bare, rng, args.seconds)
    finally:
        bare.stop()
    write(rows, inprocess, reload_rows, thread_rows, towers, args, load_before, os.getloadavg())
    print(args.results.read_text())


def write(rows, inprocess, reload_rows, thread_rows, towers, args, load_before, load_after):
    def load(values) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    lines = [
        "# Serving under load: requests/s and latency on loopback\n",
        f"`python benchmarks/serve_load.py {' '.join(sys.argv[1:])}` "
        f"({date.today()}: {platform.machine()}, {os.cpu_count()} cores; load average "
        f"{load(load_before)} before, {load(load_after)} after; nothing else ran). The server "
        "(one uvicorn process: the event loop, and one worker thread for the tower and the "
        "index) and the load generator (wrk, one thread) share the machine's cores, on "
        f"loopback. Each measurement: wrk for {args.seconds} s. `id`: a known user's id, k=10; "
        "`history`: 20 item ids, the user tower runs, k=10; `batch-id`: 100 users in one "
        "request; `batch`: 100 histories in one request.\n",
        "`bare`: a bare FastAPI endpoint under the same uvicorn settings (the same bodies, "
        "validated by the same request models, answered with ten fixed items through FastAPI's "
        "own response path: `bare_app` in the script), measured with the same bodies and "
        "connections just before the server; `x bare`: the row's requests/s as a multiple of "
        f"its. Each row is the median of {args.rounds} round(s) of bare then server, by that "
        "ratio. `CPU ms`: the server process's CPU time (user + system, all threads) per "
        "request.\n",
        "| model | index | request | connections | requests/s | bare | x bare | p50 ms | p95 ms "
        "| p99 ms | CPU ms | bare CPU ms | x bare CPU | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, index, kind, c, s, b in rows:
        lines.append(
            f"| {name} | {index} | {kind} | {c} | {s['rps']:,.0f} | {b['rps']:,.0f} | "
            f"{s['rps'] / b['rps']:.2f} | {s['p50']:.2f} | {s['p95']:.1f} | {s['p99']:.1f} | "
            f"{s['cpu_ms']:.2f} | {b['cpu_ms']:.2f} | {s['cpu_ms'] / b['cpu_ms']:.2f} | "
            f"{s['errors']} |"
        )
    if towers:
        lines += [
            "\n## The user towers\n",
            "Each export's user tower: fp32 (checked against PyTorch), or quantized by "
            "`towerkit export --quantize` (int8: onnxruntime's dynamic quantization; fp16). "
            "Agreement: the share of each sampled user's exact top 10 that the tower's query "
            "finds too, against fp32 (from the manifest). Served test metrics: the tower on "
            "each test user's history, ranked exactly against the stored item vectors, seen "
            "items masked.\n",
            "| model | tower | file MB | agreement@10 | largest difference | served test HR@10 "
            "| NDCG@10 |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for name, tower, onnx, size, metrics in towers:
            shrunk = onnx.get("quantized") or {}
            lines.append(
                f"| {name} | {tower} | {size:.2f} | {shrunk.get('agreement@10', 1.0):.3f} | "
                f"{shrunk.get('parity', onnx['parity']):.1e} | {metrics['hr@10']:.4f} | "
                f"{metrics['ndcg@10']:.4f} |"
            )
    lines += [
        "\n## The same work in process (no HTTP)\n",
        "Median milliseconds of the server's encoding and job runner in the benchmark's process "
        "(the tower on one onnxruntime thread, the index with torch's default threads): one id "
        "query, one history query (tower + search), a batch of 100 users, a batch of 100 "
        "histories.\n",
        "| model | index | id ms | history ms | 100 users ms | 100 histories ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, index, ms in inprocess:
        lines.append(f"| {name} | {index} | {ms['id']:.2f} | {ms['history']:.2f} | "
                     f"{ms['batch-id']:.1f} | {ms['batch']:.1f} |")  # fmt: skip
    if thread_rows:  # (measured with the exact index and the fp32 tower only)
        lines += [
            "\n## Thread settings\n",
            f"{rows[0][0] if rows else ''} with the exact index, 32 connections; each setting "
            "is a fresh server, beside the bare endpoint just before.\n",
            "| setting | request | requests/s | x bare | p50 ms | p99 ms | CPU ms |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for label, kind, s, b in thread_rows:
            lines.append(f"| {label} | {kind} | {s['rps']:,.0f} | {s['rps'] / b['rps']:.2f} | "
                         f"{s['p50']:.2f} | {s['p99']:.1f} | {s['cpu_ms']:.2f} |")  # fmt: skip
    if reload_rows:
        lines += [
            "\n## Hot reload under load\n",
            "wrk sends history requests on 16 connections for 30 s while the admin endpoint "
            "reloads 10 times, one after another, alternating between two exports of the run "
            "(each load probed before it is swapped in).\n",
            "| model | reloads done | seconds for the 10 | requests | failed requests | p99 ms "
            "| slowest ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in reload_rows:
            lines.append(
                f"| {name} | {r['reloads']} | {r['reload_seconds']:.1f} | {r['requests']:,} "
                f"| {r['failed']} | {r['p99']:.1f} | {r['max']:.1f} |"
            )
    args.results.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
