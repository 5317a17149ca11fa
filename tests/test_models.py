"""Models: the shared contract, the pitfalls of the library our users come from, and one test
per constructor argument showing that it changes the output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from towerkit.data.vocab import Vocab
from towerkit.models import DSSM, MODELS, YouTubeDNN
from towerkit.nn import MLP, FeatureEmbedding, HistoryPooling, PooledTowerOptions
from towerkit.types import Batch, FeatureTable

N_USERS, N_ITEMS, L = 6, 20, 5


def features() -> FeatureTable:
    table = FeatureTable()
    table.values["gender"] = np.array([0, 1, 2, 1, 2, 1, 1])
    table.kinds["gender"] = "categorical"
    table.vocabs["gender"] = Vocab(["F", "M"])
    table.values["genres"] = np.array([[0, 0], [1, 2], [2, 0], [3, 0], [1, 0], [2, 3], [0, 0]])
    table.kinds["genres"] = "multi"
    table.vocabs["genres"] = Vocab(["a", "b", "c"])
    table.values["year"] = np.array([0, 1990, 1995, 2000, 1980, 1999, 1970], dtype=np.float32)
    table.kinds["year"] = "numeric"
    return table


def item_features() -> FeatureTable:
    table = FeatureTable()
    table.values["genres"] = np.random.default_rng(0).integers(0, 4, (N_ITEMS + 1, 3))
    table.values["genres"][0] = 0
    table.kinds["genres"] = "multi"
    table.vocabs["genres"] = Vocab(["a", "b", "c"])
    return table


def batch() -> Batch:
    history = torch.tensor(
        [[0, 0, 0, 3, 4], [1, 2, 3, 4, 5], [0, 0, 0, 0, 7], [0, 0, 0, 0, 0]], dtype=torch.long
    )
    return Batch(torch.tensor([1, 2, 3, 4]), history, torch.tensor([5, 6, 8, 9]))


TOWER_OPTIONS = set(PooledTowerOptions.__dataclass_fields__)


def make(name: str, **kwargs):
    """A small model; PooledTowerOptions fields among ``kwargs`` shape its tower."""
    torch.manual_seed(0)
    tower = PooledTowerOptions(**{"hidden": (16,), **{k: kwargs.pop(k) for k in
                                                        TOWER_OPTIONS & set(kwargs)}})  # fmt: skip
    if name == "youtube_dnn":
        return YouTubeDNN(N_ITEMS, **{"max_len": L, "embedding_dim": 8, "tower": tower, **kwargs})
    kwargs = {"max_len": L, "embedding_dim": 8, "id_dim": 8, "tower": tower, **kwargs}
    return DSSM(N_USERS, N_ITEMS, **kwargs)


@pytest.mark.parametrize("name", ["youtube_dnn", "dssm"])
def test_contract(name):
    model = make(name, user_features=features()).eval()
    users = model.encode_users(batch())
    items = model.encode_items(torch.arange(1, N_ITEMS + 1))
    assert users.shape == (4, 8) and items.shape == (N_ITEMS, 8)
    # The same calls give the same vectors: no state (such as a mode) changes what they return.
    assert torch.equal(users, model.encode_users(batch()))
    assert torch.equal(items, model.encode_items(torch.arange(1, N_ITEMS + 1)))
    # A user's vector depends on its own row only (batch-first, no leakage between rows).
    torch.testing.assert_close(model.encode_users(Batch(*(t[1:2] for t in (
        batch().users, batch().history, batch().targets)))), users[1:2])  # fmt: skip
    # User vectors can be negative: the tower ends in a linear layer, not in ReLU.
    assert (users < 0).any()


@pytest.mark.parametrize("name", ["youtube_dnn", "dssm"])
def test_given_features_describe_a_user_the_model_never_saw(name):
    """A user described by side-feature values gets the vector of a known user with them."""
    model = make(name, user_features=features(), **({"use_user_id": False} if name == "dssm"
                                                   else {})).eval()  # fmt: skip
    known = batch()
    table = features()
    values = {n: torch.as_tensor(table.values[n])[known.users] for n in table.values}
    new = Batch(torch.zeros(4, dtype=torch.long), known.history, known.targets, values)
    torch.testing.assert_close(model.encode_users(new), model.encode_users(known))
    # Other values give other vectors; a feature left out is an error that names it.
    other = {**values, "gender": 3 - values["gender"]}
    changed = Batch(new.users, new.history, new.targets, other)
    assert not torch.allclose(model.encode_users(changed), model.encode_users(known))
    with pytest.raises(KeyError, match="year"):
        model.encode_users(Batch(new.users, new.history, new.targets, {"gender": values["gender"]}))


def test_mlp_ends_linear_even_with_relu():
    torch.manual_seed(0)
    mlp = MLP(4, [8, 8], 3, activation="relu", dropout=0.2).eval()
    with torch.no_grad():
        mlp[-1].bias.fill_(-100.0)  # an activation after it would clip this to zero
    assert (mlp(torch.randn(64, 4)) < -50).all()
    with torch.no_grad():
        mlp[-1].bias.zero_()
    out = mlp(torch.randn(64, 4))
    assert (out < 0).any() and (out == 0).float().mean() < 0.1
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLP(4, [8], 3, activation="swish")


def test_mean_pooling_ignores_padding():
    """The pitfall: padding slots counted in the mean, and the padding embedding trained."""
    pooling = HistoryPooling("mean", L, 4)
    embedded = torch.randn(2, L, 4)
    mask = torch.tensor([[False, False, False, True, True], [True] * L])
    pooled = pooling(embedded, mask)
    assert torch.allclose(pooled[0], embedded[0, 3:].mean(0))  # divided by 2, not 5
    assert torch.allclose(pooled[1], embedded[1].mean(0))
    # Garbage in the padding slots changes nothing.
    noisy = embedded.clone()
    noisy[0, :3] = 1e6
    assert torch.allclose(pooling(noisy, mask), pooled)
    # With the last three items beside the mean, the padded slot among them is zeros.
    with_recent = HistoryPooling("mean", L, 4, recent=3)(noisy, mask)
    assert with_recent.shape == (2, 16)
    assert torch.equal(with_recent[0, 4:8], torch.zeros(4))
    assert torch.equal(with_recent[0, 8:], embedded[0, 3:].flatten())


@pytest.mark.parametrize("mode", ["mean", "sum", "recency", "attention"])
def test_padding_never_trains_and_extra_padding_changes_nothing(mode):
    model = make("youtube_dnn", pooling=mode)
    b = batch()
    model.encode_users(b).sum().backward()
    assert model.history_embedding.weight.grad[0].abs().sum() == 0  # padding row gets no gradient
    assert model.history_embedding.weight[0].abs().sum() == 0
    # An empty history pools to zeros rather than NaN.
    empty = HistoryPooling(mode, L, 8)(torch.randn(1, L, 8), torch.zeros(1, L, dtype=torch.bool))
    assert torch.equal(empty, torch.zeros(1, 8))


def test_feature_embedding_kinds():
    emb = FeatureEmbedding(features(), dim=3)
    assert emb.out_dim == 9
    out = emb(torch.tensor([0, 1, 6]))
    assert out.shape == (3, 9)
    # Multi-valued: the masked mean of the value embeddings (user 1 has genres 1 and 2).
    table = emb.tables["genres"].weight
    assert torch.allclose(out[1, 3:6], (table[1] + table[2]) / 2)
    assert torch.equal(out[2, 3:6], torch.zeros(3))  # user 6 has no genre
    # Numeric values are standardised (years near 2000 would otherwise swamp everything).
    assert emb.values_year.abs().max() < 3 and emb.values_year[0] == 0
    # Given raw values are standardised the same way as the stored ones.
    given = {"gender": torch.tensor([1]), "genres": torch.tensor([[1, 2]]),
             "year": torch.tensor([1990.0])}  # user 1's values, raw  # fmt: skip
    torch.testing.assert_close(emb(torch.tensor([0]), given), out[1:2])


def users_out(model) -> torch.Tensor:
    return model.eval().encode_users(batch())


@pytest.mark.parametrize("name", ["youtube_dnn", "dssm"])
@pytest.mark.parametrize(
    ("argument", "a", "b"),
    [
        ("hidden", (16,), (16, 16)),
        ("activation", "relu", "tanh"),
        ("pooling", "mean", "recency"),
        ("feature_dim", 4, 8),
        ("recent_items", 0, 2),
    ],
)
def test_each_argument_changes_the_output(name, argument, a, b):
    first = users_out(make(name, user_features=features(), **{argument: a}))
    second = users_out(make(name, user_features=features(), **{argument: b}))
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("name", ["youtube_dnn", "dssm"])
def test_embedding_dim_and_dropout_and_features(name):
    assert users_out(make(name, embedding_dim=12)).shape == (4, 12)
    model = make(name, dropout=0.5)
    model.train()
    assert not torch.equal(model.encode_users(batch()), model.encode_users(batch()))
    assert not torch.allclose(
        users_out(make(name)), users_out(make(name, user_features=features()))
    )


def test_youtube_dnn_options():
    tied = make("youtube_dnn", share_embeddings=True).eval()
    ids = torch.arange(1, N_ITEMS + 1)
    # Tied: training the history table moves the item vectors too.
    with torch.no_grad():
        tied.history_embedding.weight[3] += 1.0
    assert torch.equal(tied.encode_items(ids)[2], tied.history_embedding.weight[3])
    untied = make("youtube_dnn").eval()
    before = untied.encode_items(ids).clone()
    with torch.no_grad():
        untied.history_embedding.weight[3] += 1.0
    assert torch.equal(untied.encode_items(ids), before)
    with pytest.raises(ValueError, match=r"recent items must lie in 0\.\.max_len"):
        make("youtube_dnn", recent_items=L + 1)


def test_dssm_options():
    with_features = make("dssm", item_features=item_features()).eval()
    without = make("dssm").eval()
    ids = torch.arange(1, N_ITEMS + 1)
    assert not torch.allclose(with_features.encode_items(ids), without.encode_items(ids))
    assert not torch.allclose(users_out(make("dssm")), users_out(make("dssm", recent_items=2)))
    # Without the user id, two users with the same history and features get the same vector.
    twins = Batch(torch.tensor([1, 2]), torch.tensor([[0, 0, 0, 3, 4]] * 2), torch.tensor([5, 5]))
    no_id = make("dssm", use_user_id=False).eval()
    a, b = no_id.encode_users(twins)
    assert torch.equal(a, b)
    a, b = make("dssm").eval().encode_users(twins)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_models_constructor_defaults_are_its_sections(name):
    """Each default a constructor shares with its config section is the section's value (the
    section is its one home), so a model built directly is the model a default config builds."""
    import inspect

    model_class = MODELS[name]
    section = model_class.config_class
    for parameter in inspect.signature(model_class.__init__).parameters.values():
        if parameter.name in section.model_fields and parameter.default is not parameter.empty:
            assert parameter.default == section.default(parameter.name), parameter.name
