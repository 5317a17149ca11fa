"""Memory estimates made before any allocation: counted by hand here, checked against the model
as it is built, and refusing a size the machine cannot hold with one line naming the key."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import prepare_log, small_config, walk_log
from towerkit.config import ConfigError
from towerkit.models import MODELS
from towerkit.runs import pipeline
from towerkit.runs.budget import Cost, blame, check_memory, memory_costs
from towerkit.runs.components import build_model

MiB = 2**20
PARAMETERS = "the model's parameters with their gradients and AdamW's two moments"


def _by_what(costs: list[Cost]) -> dict[str, Cost]:
    return {cost.what: cost for cost in costs}


def _model_section(name: str) -> dict:
    section = {"name": name, "embedding_dim": 16}
    if name in ("youtube_dnn", "dssm"):
        section["hidden"] = [32]
    return section


@pytest.mark.parametrize("name", list(MODELS))
def test_parameters_are_counted_from_the_model_as_it_is_built(name, walk_prepared):
    config = small_config(model=_model_section(name))
    real = sum(p.numel() for p in build_model(config, walk_prepared).parameters())
    cost = _by_what(memory_costs(config, walk_prepared))[PARAMETERS]
    assert cost.nbytes == real * 4 * 4  # weights, gradients, two moments; float32
    assert f"{real:,} parameters" in cost.formula


def test_parameters_are_counted_with_numeric_and_multi_features(tmp_path):
    """Numeric features are standardised from the data as the model is built: on the meta
    device too (a bug once: the statistics were meta tensors with no values)."""
    lengths = np.random.default_rng(2).integers(10, 20, 50)
    prepared = prepare_log(
        walk_log(lengths, 40, seed=2),
        item_features=["year", "genres"],
        user_features=["age"],
        feature_kinds={"year": "numeric", "age": "numeric"},
    )
    for name in ("youtube_dnn", "dssm"):
        config = small_config(model=_model_section(name))
        real = sum(p.numel() for p in build_model(config, prepared).parameters())
        costs = _by_what(memory_costs(config, prepared))
        assert costs[PARAMETERS].nbytes == real * 16


def test_batch_negative_and_evaluation_costs_by_hand(walk_prepared):
    # youtube_dnn, D = 16, max_len 10, batch 128, 32 sampled negatives per query
    config = small_config(
        negatives={"kind": "sampled", "n": 32, "shared": False},
        eval={"batch_size": 100, "depth": 50},
    )
    costs = _by_what(memory_costs(config, walk_prepared))
    n_users, n_items = walk_prepared.encoded.n_users, walk_prepared.encoded.n_items
    # ids (8 bytes) and vectors with their gradients (16 dims x 4 bytes x 2) per position
    assert costs["a training batch's history ids and vectors"].nbytes == 128 * 10 * (8 + 128)
    assert costs["a training step's logits"].nbytes == 128 * 32 * 4 * 3
    sampled = costs["a training step's sampled item ids and vectors"]
    assert sampled.nbytes == 128 * 32 * (8 + 128)
    vectors = costs["the catalogue's and the users' vectors at evaluation"]
    assert vectors.nbytes == (n_items + n_users) * 16 * 4
    assert costs["an evaluation batch's history ids and vectors"].nbytes == 100 * 10 * (8 + 64)
    assert costs["the test stage's ranked lists (the model's and popularity's)"].nbytes == (
        n_users * 50 * 8 * 2
    )

    shared = small_config(negatives={"kind": "sampled", "n": 32, "shared": True})
    costs = _by_what(memory_costs(shared, walk_prepared))
    assert costs["a training step's sampled item ids and vectors"].nbytes == 32 * (8 + 128)

    full = _by_what(memory_costs(small_config(), walk_prepared))
    cost = full["a training step's logits over the whole catalogue (negatives.kind full)"]
    assert cost.nbytes == 128 * n_items * 4 * 3 and cost.keys == ("train.batch_size",)


def test_windows_and_attention_are_counted_per_position(walk_prepared):
    config = small_config(
        model={"name": "sasrec", "embedding_dim": 16, "n_heads": 2, "n_layers": 3},
        negatives={"kind": "in_batch"},
    )
    costs = _by_what(memory_costs(config, walk_prepared))
    # 128 windows of max_len 10 positions: 1,280 queries
    assert costs["a training batch's attention matrices"].nbytes == 128 * 10 * 10 * 2 * 3 * 4 * 2
    assert costs["a training step's logits"].nbytes == 1280 * 1280 * 4 * 3
    multi = small_config(model={"name": "mind", "embedding_dim": 16, "interests": 3})
    vectors = _by_what(memory_costs(multi, walk_prepared))[
        "the catalogue's and the users' vectors at evaluation"
    ]
    n_users, n_items = walk_prepared.encoded.n_users, walk_prepared.encoded.n_items
    assert vectors.nbytes == (n_items + n_users * 3) * 16 * 4


def test_the_key_named_is_the_one_set_furthest_above_its_default(walk_prepared):
    wide = small_config(model={"name": "youtube_dnn", "embedding_dim": 4096, "hidden": [32]})
    batch = _by_what(memory_costs(wide, walk_prepared))[
        "a training batch's history ids and vectors"
    ]
    assert blame(wide, batch) == "model.embedding_dim"  # 4096 / 64 beats max_len 10 / 50
    long = small_config(data={"max_len": 5000})
    assert blame(long, batch) == "data.max_len"
    dssm = small_config(model={"name": "dssm", "embedding_dim": 16, "id_dim": 2048, "hidden": [8]})
    batch = _by_what(memory_costs(dssm, walk_prepared))[
        "a training batch's history ids and vectors"
    ]
    assert blame(dssm, batch) == "model.id_dim"


def test_a_config_that_fits_passes_and_lists_its_costs_largest_first(walk_prepared):
    costs = check_memory(small_config(), walk_prepared)
    sizes = [cost.nbytes for cost in costs]
    assert sizes == sorted(sizes, reverse=True) and len(costs) >= 6


@pytest.mark.parametrize(
    ("sections", "key", "value"),
    [
        ({"data": {"max_len": 1 << 20}}, "data.max_len", "1,048,576"),
        ({"negatives": {"kind": "sampled", "n": 1 << 20, "shared": False}}, "negatives.n", None),
        ({"eval": {"max_bytes": 1 << 32}}, "eval.max_bytes", None),
        (
            {
                "model": {"name": "youtube_dnn", "embedding_dim": 8192, "hidden": [32]},
                "eval": {"max_bytes": 1 << 16},
            },
            "model.embedding_dim",
            "8,192",
        ),
    ],
)
def test_a_size_that_cannot_fit_is_one_line_naming_the_key(walk_prepared, sections, key, value):
    config = small_config(**sections)
    with pytest.raises(ConfigError) as caught:
        check_memory(config, walk_prepared, available=64 * MiB)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{key} = {value or ''}")
    assert "would take at least" in message and "64 MiB available" in message
    assert f"lower {key}" in message


def test_costs_that_fit_alone_but_not_together_are_refused(walk_prepared):
    config = small_config(negatives={"kind": "sampled", "n": 4096, "shared": False})
    costs = [c for c in memory_costs(config, walk_prepared) if c.step]
    largest, total = max(c.nbytes for c in costs), sum(c.nbytes for c in costs)
    config = config.model_copy(
        update={"eval": config.eval.model_copy(update={"max_bytes": 1 << 16})}
    )
    with pytest.raises(ConfigError, match="a training step would take at least"):
        check_memory(config, walk_prepared, available=(largest + total) // 2)
    check_memory(config, walk_prepared, available=total)


def test_training_refuses_before_writing_anything(walk_prepared, tmp_path):
    config = small_config(data={"max_len": 1 << 20}, eval={"batch_size": 1 << 20})
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"data\.max_len = 1,048,576"):
        pipeline.train(config, walk_prepared, run=run)
    assert not run.exists()
