"""Configuration: typos and wrong types get one clear message; overrides are typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from towerkit.config import Config, ConfigError, config_from_dict, load_config
from towerkit.task.objectives import Mode


def test_defaults_and_round_trip(tmp_path):
    config = Config()
    assert config.train.mode is Mode.LISTWISE and config.negatives.kind == "full"
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config
    assert "mode: listwise" in config.to_yaml()


def test_typo_lists_the_allowed_keys():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"model": {"hiden": [64]}})
    message = str(err.value)
    assert "model.hiden: unknown key" in message
    assert "embedding_dim" in message and "hidden" in message and "pooling" in message
    with pytest.raises(ConfigError, match="trian: unknown key; allowed here: data, model"):
        config_from_dict({"trian": {}})


def test_wrong_types_and_values():
    with pytest.raises(ConfigError, match=r"train\.epochs: .*integer.*'ten'"):
        config_from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"similarity\.name: .*'cosine', 'dot' or 'euclidean'"):
        config_from_dict({"similarity": {"name": "manhattan"}})
    with pytest.raises(ConfigError, match="unknown training mode 7"):
        config_from_dict({"train": {"mode": 7}})
    with pytest.raises(ConfigError, match=r"train.monitor ndcg@10 needs K=10 in eval.ks \[5, 20\]"):
        config_from_dict({"eval": {"ks": [5, 20]}})
    assert config_from_dict({"eval": {"ks": [5, 20]}, "train": {"monitor": "hr@20"}})
    with pytest.raises(ConfigError, match=r"temperature\.value: .*greater than 0"):
        config_from_dict({"temperature": {"value": 0}})


def test_a_key_the_model_does_not_use_is_refused_with_the_keys_it_does():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"model": {"name": "youtube_dnn"}}, ["model.n_heads=8"])
    message = str(err.value)
    assert "model.n_heads: unknown key for youtube_dnn" in message
    assert "pooling" in message and "share_embeddings" in message and "n_layers" not in message
    with pytest.raises(ConfigError, match=r"model.hidden: unknown key for sasrec; .*n_heads"):
        config_from_dict({"model": {"name": "sasrec", "hidden": [999]}})
    with pytest.raises(ConfigError, match=r"model.hidden_size: unknown key for youtube_dnn"):
        config_from_dict({"model": {"hidden_size": 999}})  # name left out: youtube_dnn
    with pytest.raises(
        ConfigError, match=r"model.name: unknown model name 'bert4rec'; use one of: "
    ):
        config_from_dict({"model": {"name": "bert4rec"}})
    with pytest.raises(ConfigError, match="model: expected a section"):
        config_from_dict({"model": "sasrec"})
    with pytest.raises(ConfigError, match="divisible by n_heads 3"):
        config_from_dict({"model": {"name": "sasrec", "n_heads": 3}})
    # Each model's own defaults.
    assert config_from_dict({"model": {"name": "gru4rec"}}).model.n_layers == 1
    assert config_from_dict({"model": {"name": "sasrec"}}).model.dropout == 0.2
    assert not config_from_dict({}).model.share_embeddings


def test_negatives_have_one_shape_per_kind():
    allowed = r"negatives.n: unknown key for full; allowed here: exclude_seen, kind"
    with pytest.raises(ConfigError, match=allowed):
        config_from_dict({"negatives": {"kind": "full", "n": 32}})
    with pytest.raises(ConfigError, match=r"negatives.sampler: unknown key for in_batch"):
        config_from_dict({"negatives": {"kind": "in_batch", "sampler": "uniform"}})
    mixed = config_from_dict({"negatives": {"kind": "mixed", "n": 8, "logq": False}}).negatives
    assert (mixed.n, mixed.logq, mixed.mask_hits) == (8, False, True)
    with pytest.raises(ConfigError, match=r"negatives.kind: unknown negatives kind 'hard'"):
        config_from_dict({"negatives": {"kind": "hard"}})


def test_cross_field_checks_fail_before_any_data():
    with pytest.raises(ConfigError, match=r"value 20.0 must lie in \[min_value, max_value\]"):
        config_from_dict({"temperature": {"value": 20.0}})
    assert config_from_dict({"temperature": {"value": 20.0, "max_value": 50.0}})
    with pytest.raises(ConfigError, match=r"train.windows applies to .*sasrec always trains"):
        config_from_dict({"model": {"name": "sasrec"}, "train": {"windows": 50}})
    with pytest.raises(ConfigError, match=r"train.windows applies to .*dssm pools no history"):
        config_from_dict({"model": {"name": "dssm"}, "train": {"windows": 50}})
    with pytest.raises(ConfigError, match="normalize applies to euclidean only"):
        config_from_dict({"similarity": {"name": "cosine", "normalize": True}})
    with pytest.raises(ConfigError, match=r"train.monitor: the monitor is a validation metric"):
        config_from_dict({"train": {"monitor": "auc"}})
    with pytest.raises(ConfigError, match=r"data.dataset: unknown data set; known data sets"):
        config_from_dict({"data": {"dataset": "ml-2m"}})


def test_the_split_is_chosen_in_the_config():
    assert config_from_dict({}).data.split.kind == "leave_one_out"
    split = config_from_dict(
        {"data": {"split": {"kind": "temporal", "test_start": "2000-12-01",
                            "valid_start": 975_000_000}}}
    ).data.split  # fmt: skip
    assert (split.test_start, split.valid_start) == (975_628_800, 975_000_000)
    with pytest.raises(ConfigError, match="must not come after test_start"):
        config_from_dict({"data": {"split": {"kind": "temporal", "test_start": 1,
                                             "valid_start": 2}}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"data.split.test_start: unknown key for leave_one_out"):
        config_from_dict({"data": {"split": {"test_start": 1}}})


def test_choices_are_the_components_own():
    """The config accepts exactly the names each component defines."""
    from typing import get_args

    from towerkit.config import SampledNegativesConfig, SASRecConfig, YouTubeDNNConfig
    from towerkit.index import INDEXES
    from towerkit.models import MODELS
    from towerkit.nn import HistoryPooling, activation_layer
    from towerkit.task.negatives import CatalogueSampler

    activations = get_args(YouTubeDNNConfig.model_fields["activation"].annotation)
    assert all(activation_layer(name) for name in activations)
    for pooling in get_args(YouTubeDNNConfig.model_fields["pooling"].annotation):
        HistoryPooling(pooling, 5, 4)
    counts = [0, 1, 2]
    for sampler in get_args(SampledNegativesConfig.model_fields["sampler"].annotation):
        CatalogueSampler.build(sampler, counts)
    assert set(get_args(SASRecConfig.model_fields["layer_norm"].annotation)) == {"pre", "post"}
    index = Config.model_fields["eval"].annotation.model_fields["index"].annotation
    assert set(get_args(index)) == set(INDEXES)
    for name in MODELS:
        assert config_from_dict({"model": {"name": name}}).model.name == name


def test_integer_modes_are_aliases():
    assert config_from_dict({"train": {"mode": 0}}).train.mode is Mode.POINTWISE
    assert config_from_dict({"train": {"mode": 1}}).train.mode is Mode.PAIRWISE
    assert config_from_dict({"train": {"mode": "2"}}).train.mode is Mode.LISTWISE


def test_overrides_are_parsed_as_yaml():
    config = config_from_dict(
        {"train": {"epochs": 5}},
        [
            "train.epochs=2",
            "model.hidden=[128, 64]",
            "negatives.kind=in_batch",
            "data.min_rating=4",
        ],
    )
    assert config_from_dict({}, ["model={name: sasrec, n_heads: 2}"]).model.n_heads == 2
    assert config.train.epochs == 2 and config.model.hidden == [128, 64]
    assert config.negatives.kind == "in_batch" and config.data.min_rating == 4.0
    base = {"model": {"hidden": [8]}}
    config_from_dict(base, ["model.hidden=[16]", "model.dropout=0.5"])
    assert base == {"model": {"hidden": [8]}}  # the caller's tree is left as it was
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        config_from_dict({}, ["train.epochs"])
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        config_from_dict({}, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="'epochs' is not a section"):
        config_from_dict({}, ["train.epochs=3", "train.epochs.x=1"])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad)


CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize(
    "path",
    sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml") if ".space." not in p.name),
)
def test_shipped_configs_are_valid(path):
    load_config(CONFIGS / path)


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.space.yaml"))
)
def test_shipped_search_spaces_fit_their_configs(path):
    """``NAME.space.yaml`` (or ``NAME.WHAT.space.yaml``, a second space) is a search space of
    ``NAME.yaml`` beside it: every key exists."""
    from towerkit.config import read_config_tree
    from towerkit.tune import check_space, read_space

    space = CONFIGS / path
    config = space.with_name(space.name.split(".")[0] + ".yaml")
    check_space(read_config_tree(config), read_space(space), str(space))
