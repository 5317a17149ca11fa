"""The space file of a study: config keys with ranges or choices, checked against the config
before any trial (see :mod:`towerkit.tune`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from towerkit.config import (
    Config,
    ConfigError,
    config_from_dict,
    set_key,
)
from towerkit.errors import TowerkitError
from towerkit.sections import MAX_SEED, Section, unbounded

logger = logging.getLogger(__name__)


class TuneError(TowerkitError):
    """A study that cannot run: a bad space file, a study directory in the way or missing, no
    trial that completed, a worker that failed (the message names the file)."""


Scalar = str | int | float | bool | None


class _Param(Section):
    when: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict, description="sampled only when these earlier params match"
    )

    def applies(self, values: dict[str, Any]) -> bool:
        for key, wanted in self.when.items():
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if key not in values or values[key] not in allowed:
                return False
        return True


_END = unbounded("an end of a range of a config key: each is checked as that key's value")


class FloatRange(_Param):
    """A float searched in ``[low, high]`` (``log``: on a log scale; ``step``: on a grid)."""

    low: float = Field(json_schema_extra=_END)
    high: float = Field(json_schema_extra=_END)
    log: bool = False
    step: float | None = Field(
        default=None, gt=0, json_schema_extra=unbounded("a step within [low, high]")
    )

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def suggest(self, trial: Any, key: str) -> float:
        """This key's value in an Optuna trial."""
        return trial.suggest_float(key, self.low, self.high, log=self.log, step=self.step)

    def stored(self, value: Any) -> float | None:
        """``value`` as Optuna stores it for this param, or None where the space cannot take
        it (not a number, outside the range, off the grid)."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        if not self.low - 1e-12 <= value <= self.high + 1e-12:
            return None
        if self.step is not None:
            steps = (value - self.low) / self.step
            if abs(steps - round(steps)) > 1e-6:
                return None
        return float(value)

    def examples(self) -> list[Any]:
        """Values the space is checked with before a search starts (its ends)."""
        return [self.low, self.high]


class IntRange(_Param):
    """An integer searched in ``[low, high]`` (``log``: on a log scale; ``step``: on a grid)."""

    low: int = Field(json_schema_extra=_END)
    high: int = Field(json_schema_extra=_END)
    log: bool = False
    step: int = Field(default=1, ge=1, json_schema_extra=unbounded("a step within [low, high]"))

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self

    def suggest(self, trial: Any, key: str) -> int:
        """This key's value in an Optuna trial."""
        return trial.suggest_int(key, self.low, self.high, log=self.log, step=self.step)

    def stored(self, value: Any) -> int | None:
        """``value`` as Optuna stores it for this param, or None where the space cannot take
        it."""
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        if not self.low <= value <= self.high or (value - self.low) % self.step:
            return None
        return value

    def examples(self) -> list[Any]:
        """Values the space is checked with before a search starts (its ends)."""
        return [self.low, self.high]


class Choice(_Param):
    """One of ``choices`` (scalars, lists or mappings)."""

    choices: list[Any] = Field(min_length=1)

    @property
    def _scalar(self) -> bool:
        return all(isinstance(c, Scalar) for c in self.choices)

    def suggest(self, trial: Any, key: str) -> Any:
        """This key's value in an Optuna trial (a list or mapping is chosen by its JSON text)."""
        if self._scalar:
            return trial.suggest_categorical(key, self.choices)
        # Optuna stores scalars only: lists and mappings are chosen by their JSON text.
        text = trial.suggest_categorical(key, [json.dumps(c) for c in self.choices])
        return json.loads(text)

    def stored(self, value: Any) -> Any:
        """``value`` as Optuna stores it for this param (a list or mapping: its JSON text), or
        None where it is not a choice."""
        if value not in self.choices:
            return None
        return value if self._scalar else json.dumps(value)

    def examples(self) -> list[Any]:
        """Values the space is checked with before a search starts (every choice)."""
        return list(self.choices)


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if not low <= high:
        raise ValueError(f"low {low} is above high {high}")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got {low}")
    if log and step is not None:
        raise ValueError("a log range takes no step")


Param = FloatRange | IntRange | Choice


class Budget(Section):
    """How trials are cut short: the pruner reads the validation metric after every epoch."""

    pruner: Literal["hyperband", "median", "none"] = Field(
        default="hyperband",
        description="hyperband: successive halving over epochs in brackets (Li et al. 2018); "
        "median: stop a trial below the median of earlier ones at the same epoch; none",
    )
    min_epochs: int = Field(
        default=1, ge=1, le=100_000, description="epochs every trial trains at least"
    )
    reduction_factor: int = Field(default=3, ge=2, le=1000, description="hyperband: 1/this go on")


class SamplerSettings(Section):
    # Optuna's samplers take numpy's 32-bit seeds, and worker k adds k
    """The search's sampler: the seed (worker k adds k) and the random trials before TPE."""

    seed: int = Field(
        default=0, ge=0, le=MAX_SEED // 2, description="worker k samples with seed + k"
    )
    startup_trials: int = Field(
        default=10, ge=0, le=100_000, description="random trials before TPE"
    )


