"""Faster steps with the same model: bf16 autocast (``train.precision``) and ``torch.compile``
(``train.compile``).

**Precision.** ``bf16`` runs the towers under :func:`torch.autocast` in bfloat16: their matrix
products, attention and recurrences. The rest stays in fp32, where accuracy needs it:

- the weights and the optimizer (autocast casts copies, never the parameters);
- the query vectors, before the task scores them against the catalogue;
- the scores and the softmax over the catalogue, the loss and any contrastive term.

Validation during training encodes users and items at the training's precision and ranks in
fp32. ``auto`` picks bf16 where it pays: on a CUDA device with bf16 support; on a CPU with bf16
instructions, when the run's own first training steps, timed in both precisions before the first
epoch (forward and backward, no update, every random state restored), run at least 1.1x faster
in bf16. The instructions alone do not say: some CPUs list ``avx512_bf16`` and still multiply
large bf16 matrices at half the fp32 rate (``benchmarks/results/roofline.md``). Otherwise
``auto`` gives fp32 and logs why. A resumed run keeps the precision it chose.

**Compile.** The training step (model, task and contrastive term) goes through
:func:`torch.compile`. When compiling fails (no C++ compiler for inductor on a CPU, a Python
torch cannot compile on, an operation it cannot trace) the step runs eagerly, and a warning
says why.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from towerkit.config.training import bf16_problem
from towerkit.errors import TowerkitError

logger = logging.getLogger(__name__)


class PrecisionError(TowerkitError):
    """``train.precision: bf16`` on a device without bf16 support."""


@dataclass(frozen=True)
class Precision:
    """What a run computes its towers in.

    Attributes:
        name: ``"fp32"`` or ``"bf16"``.
        device_type: ``"cpu"`` or ``"cuda"`` (what :func:`torch.autocast` is given).
        reason: why ``auto`` chose it ("" for an explicit setting).
    """

    name: Literal["fp32", "bf16"]
    device_type: str
    reason: str = ""
    #: ``auto`` on a CPU with bf16 instructions: the trainer times its first steps in both
    #: precisions and keeps the faster (:func:`measured`)
    measure: bool = False

    @property
    def bf16(self) -> bool:
        """Whether the towers run under bf16 autocast."""
        return self.name == "bf16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the towers run in: bf16 autocast, or nothing."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)


def fp32(device: torch.device | str = "cpu") -> Precision:
    """Full precision on ``device`` (no autocast)."""
    return Precision("fp32", torch.device(device).type)


@contextlib.contextmanager
def full_precision(device_type: str) -> Iterator[None]:
    """Autocast off (in fp32) inside, whatever the caller runs under."""
    with torch.autocast(device_type, enabled=False):
        yield


def resolve_precision(setting: str, device: torch.device | str) -> Precision:
    """The precision ``train.precision`` gives on ``device``.

    Raises:
        PrecisionError: ``bf16`` asked for on a device without bf16 support.
    """
    device = torch.device(device)
    if setting == "fp32":
        return Precision("fp32", device.type)
    missing = bf16_problem(str(device))
    if setting == "bf16":
        if missing is not None:
            raise PrecisionError(f"train.precision bf16: {missing}; use fp32 or auto")
        return Precision("bf16", device.type)
    if setting != "auto":
        raise ValueError(f"unknown precision {setting!r}; use fp32, bf16 or auto")
    if missing is not None:
        return Precision("fp32", device.type, missing)
    if device.type == "cuda":
        return Precision("bf16", "cuda", "this GPU computes bf16")
    return Precision("fp32", "cpu", "not measured yet", measure=True)


#: how much faster bf16 steps must run for ``auto`` to take them
BF16_GAIN = 1.1


def measured(fp32_seconds: float, bf16_seconds: float, device_type: str) -> Precision:
    """``auto``'s choice from the median seconds of the same steps in each precision: bf16
    where it runs at least ``BF16_GAIN`` times faster. A CPU's bf16 instructions do not say it:
    on this project's 2-core machines, which list ``avx512_bf16``, a 2048 x 2048 bf16 product
    runs at half the fp32 rate and the ML-1M YouTubeDNN and SASRec steps at 0.93-0.96x
    (``benchmarks/results/roofline.md``)."""
    speedup = fp32_seconds / bf16_seconds
    if speedup >= BF16_GAIN:
        return Precision("bf16", device_type, f"bf16 steps ran {speedup:.2f}x fp32 here")
    return Precision("fp32", device_type, f"bf16 steps ran only {speedup:.2f}x fp32 here")


def compile_blocker(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run here, found before trying; None if nothing is known."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python"
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        return "no C++ compiler for inductor's CPU kernels (install g++)"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


class CompiledStep:
    """A module's call through :func:`torch.compile`, or eagerly once compiling failed.

    The first failure (while compiling or running the compiled graph) is logged as a warning
    with its reason; that call and every later one run the module eagerly. An error of the
    step itself is raised again by the eager call.
    """

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.module = module
        self.fallback: str | None = compile_blocker(device)
        self.compiled: Callable[..., Any] | None = None
        if self.fallback is None:
            self.compiled = torch.compile(module)
        else:
            logger.warning("train.compile: running eagerly: %s", self.fallback)

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as err:  # any failure of the compiler
                self.fallback, self.compiled = _first_line(err), None
                logger.warning(
                    "train.compile: compiling the training step failed, running eagerly: %s",
                    self.fallback,
                )
        return self.module(*args)
