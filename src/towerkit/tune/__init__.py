"""``towerkit tune``: a hyperparameter search with Optuna over a config's keys.

A *space file* names config keys with ranges or choices::

    params:
      train.lr: {low: 0.0005, high: 0.005, log: true}      # a float range (log scale)
      model.n_layers: {low: 1, high: 3}                    # an int range (both ends ints)
      model.dropout: {low: 0.2, high: 0.6, step: 0.1}
      negatives.kind: {choices: [full, sampled]}
      negatives.n: {low: 64, high: 1024, log: true, when: {negatives.kind: sampled}}
    fixed: {train.epochs: 20}                              # every trial's, not searched
    budget: {pruner: hyperband, min_epochs: 2, reduction_factor: 3}
    sampler: {seed: 0, startup_trials: 8}

A param with ``when`` is sampled only when the earlier params it names took one of the given
values (otherwise the config's own value stands).

A study (:func:`~towerkit.tune.runner.tune`) lives in a directory: Optuna's SQLite storage
``study.db``, the base config and the space as given, one run directory per trial under
``trials/``, and when it ends ``best.yaml`` (the best trial's resolved config),
``summary.json`` and ``study.html`` (its history, learning curves, parameter importances,
offline). The objective is the config's
``train.monitor`` on the **validation** stage: trials are trained with the test stage never
read (:func:`towerkit.runs.pipeline.train` with ``test=False``); the best trial alone is then
ranked once on the test stage (:func:`towerkit.runs.pipeline.test_run`).

Budget: the TPE sampler proposes, a multi-fidelity pruner (Hyperband by default; the resource
is the epoch) reads every epoch's validation metric through the trainer and stops trials that
trail the others at the same epoch; a trial that is not pruned trains in full, so the best
trial's run is a full training (re-training it would repeat the same seeded computation).

``workers`` processes share the storage, each with ``cores / workers`` torch threads; trials
are counted under a file lock, so a study of N trials has exactly N (failed trials count;
trials cut by Ctrl-C do not, and ``resume`` runs the study on to N).

The package, one job a file:

- :mod:`~towerkit.tune.space`: the space file, checked against the config;
- :mod:`~towerkit.tune.study`: the study directory, its lock, the pruner, the summary;
- :mod:`~towerkit.tune.worker`: a worker's trials;
- :mod:`~towerkit.tune.runner`: :func:`tune`, the processes and the finish;
- :mod:`~towerkit.tune.page`: the study's page.
"""

from towerkit import _lazy

__all__ = ["Space", "StudyDir", "StudySummary", "TuneError", "read_space", "tune", "work"]

__getattr__, __dir__ = _lazy(
    __name__,
    {
        **dict.fromkeys(
            ["TuneError", "FloatRange", "IntRange", "Choice", "Budget", "SamplerSettings",
             "Space", "read_space", "trial_config", "check_space"],
            "space",
        ),
        **dict.fromkeys(["StudyDir", "StudySummary", "describe_budget"], "study"),
        "work": "worker",
        "tune": "runner",
        "write_page": "page",
    },
)  # fmt: skip
