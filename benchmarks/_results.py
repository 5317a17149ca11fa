"""What the benchmark scripts share: writing a result table without losing its notes, and the
matrix product's rate that their tables are set against."""

from __future__ import annotations

import time
from pathlib import Path


def write_keeping_notes(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, keeping the hand-written ``## Notes`` section (and all after
    it) of the file it replaces."""
    old = path.read_text() if path.exists() else ""
    notes = old[old.index("## Notes") :] if "## Notes" in old else ""
    path.write_text(text + ("\n" + notes if notes else ""))


def matmul_gflops(rows: int, inner: int, cols: int, repeats: int = 3, dtype=None) -> float:
    """Best of ``repeats`` of ``[rows, inner] @ [inner, cols]`` (float32, or ``dtype``) after a
    warm-up, in GFLOP/s, at torch's thread count of the moment."""
    import torch

    a = torch.randn(rows, inner).to(dtype or torch.float32)
    b = torch.randn(inner, cols).to(dtype or torch.float32)
    torch.mm(a, b)  # warm-up: the kernel chosen, the pages touched
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * rows * inner * cols / best / 1e9
