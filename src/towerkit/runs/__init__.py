"""A training run, from config and data to a finished run directory.

- :mod:`~towerkit.runs.rundir`: :class:`RunDir`, the directory a run lives in (everything
  needed to use the model and to resume its training);
- :mod:`~towerkit.runs.preparation`: data as the config's ``data`` section says;
- :mod:`~towerkit.runs.components`: the model, task, batches and evaluators from a config;
- :mod:`~towerkit.runs.budget`: the memory a run will take, checked before it starts;
- :mod:`~towerkit.runs.tracking`: TensorBoard and MLflow;
- :mod:`~towerkit.runs.pipeline`: prepare -> check -> build -> fit -> finish;
- :mod:`~towerkit.runs.lifecycle`: the one owner of a run's processes, signals and log;
- :mod:`~towerkit.runs.processes`: the processes a run or a study starts, and SIGTERM as
  Ctrl-C.
"""

from towerkit import _lazy

__all__ = ["RunDir", "RunDirError", "SavedVocabularies", "migrate", "vectors_column"]

_RUNDIR = [
    "CARRIED_LOG_FILE",
    "CHECKPOINT_FILE",
    "FEATURES_DIR",
    "FORMAT_VERSION",
    "ITEMS_FILE",
    "LOG_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "OUTCOMES_FILE",
    "RUN_FILE",
    "USERS_FILE",
    "VOCAB_DIR",
    "RunDir",
    "RunDirError",
    "SavedVocabularies",
    "migrate",
    "vectors_column",
]

__getattr__, __dir__ = _lazy(__name__, dict.fromkeys(_RUNDIR, "rundir"))