class Space(Section):
    """A space file (see the module docstring)."""

    params: dict[str, Param] = Field(min_length=1)
    fixed: dict[str, Any] = Field(default_factory=dict)
    budget: Budget = Field(default_factory=Budget)
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)

    @model_validator(mode="before")
    @classmethod
    def _kinds(cls, tree: Any) -> Any:
        """Each param's kind from its keys: ``choices``; else ints at both ends; else floats."""
        if not isinstance(tree, dict) or not isinstance(tree.get("params"), dict):
            return tree
        params = {}
        for key, raw in tree["params"].items():
            if isinstance(raw, dict) and "choices" not in raw:
                ints = all(
                    isinstance(raw.get(end), int) and not isinstance(raw.get(end), bool)
                    for end in ("low", "high")
                ) and isinstance(raw.get("step", 1), int)
                params[key] = (IntRange if ints else FloatRange).model_validate(raw)
            elif isinstance(raw, dict):
                params[key] = Choice.model_validate(raw)
            else:
                raise ValueError(
                    f"params.{key}: a range {{low: .., high: ..}} or {{choices: [..]}}, not {raw!r}"
                )
        return {**tree, "params": params}

    @model_validator(mode="after")
    def _conditions(self) -> Space:
        seen: list[str] = []
        for key, param in self.params.items():
            for other in param.when:
                if other not in seen:
                    raise ValueError(
                        f"params.{key}: its condition names {other}, which is not a param "
                        "listed before it"
                    )
            seen.append(key)
            if key in self.fixed:
                raise ValueError(f"{key} is both a param and fixed")
        return self

    def base_values(self, config: Any) -> dict[str, Any]:
        """The params ``config`` (a validated :class:`~towerkit.config.Config`) sets to a value
        the space can take, as Optuna stores them: the study's trial 0
        (:meth:`optuna.Study.enqueue_trial`), so that a search starts from the config it
        improves on. A value outside the space is left to the sampler."""
        tree = config.model_dump(mode="json")
        values: dict[str, Any] = {}
        stored: dict[str, Any] = {}
        for key, param in self.params.items():
            if not param.applies(values):
                continue
            value: Any = tree
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            kept = param.stored(value)
            if kept is not None:
                values[key], stored[key] = value, kept
        return stored

    def sample(self, trial: Any) -> dict[str, Any]:
        """The values of one trial (conditional params only where their condition holds)."""
        values: dict[str, Any] = {}
        for key, param in self.params.items():
            if param.applies(values):
                values[key] = param.suggest(trial, key)
        return values


def read_space(path: str | Path) -> Space:
    """Read and validate a space file.

    Raises:
        TuneError: a missing or unreadable file, bad YAML, an unknown key, a bad range.
    """
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TuneError(f"{path}: cannot read the space file ({err.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise TuneError(f"{path}: not a valid YAML space file ({err})") from None
    if not isinstance(tree, dict):
        raise TuneError(f"{path}: a space file is a mapping with params (see towerkit tune --help)")
    try:
        return Space.model_validate(tree)
    except ValidationError as err:
        problems = []
        for error in err.errors()[:3]:
            where = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key (a space file has params, fixed, budget and sampler)"
            problems.append(f"{where + ': ' if where else ''}{message}")
        raise TuneError(f"{path}: {'; '.join(problems)}") from None


def trial_config(base: dict, space: Space, values: dict[str, Any], source: str) -> Config:
    """The config of one trial: the base config, the space's fixed keys, the trial's values."""
    tree = json.loads(json.dumps(base))
    for key, value in {**space.fixed, **values}.items():
        set_key(tree, key, value)
    return config_from_dict(tree, source=source)


def check_space(base: dict, space: Space, source: str) -> Config:
    """Refuse a space whose keys the config does not have, before any trial: each param at
    each end of its range (each choice), the others at their first value and conditions met.
    A failure that names another key, and persists without this one, is left to that key.
    Returns the base config with the fixed keys."""
    first = {key: param.examples()[0] for key, param in space.params.items()}
    for key, param in space.params.items():
        for value in param.examples():
            values = {**first, key: value}
            values = {k: v for k, v in values.items() if space.params[k].applies(values)}
            try:
                trial_config(base, space, values, source)
            except ConfigError as err:
                if key in str(err) or not _fails_without(base, space, values, key, source):
                    raise TuneError(
                        f"{source}: params.{key} = {value!r}: {_one_line(err)}"
                    ) from None
    try:
        return trial_config(base, space, {}, source)
    except ConfigError as err:
        raise TuneError(f"{source}: fixed: {_one_line(err)}") from None


def _one_line(err: ConfigError) -> str:
    """A config error's problems on one line, without its source (the caller names it)."""
    return "; ".join(err.problems)


def _fails_without(base, space, values, key, source) -> bool:
    """Whether the config fails without ``key`` too (the error is not this key's)."""
    try:
        trial_config(base, space, {k: v for k, v in values.items() if k != key}, source)
    except ConfigError:
        return True
    return False
