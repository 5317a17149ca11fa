"""Benchmark: how long `towerkit report` and `towerkit compare` take on ML-1M runs.

Each command runs as a user runs it (a fresh process: imports, reading the run, the page
written), ``--repeat`` times; the table gives the median wall time and the load average
before each row. Targets (issue 24): the report of the ML-1M SASRec run in <= 10 s; `compare` of
two ML-1M runs (6,040 users, 1,000 resamples) in <= 5 s.

The runs are run directories of ``configs/ml-1m/sasrec.yaml`` (trained by hand first, e.g.
``towerkit train configs/ml-1m/sasrec.yaml --out runs/ml1m-sasrec``). ``--screenshot PNG``
also renders the report in Chromium (Playwright, the network cut) to a picture for README.

Run:
    python benchmarks/report.py RUN_A RUN_B [--screenshot docs/report-ml1m.png]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _results import write_keeping_notes  # benchmarks/_results.py

RESULTS = Path(__file__).parent / "results" / "report.md"


def timed(command: list[str], repeat: int) -> tuple[float, float]:
    """Median seconds of ``command`` over ``repeat`` runs, and the 1-minute load average
    before the first."""
    load = os.getloadavg()[0]
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), load


def screenshot(page: Path, png: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            context = browser.new_context(offline=True, viewport={"width": 1250, "height": 900})
            tab = context.new_page()
            tab.goto(page.as_uri())
            tab.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 10")
            tab.wait_for_timeout(1000)
            tab.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path, help="the ML-1M SASRec run (reported)")
    parser.add_argument("run_b", type=Path, help="a second ML-1M run (compared with the first)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()

    towerkit = [sys.executable, "-m", "towerkit", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        rows = []
        seconds, load = timed([*towerkit, "report", str(args.run_a), "--out", str(page)],
                              args.repeat)  # fmt: skip
        size = page.stat().st_size
        rows.append(("report of the run (one process: read, charts, page)", seconds, 10.0, load))
        seconds, load = timed([*towerkit, "report", str(args.run_a), str(args.run_b), "--out",
                               str(page)], args.repeat)  # fmt: skip
        rows.append(("report of both runs, overlaid", seconds, None, load))
        seconds, load = timed([*towerkit, "compare", str(args.run_a), str(args.run_b),
                               "--resamples", "1000"], args.repeat)  # fmt: skip
        rows.append(("compare A B: 8 metrics, 1,000 paired resamples", seconds, 5.0, load))
        seconds, load = timed([*towerkit, "compare", str(args.run_a), "popularity"], args.repeat)
        rows.append(("compare A popularity", seconds, None, load))
        if args.screenshot is not None:
            subprocess.run([*towerkit, "report", str(args.run_a), "--out", str(page)], check=True)
            screenshot(page, args.screenshot)

    from towerkit.runs import RunDir

    users = RunDir(args.run_a).data["n_users"]
    lines = [
        "# `towerkit report` and `towerkit compare` on ML-1M",
        "",
        f"`python benchmarks/report.py {args.run_a.name} {args.run_b.name}` (last run "
        f"{date.today()}: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}). Each command in a fresh process as a user runs it "
        f"(imports included), median of {args.repeat}; {users:,} test users; the page is "
        f"{size / 2**20:.1f} MiB with Plotly embedded.",
        "",
        "| command | seconds | target | 1-min load before |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds, target, load in rows:
        goal = f"<= {target:g} s" if target else ""
        lines.append(f"| {name} | {seconds:.2f} | {goal} | {load:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_keeping_notes(RESULTS, text)


if __name__ == "__main__":
    main()
