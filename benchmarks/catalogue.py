"""Benchmark: a training step and the evaluation at 10k, 100k and 1M items.

Step: YouTubeDNN (embedding 64, MLP 256, history 50, batch 1024, cosine, temperature 0.1)
with each negative strategy that scales (a sampled softmax of 1,024 popularity^0.75 negatives
shared by the batch, in-batch negatives, mixed = both; log-q corrected) and the id tables
dense (AdamW over every row each step) or sparse (``train.sparse``: sparse gradients,
SparseAdam over the touched rows). Histories and targets are drawn from a power law over the
catalogue, as real logs are. Milliseconds per step: median of ``--steps`` after warm-up,
every row in one process.

Evaluation: exact top-50 of a seeded sample of users over the whole catalogue in blocks of
``max_bytes`` (seen items masked), and the same through a Faiss HNSW index with its recall
against exact search.

With ``--device cuda`` the steps and the exact evaluation run on the GPU (the exact index
searches with torch on the vectors' device), timed with the device synchronised, and the table
goes to ``results/catalogue-cuda.md``; the HNSW columns stay on the CPU's rows (Faiss is a CPU
library here), so ``--no-ann`` leaves them out.

Run:
    python benchmarks/catalogue.py                   # writes results/catalogue.md
    python benchmarks/catalogue.py --items 10000 100000 --steps 5    # a quick look
    python benchmarks/catalogue.py --device cuda --no-ann            # results/catalogue-cuda.md
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from _results import write_keeping_notes  # benchmarks/_results.py
from towerkit.config import TrainConfig
from towerkit.index import make_index, recall_at_k
from towerkit.models import YouTubeDNN
from towerkit.nn import PooledTowerOptions
from towerkit.similarity import Cosine
from towerkit.task import RetrievalTask
from towerkit.task.negatives import (
    CatalogueSampler,
    InBatchNegatives,
    MixedNegatives,
    SampledNegatives,
)
from towerkit.training import Optimizer, Trainer
from towerkit.types import Batch

RESULTS = Path(__file__).parent / "results" / "catalogue.md"
BATCH, MAX_LEN, DIM = 1024, 50, 64


def power_law_counts(n_items: int, rng: np.random.Generator) -> np.ndarray:
    counts = np.zeros(n_items + 1)
    counts[1:] = 1e6 / np.arange(1, n_items + 1) ** 0.9
    counts[1:] = counts[1 + rng.permutation(n_items)]  # popularity says nothing about the id
    return counts


def draw(counts: np.ndarray, shape, rng: np.random.Generator) -> torch.Tensor:
    p = counts[1:] / counts[1:].sum()
    return torch.from_numpy(rng.choice(len(p), size=shape, p=p) + 1)


def negatives(kind: str, counts: np.ndarray):
    in_batch = InBatchNegatives.from_counts(counts)
    sampled = SampledNegatives(CatalogueSampler.popularity(counts), 1024, shared=True)
    return {"sampled": sampled, "in_batch": in_batch,
            "mixed": MixedNegatives(in_batch, sampled)}[kind]  # fmt: skip


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def step_ms(
    n_items: int, kind: str, sparse: bool, steps: int, seed: int = 0, device: str = "cpu"
) -> float:
    rng = np.random.default_rng(seed)
    counts = power_law_counts(n_items, rng)
    torch.manual_seed(seed)
    model = YouTubeDNN(n_items, embedding_dim=DIM, max_len=MAX_LEN, tower=PooledTowerOptions())
    task = RetrievalTask(model.encode_items, negatives=negatives(kind, counts),
                         similarity=Cosine(), temperature=0.1, logq=True)  # fmt: skip
    config = TrainConfig(sparse=sparse, lr=1e-3, progress=False, device=device)
    trainer = Trainer(model, task, config)
    tables = trainer.sparse
    dense = [p for p in model.parameters() if all(p is not t for t in tables)]
    optimizer = Optimizer(dense, tables, config, total_steps=steps + 3)
    batches = []
    for _ in range(4):
        history, targets = draw(counts, (BATCH, MAX_LEN), rng), draw(counts, BATCH, rng)
        batches.append(Batch(torch.zeros(BATCH, dtype=torch.long), history, targets).to(device))
    times = []
    for i in range(steps + 3):  # 3 warm-up steps
        _sync(device)
        start = time.perf_counter()
        loss = trainer.step_loss(batches[i % 4])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(optimizer.dense, 1.0)
        optimizer.step()
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def evaluation(
    n_items: int, users: int, seed: int = 0, device: str = "cpu", ann: bool = True
) -> dict[str, float]:
    """Exact top-50 of ``users`` random queries against ``n_items`` clustered item vectors
    (the exact index, 256 MB blocks, 50 seen items masked per user), then Faiss HNSW and its
    recall@10."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(256, DIM, generator=g)
    items = centres[torch.randint(0, 256, (n_items,), generator=g)]
    items = torch.nn.functional.normalize(items + 0.5 * torch.randn(n_items, DIM, generator=g))
    queries = torch.nn.functional.normalize(
        centres[torch.randint(0, 256, (users,), generator=g)] + torch.randn(users, DIM, generator=g)
    )
    seen = torch.randint(1, n_items + 1, (users * 50,), generator=g).numpy()
    exclude = (np.arange(0, users * 50 + 1, 50, dtype=np.int64), seen)
    exact_index = make_index("exact", Cosine(), max_bytes=256 * 2**20)
    on_device = items.to(device), queries.to(device)
    _sync(device)
    start = time.perf_counter()
    exact_index.build(on_device[0], ids=np.arange(1, n_items + 1))
    exact, _ = exact_index.search(on_device[1], 50, exclude=exclude)
    _sync(device)
    exact_s = time.perf_counter() - start
    if not ann:
        return {"exact_s": exact_s}
    index = make_index("faiss-hnsw", Cosine(), ef_search=128)
    start = time.perf_counter()
    index.build(items, ids=np.arange(1, n_items + 1))
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    found, _ = index.search(queries, 50, exclude=exclude)
    search_s = time.perf_counter() - start
    return {"exact_s": exact_s, "build_s": build_s, "search_s": search_s,
            "recall@10": recall_at_k(found, exact, 10)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-users", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-ann", action="store_true", help="leave out the HNSW columns")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = {}
    for n_items in args.items:
        for kind in ("sampled", "in_batch", "mixed"):
            for sparse in (False, True):
                steps[n_items, kind, sparse] = step_ms(
                    n_items, kind, sparse, args.steps, device=args.device
                )
                print(f"{n_items:>9,} items {kind:8s} {'sparse' if sparse else 'dense '}: "
                      f"{steps[n_items, kind, sparse]:.1f} ms/step", flush=True)  # fmt: skip
    evals = {}
    for n_items in args.items:
        evals[n_items] = evaluation(
            n_items, args.eval_users, device=args.device, ann=not args.no_ann
        )
        print(f"{n_items:>9,} items evaluation: {evals[n_items]}", flush=True)
    write(args, steps, evals)


