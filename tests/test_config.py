"""Configuration: typos and wrong types get one clear message; overrides are typed."""

from __future__ import annotations

import pytest

from towerkit.config import Config, ConfigError, config_from_dict, load_config
from towerkit.objectives import Mode


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
    with pytest.raises(ConfigError, match="ks must contain 10"):
        config_from_dict({"eval": {"ks": [5, 20]}})
    with pytest.raises(ConfigError, match=r"temperature\.value: .*greater than 0"):
        config_from_dict({"temperature": {"value": 0}})


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


@pytest.mark.parametrize(
    "path",
    [
        "configs/ml-1m/youtube_dnn.yaml",
        "configs/ml-1m/dssm.yaml",
        "configs/ml-100k/youtube_dnn.yaml",
    ],
)
def test_shipped_configs_are_valid(path):
    from pathlib import Path

    load_config(Path(__file__).parent.parent / path)
