"""What a run will allocate, estimated from its config and its data's sizes before any tensor is,
against the memory this machine has: a size that cannot fit is one line naming the config key,
not an allocator's traceback minutes in.

The config bounds every size on its own (:mod:`towerkit.sections`); what no bound can catch is
a product with the data: ``data.max_len`` x the rows of a batch, ``negatives.n`` x the batch,
the catalogue x ``embedding_dim``. Each :class:`Cost` is one such allocation, counted from below
(the tensors a step cannot do without: the model's parameters with their gradients and AdamW's
moments, counted on the meta device from the model as it is built; a batch's history ids and
vectors; the negatives' vectors and logits; the evaluator's blocks). Layers' other activations
come on top, so a run the check lets through may still be tight, but one it refuses could not
have run. The evaluator's ``max_bytes`` is this idea for one stage; this is it for the run.

Example (ML-1M with ``data.max_len: 1048576``)::

    check_memory(config, prepared)
    ConfigError: data.max_len = 1,048,576: a training batch's history ids and vectors would take
    at least 520 GiB (1,024 samples x 1,048,576 positions x (8 bytes + 64 dims x 4 bytes x 2
    with gradients)); this machine has 22.6 GiB available: lower data.max_len (or
    train.batch_size, model.embedding_dim)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from towerkit.config import Config, ConfigError
from towerkit.data import Prepared
from towerkit.models import MODELS
from towerkit.runs.components import build_model, trains_on_windows

logger = logging.getLogger(__name__)

__all__ = ["Cost", "available_memory", "blame", "check_memory", "memory_costs"]

_FLOAT, _LONG = 4, 8


@dataclass(frozen=True)
class Cost:
    """One allocation a run cannot do without.

    Attributes:
        what: what it holds (``a training batch's history vectors``).
        formula: how the bytes were counted, with the sizes (``1,024 rows x 50 positions ...``).
        nbytes: the bytes.
        keys: the config keys it grows with, as ``--set`` takes them (``data.max_len``); an
            error names the one set furthest above its default (see :func:`blame`).
        hint: another way out than lowering a key, if any.
        step: held during a training step (with the other such costs at once).
    """

    what: str
    formula: str
    nbytes: int
    keys: tuple[str, ...]
    hint: str = ""
    step: bool = True


def _n(value: int) -> str:
    return f"{value:,}"


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    raise AssertionError  # unreachable


def available_memory() -> int:
    """Bytes this process can still allocate on the host: the kernel's ``MemAvailable``, or
    less where a cgroup (a container's limit) allows less."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    if available is None:  # not Linux
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 1 << 62  # unknown: nothing is refused
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text())
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(available, 0)


def _device_memory(device: torch.device) -> int | None:
    """Free bytes on an accelerator; None on the CPU (the host's memory is the budget)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def _parameters(config: Config, prepared: Prepared) -> Cost:
    """The model's parameters as it will be built, counted on the meta device (no memory)."""
    with torch.device("meta"):
        model = build_model(config, prepared)
    named = list(model.named_parameters())
    count = sum(p.numel() for _, p in named)
    largest_name, largest = max(named, key=lambda kv: kv[1].numel())
    width_key, _ = config.model.history_width()
    return Cost(
        "the model's parameters with their gradients and AdamW's two moments",
        f"{_n(count)} parameters x 4 copies x {_FLOAT} bytes; the largest, {largest_name}, is "
        f"{' x '.join(_n(s) for s in largest.shape)}",
        count * 4 * _FLOAT,
        ("model.embedding_dim", f"model.{width_key}", "data.max_len"),
    )


def memory_costs(config: Config, prepared: Prepared) -> list[Cost]:
    """The allocations of one training step and of evaluation, from below (see the module)."""
    model_cls = MODELS[config.model.name]
    t, n, e = config.train, config.negatives, config.eval
    n_users, n_items = prepared.encoded.n_users, prepared.encoded.n_items
    width_name, width = config.model.history_width()
    width_key = f"model.{width_name}"
    dim = config.model.embedding_dim
    max_len = config.data.max_len
    costs = [_parameters(config, prepared)]

    # A training batch: rows x positions of history ids, and their vectors (kept with their
    # gradients for the backward pass). Windows hold context + L positions each.
    if model_cls.sequential:
        rows, positions, queries = t.batch_size, max_len, t.batch_size * max_len
        row_word, positions_key = "windows", "data.max_len"
    elif t.windows:
        rows, positions = t.batch_size, max_len - 1 + t.windows  # at least one window a row
        queries, row_word, positions_key = t.batch_size, "windows", "train.windows"
    else:
        rows, positions, queries, row_word = t.batch_size, max_len, t.batch_size, "samples"
        positions_key = "data.max_len"
    sizes = f"{_n(rows)} {row_word} x {_n(positions)} positions"
    batch_keys = ("data.max_len", positions_key, "train.batch_size")
    costs.append(
        Cost(
            "a training batch's history ids and vectors",
            f"{sizes} x ({_LONG} bytes + {_n(width)} dims x {_FLOAT} bytes x 2 with gradients)",
            rows * positions * (_LONG + width * _FLOAT * 2),
            (*batch_keys, width_key),
        )
    )
    attention = config.model.attention()
    if attention:  # self-attention keeps a [B, H, L, L] logit bias and its probabilities per layer
        heads, layers = attention
        costs.append(
            Cost(
                "a training batch's attention matrices",
                f"{sizes} x {_n(positions)} positions x {heads} heads x {layers} layers x "
                f"{_FLOAT} bytes x 2",
                rows * positions * positions * heads * layers * _FLOAT * 2,
                (*batch_keys, "model.n_heads", "model.n_layers"),
            )
        )

    # The negatives of a step: each query's logits, their softmax and gradient, and the vectors
    # of sampled items (one set per batch when shared, one per query otherwise).
    query_keys = (
        ("train.batch_size", "data.max_len") if model_cls.sequential else ("train.batch_size",)
    )
    if n.kind == "full":
        costs.append(
            Cost(
                "a training step's logits over the whole catalogue (negatives.kind full)",
                f"{_n(queries)} queries x {_n(n_items)} items x {_FLOAT} bytes x 3",
                queries * n_items * _FLOAT * 3,
                query_keys,
                "or draw negatives instead (negatives.kind: sampled)",
            )
        )
    else:
        sampled = n.n if n.kind in ("sampled", "mixed") else 0
        in_batch = queries if n.kind in ("in_batch", "mixed") else 0
        costs.append(
            Cost(
                "a training step's logits",
                f"{_n(queries)} queries x {_n(sampled + in_batch)} candidates x {_FLOAT} bytes x 3",
                queries * (sampled + in_batch) * _FLOAT * 3,
                ("negatives.n", *query_keys) if sampled else query_keys,
            )
        )
        if sampled:
            shared = trains_on_windows(config) if n.shared is None else n.shared
            sets = 1 if shared else queries
            shared_rows = "1 shared set" if shared else f"{_n(queries)} queries"
            costs.append(
                Cost(
                    "a training step's sampled item ids and vectors",
                    f"{shared_rows} x {_n(n.n)} items x ({_LONG} bytes + {_n(dim)} dims x "
                    f"{_FLOAT} bytes x 2 with gradients)",
                    sets * n.n * (_LONG + dim * _FLOAT * 2),
                    ("negatives.n", "model.embedding_dim", *(() if shared else query_keys)),
                    "" if shared else "or share one set per batch (negatives.shared: true)",
                )
            )

    # Evaluation: the catalogue's vectors, every user's query vectors (x interests), a batch
    # of users' histories, a block of scores (eval.max_bytes), the test stage's ranked lists.
    interests = config.model.vectors_per_user()
    costs += [
        Cost(
            "the catalogue's and the users' vectors at evaluation",
            f"({_n(n_items)} items + {_n(n_users)} users x {interests} interests) x {_n(dim)} "
            f"dims x {_FLOAT} bytes",
            (n_items + n_users * interests) * dim * _FLOAT,
            ("model.embedding_dim",),
            step=False,
        ),
        Cost(
            "an evaluation batch's history ids and vectors",
            f"{_n(e.batch_size)} users x {_n(max_len)} positions x ({_LONG} bytes + "
            f"{_n(width)} dims x {_FLOAT} bytes)",
            e.batch_size * max_len * (_LONG + width * _FLOAT),
            ("data.max_len", "eval.batch_size", width_key),
            step=False,
        ),
        Cost(
            "a block of evaluation scores",
            f"eval.max_bytes = {_n(e.max_bytes)}",
            e.max_bytes,
            ("eval.max_bytes",),
            step=False,
        ),
        Cost(
            "the test stage's ranked lists (the model's and popularity's)",
            f"{_n(n_users)} users x {_n(e.depth)} ranks x {_LONG} bytes x 2",
            n_users * e.depth * _LONG * 2,
            ("eval.depth",),
            step=False,
        ),
    ]
    return costs


def check_memory(
    config: Config,
    prepared: Prepared,
    device: torch.device | str | None = None,
    *,
    available: int | None = None,
) -> list[Cost]:
    """Refuse a config whose allocations cannot fit this machine, before any is made.

    Each cost alone, and the training step's together (parameters, batch, negatives), must fit
    the memory available: the device's free memory on an accelerator, else the host's.

    Args:
        device: where the run trains (default: ``config.train.device``).
        available: bytes to check against (default: measured, see :func:`available_memory`).

    Returns:
        The costs, largest first (logged at debug level).

    Raises:
        ConfigError: one line naming the key to lower (see :func:`blame`), the estimate and
            how it was counted, and the memory available.
    """
    device = torch.device(device or config.train.device)
    costs = sorted(memory_costs(config, prepared), key=lambda c: -c.nbytes)
    where = "this machine has"
    if available is None:
        on_device = _device_memory(device)
        if on_device is not None:
            where = f"{device} has"
        available = on_device if on_device is not None else available_memory()
    for cost in costs:
        logger.debug("memory: %s: %s (%s)", cost.what, _size(cost.nbytes), cost.formula)
    available_text = f"{where} {_size(available)} available"
    top = costs[0]
    if top.nbytes > available:
        taken = f"{top.what} would take at least {_size(top.nbytes)} ({top.formula})"
        raise _refusal(config, top, taken, available_text)
    step = [c for c in costs if c.step]
    total = sum(c.nbytes for c in step)
    if total > available:
        parts = "; ".join(f"{c.what}: {_size(c.nbytes)}" for c in step)
        taken = f"a training step would take at least {_size(total)} ({parts})"
        raise _refusal(config, step[0], taken, available_text)
    return costs


def _setting(config: Config, key: str) -> tuple[Any, Any]:
    """The value of a dotted config key and its default."""
    *sections, name = key.split(".")
    node: Any = config
    for section in sections:
        node = getattr(node, section)
    return getattr(node, name), type(node).model_fields[name].default


def blame(config: Config, cost: Cost) -> str:
    """The key of ``cost`` set furthest above its default: the one a user most likely meant to
    change (``model.embedding_dim: 8192`` over ``data.max_len: 10``); ties go to the first."""

    def ratio(key: str) -> float:
        value, default = _setting(config, key)
        if not isinstance(value, int | float) or not isinstance(default, int | float):
            return 0.0
        if default <= 0:  # off by default (train.windows): set at all counts as its default
            return 1.0 if value else 0.0
        return value / default

    keys = list(dict.fromkeys(cost.keys))
    return max(keys, key=lambda key: (ratio(key), -keys.index(key)))


def _refusal(config: Config, cost: Cost, taken: str, available: str) -> ConfigError:
    """``KEY = VALUE: TAKEN; AVAILABLE: lower KEY (or OTHERS)[, HINT]``, KEY from :func:`blame`."""
    key = blame(config, cost)
    value, _ = _setting(config, key)
    others = [k for k in dict.fromkeys(cost.keys) if k != key]
    fix = f"lower {key}" + (f" (or {', '.join(others)})" if others else "")
    fix = f"{fix}, {cost.hint}" if cost.hint else fix
    shown = _n(value) if isinstance(value, int) else value
    return ConfigError(f"{key} = {shown}: {taken}; {available}: {fix}")