def write(args, steps, evals) -> None:
    small, large = min(args.items), max(args.items)
    cuda = torch.device(args.device).type == "cuda"
    where = f"{torch.cuda.get_device_name()}, " if cuda else ""
    flags = (f" --device {args.device}" if cuda else "") + (" --no-ann" if args.no_ann else "")
    lines = [
        "# A step and the evaluation as the catalogue grows" + (" (GPU)" if cuda else ""),
        "",
        f"`python benchmarks/catalogue.py --steps {args.steps}{flags}` on {date.today()}: "
        f"{platform.machine()}, {where}torch {torch.__version__}, {args.threads} threads. "
        f"Peak RSS of the whole run: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB.",
        "",
        f"YouTubeDNN, embedding {DIM}, MLP 256, history {MAX_LEN}, batch {BATCH}; ids drawn "
        "from a power law. Sampled: 1,024 popularity^0.75 negatives shared by the batch; "
        "mixed: in-batch + those; log-q on. ms per step (forward, backward, clipping, "
        f"optimiser), median of {args.steps} after 3 warm-up steps.",
        "",
        "| negatives | tables | "
        + " | ".join(f"{n:,} items" for n in args.items)
        + f" | {large:,} / {small:,} |",
        "|---|---|" + "---:|" * (len(args.items) + 1),
    ]
    for kind in ("sampled", "in_batch", "mixed"):
        for sparse in (False, True):
            row = [steps[n, kind, sparse] for n in args.items]
            lines.append(
                f"| {kind} | {'sparse' if sparse else 'dense'} | "
                + " | ".join(f"{ms:.1f}" for ms in row)
                + f" | {row[-1] / row[0]:.2f}x |"
            )
    lines += [
        "",
        f"Evaluation of {args.eval_users:,} sampled users (`eval.sample_users`), top-50 over "
        "the whole catalogue, 50 seen items masked each; exact scoring in 256 MB blocks"
        + ("" if args.no_ann else "; Faiss HNSW (M 32, ef_search 128)")
        + " on clustered unit vectors.",
        "",
    ]
    if args.no_ann:
        lines += ["| items | exact top-50 s |", "|---:|---:|"]
        lines += [f"| {n:,} | {e['exact_s']:.3f} |" for n, e in evals.items()]
    else:
        lines += [
            "| items | exact top-50 s | HNSW build s | HNSW search s | HNSW recall@10 |",
            "|---:|---:|---:|---:|---:|",
        ]
        for n, e in evals.items():
            lines.append(f"| {n:,} | {e['exact_s']:.2f} | {e['build_s']:.1f} | "
                         f"{e['search_s']:.2f} | {e['recall@10']:.4f} |")  # fmt: skip
    results = RESULTS.with_name("catalogue-cuda.md") if cuda else RESULTS
    write_keeping_notes(results, "\n".join(lines) + "\n")
    print(f"written to {results}")


if __name__ == "__main__":
    main()
