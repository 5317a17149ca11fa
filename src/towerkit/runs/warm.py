"""Warm start: a new run that continues a finished one on a newer log (``towerkit train CONFIG
--from RUN``).

- **Vocabularies extend the parent's** (:class:`~towerkit.data.vocab.BaseVocabs`): known
  users, items and feature values keep their integers, new ones are numbered after them, and
  items absent from the new log stay in the catalogue with their rows.
- **Weights are transplanted**: every parameter of the new model takes the parent's values;
  tables indexed by id (users, items, feature values) that grew keep the parent's rows and
  the new rows start as a new model's would (the same seeded initialisation). Buffers are the
  new data's (side-feature values, their statistics).
- **The optimiser's moments are loaded** when the optimiser matches (the same ``train.sparse``
  and learnable temperature, so the same parameters in the same order); the new rows' moments
  start at zero, as for a parameter never stepped. The learning rate and its schedule are the
  new config's.
- **The lineage** (each generation's run and data fingerprint) goes into ``run.json``.

A parent of another model, width, history length or feature set is refused in one line naming
the config key: its weights would not mean the same thing in the new model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from towerkit.config import Config, ConfigError
from towerkit.data import Prepared
from towerkit.data.vocab import BaseVocabs
from towerkit.runs.rundir import MODEL_FILE, RunDir, RunDirError, load_torch
from towerkit.storage import is_url
from towerkit.training.state import TrainState

logger = logging.getLogger(__name__)

__all__ = ["WarmStart", "transplant"]

#: model keys that may change between generations: they change no weight's meaning
SOFT_MODEL_KEYS = frozenset({"dropout"})


class WarmStart:
    """A finished run to continue from.

    Args:
        parent: the finished run (a :class:`RunDir` or its path).

    Raises:
        RunDirError: not a run, or an unfinished one (resume it first).

    Example::

        warm = WarmStart("runs/monday")
        warm.check_config(config)            # the same model, width, history and features
        prepared = prepare(config.data, base=warm.vocabs)
    """

    def __init__(self, parent: RunDir | str | Path) -> None:
        self.parent = parent if isinstance(parent, RunDir) else RunDir(parent)
        if not self.parent.finished:
            raise RunDirError(
                f"{self.parent.path}: a warm start continues a finished run, and this one is "
                f"unfinished; finish it first with: towerkit train --resume {self.parent.path}"
            )

    @cached_property
    def vocabs(self) -> BaseVocabs:
        """The parent's vocabularies, which the new run's extend."""
        return self.parent.base_vocabs()

    def check_config(self, config: Config) -> None:
        """Refuse a config whose model the parent's weights do not fit, naming the key.

        Raises:
            ConfigError: another model, another value of a model key (all but dropout), or
                another ``data.max_len`` (position tables and attention biases are sized by
                it).
        """
        then = self.parent.config
        if then.model.name != config.model.name:
            self._refuse("model.name", then.model.name, config.model.name)
        old, new = then.model.model_dump(), config.model.model_dump()
        for key in sorted(old.keys() | new.keys()):
            if key not in SOFT_MODEL_KEYS and old.get(key) != new.get(key):
                self._refuse(f"model.{key}", old.get(key), new.get(key))
        if then.data.max_len != config.data.max_len:
            self._refuse("data.max_len", then.data.max_len, config.data.max_len)

    def check_data(self, prepared: Prepared) -> None:
        """Refuse data whose side features differ from the parent's (names or kinds).

        Raises:
            ConfigError: naming ``data.user_features`` or ``data.item_features``.
        """
        encoded = prepared.encoded
        for side, now in (("user", encoded.user_features), ("item", encoded.item_features)):
            then = self.parent.user_features if side == "user" else self.parent.item_features
            if then.kinds != now.kinds:
                self._refuse(f"data.{side}_features", _shown(then.kinds), _shown(now.kinds))

    def _refuse(self, key: str, then: Any, now: Any) -> None:
        raise ConfigError(
            f"{key}: the run continued from ({self.parent.path}) has {then!r}, this config "
            f"{now!r}; a warm start continues the same model (train it from scratch instead)"
        )

    def load(self, model: nn.Module, task: nn.Module) -> None:
        """Give the new model (and the task's learnable temperature) the parent's weights:
        its best weights, as ``model.pt`` holds them (see :func:`transplant`)."""
        saved = load_torch(self.parent.checked(MODEL_FILE), "model")["state_dict"]
        grown = transplant(model, saved)
        checkpoint = self._checkpoint
        best = (checkpoint.best_weights if checkpoint is not None else None) or {}
        if best.get("task") and _fits(task, best["task"]):
            transplant(task, best["task"])
        if grown:
            shown = ", ".join(f"{name} +{rows:,}" for name, rows in grown.items())
            logger.info("warm start from %s: new rows in %s", self.parent.path, shown)
        else:
            logger.info("warm start from %s: no new ids", self.parent.path)

    @cached_property
    def _checkpoint(self) -> TrainState | None:
        return self.parent.load_checkpoint()

    def moments(self, config: Config) -> tuple[dict[str, Any] | None, str]:
        """The parent's optimiser state, when the optimiser matches, and what was decided (for
        ``run.json``): ``"loaded"``, or why not."""
        then = self.parent.config
        if self._checkpoint is None:
            return None, "not loaded: the run continued from has no checkpoint.pt"
        for key, old, new in (
            ("train.sparse", then.train.sparse, config.train.sparse),
            ("temperature.learnable", then.temperature.learnable, config.temperature.learnable),
        ):
            if old != new:
                return None, f"not loaded: {key} was {old}, is {new} (another optimiser)"
        return self._checkpoint.optimizer, "loaded"

    def record(self, prepared: Prepared, optimizer: str) -> dict[str, Any]:
        """What ``run.json`` records of the warm start: the parent, the generations (each
        run's data fingerprint and sizes, the first generation first, this one last) and the
        ids kept and added."""
        parent = self.parent
        # the parent's own generation is the last of its lineage (run None there: "this one")
        generations = [*parent.lineage[:-1], _generation(parent.location, parent.data)]
        vocabs, encoded = self.vocabs, prepared.encoded
        return {
            "parent": parent.url or str(parent.path.absolute()),
            "lineage": [*generations, _generation(None, prepared.summary())],
            "warm_start": {
                "users_kept": len(vocabs.user),
                "users_new": encoded.n_users - len(vocabs.user),
                "items_kept": len(vocabs.item),
                "items_new": encoded.n_items - len(vocabs.item),
                "optimizer": optimizer,
            },
        }


def _generation(where: str | None, data: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("fingerprint", "n_users", "n_items", "interactions")
    run = None if where is None or is_url(where) else str(Path(where).absolute())
    return {"run": where if is_url(where) else run, **{k: data[k] for k in keys}}


def _shown(kinds: Mapping[str, str]) -> dict[str, str] | str:
    return dict(kinds) or "no features"


def _fits(module: nn.Module, saved: Mapping[str, torch.Tensor]) -> bool:
    own = dict(module.named_parameters())
    return set(own) <= set(saved) and all(
        saved[name].shape == param.shape for name, param in own.items()
    )


def transplant(module: nn.Module, saved: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Copy ``saved`` (a state dict) into ``module``'s parameters: whole where the shapes are
    equal, into the first rows where a table has grown along its first axis (an id table over
    an extended vocabulary); the other rows keep their initialisation. Buffers are left as
    they are (they hold the new data's side features).

    Returns:
        the grown parameters and how many rows each gained.

    Raises:
        ConfigError: a parameter the saved weights lack, or one whose shape differs otherwise.

    >>> new, old = nn.Embedding(5, 2), nn.Embedding(3, 2)
    >>> transplant(new, old.state_dict())
    {'weight': 2}
    >>> bool((new.weight[:3] == old.weight).all())
    True
    """
    grown: dict[str, int] = {}
    with torch.no_grad():
        for name, param in module.named_parameters():
            old = saved.get(name)
            if old is None:
                raise ConfigError(f"the run continued from has no parameter {name!r}")
            if old.shape == param.shape:
                param.copy_(old)
            elif (
                old.dim() == param.dim() >= 1
                and old.shape[1:] == param.shape[1:]
                and (old.shape[0] < param.shape[0])
            ):
                param[: old.shape[0]].copy_(old)
                grown[name] = param.shape[0] - old.shape[0]
            else:
                raise ConfigError(
                    f"parameter {name!r} is {tuple(old.shape)} in the run continued from and "
                    f"{tuple(param.shape)} here"
                )
    return grown
