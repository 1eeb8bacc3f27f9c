from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from services.trainer.model_training import (
    TrainConfig,
    TrainedModel,
    embed_items,
    embed_users,
    load_trained,
    save_trained,
    train,
)
from services.trainer.two_tower import (
    TowerConfig,
    TwoTowerModel,
    Vocabulary,
    export_towers,
    left_padded,
    tower_io,
)
from shared.events import Event, EventType, LoggedEvent

SMALL = TowerConfig(dim=16, content_dim=8, content_hidden=16, history_len=6, feedforward=32)


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)


def small_model(n_users: int = 5, n_items: int = 7) -> TwoTowerModel:
    torch.manual_seed(0)
    model = TwoTowerModel(n_users, n_items, torch.randn(n_items, SMALL.content_dim), SMALL)
    return model.eval()


def user_inputs(histories: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    padded = [left_padded(h, [1.0] * len(h), SMALL.history_len) for h in histories]
    users = torch.arange(1, len(histories) + 1).unsqueeze(1)
    rows = torch.from_numpy(np.stack([rows for rows, _ in padded]))
    weights = torch.from_numpy(np.stack([weights for _, weights in padded]))
    return users, rows, weights


def test_vocabulary_gives_distinct_rows_from_one_when_ids_are_added() -> None:
    vocabulary = Vocabulary(["b", "a"])
    assert vocabulary.add(["a", "c", "c", "d"]) == 2
    assert [vocabulary.row(i) for i in ("b", "a", "c", "d")] == [1, 2, 3, 4]
    assert len(vocabulary) == 5
    assert vocabulary.ids == ["b", "a", "c", "d"]
    many = Vocabulary(f"item-{n}" for n in range(5000))
    assert sorted(many.rows(many.ids).tolist()) == list(range(1, 5001))


def test_vocabulary_maps_unknown_ids_to_row_zero_when_looked_up() -> None:
    vocabulary = Vocabulary(["a"])
    assert vocabulary.row("zzz") == 0
    assert vocabulary.rows(["a", "zzz"]).tolist() == [1, 0]


def test_vocabulary_round_trips_through_json_when_saved() -> None:
    vocabulary = Vocabulary(["x", "y", "é"])
    restored = Vocabulary.from_json(vocabulary.to_json())
    assert restored.ids == vocabulary.ids and restored.row("y") == 2


def test_vocabulary_rejects_json_when_an_id_repeats() -> None:
    with pytest.raises(ValueError, match="repeat"):
        Vocabulary.from_json('{"ids": ["a", "a"]}')


def test_towers_give_unit_vectors_of_the_configured_size_when_called() -> None:
    model = small_model()
    users, rows, weights = user_inputs([[1, 2, 3], [4]])
    user_vectors = model.user_tower(users, rows, weights)
    item_vectors = model.item_tower(torch.tensor([[1], [2]]), torch.randn(2, SMALL.content_dim))
    for vectors in (user_vectors, item_vectors):
        assert vectors.shape == (2, SMALL.dim)
        assert torch.allclose(vectors.norm(dim=1), torch.ones(2), atol=1e-5)


def test_user_tower_gives_a_finite_vector_when_history_is_empty_and_user_unknown() -> None:
    model = small_model()
    rows = torch.zeros(1, SMALL.history_len, dtype=torch.int64)
    with torch.no_grad():
        vector = model.user_tower(torch.zeros(1, 1, dtype=torch.int64), rows, torch.zeros(1, 6))
    assert torch.isfinite(vector).all() and abs(float(vector.norm()) - 1.0) < 1e-5


def test_user_tower_changes_the_vector_when_a_new_event_joins_the_history() -> None:
    model = small_model()
    before = model.user_tower(*user_inputs([[1, 2]]))
    after = model.user_tower(*user_inputs([[1, 2, 5]]))
    assert not torch.allclose(before, after)


def test_item_tower_places_an_unseen_item_by_its_content_when_row_is_zero() -> None:
    model = small_model()
    content = torch.randn(2, SMALL.content_dim)
    vectors = model.item_tower(torch.zeros(2, 1, dtype=torch.int64), content)
    assert torch.isfinite(vectors).all()
    assert not torch.allclose(vectors[0], vectors[1])


def test_grow_keeps_trained_rows_and_adds_small_ones_when_ids_arrive() -> None:
    model = small_model(n_users=3, n_items=4)
    users = model.user_tower.user_embedding.weight.detach().clone()
    items = model.item_encoder.id_embedding.weight.detach().clone()
    content = torch.randn(6, SMALL.content_dim)
    model.grow(5, 6, content)
    assert torch.equal(model.user_tower.user_embedding.weight[:3], users)
    assert torch.equal(model.item_encoder.id_embedding.weight[:4], items)
    assert model.item_tower.encoder.id_embedding is model.item_encoder.id_embedding
    assert float(model.item_encoder.id_embedding.weight[4:].detach().abs().max()) < 0.1
    assert torch.equal(model.item_content[1:], content[1:])
    assert not model.item_content[0].any()


def test_exported_towers_match_the_eager_ones_when_loaded_back(tmp_path: Path) -> None:
    model = small_model()
    paths = export_towers(model, tmp_path)
    inputs = user_inputs([[1, 2, 3], [], [6, 6]])
    item_rows, content = torch.tensor([[1], [0]]), torch.randn(2, SMALL.content_dim)
    user_tower = torch.jit.load(str(paths["user_tower"]))
    item_tower = torch.jit.load(str(paths["item_tower"]))
    with torch.no_grad():
        assert torch.allclose(user_tower(*inputs), model.user_tower(*inputs), atol=1e-6)
        expected = model.item_tower(item_rows, content)
        assert torch.allclose(item_tower(item_rows, content), expected, atol=1e-6)


def test_exported_towers_take_the_inputs_named_in_tower_io_when_served(tmp_path: Path) -> None:
    model = small_model()
    export_towers(model, tmp_path)
    io = tower_io(SMALL)
    for name, tower in (("user_tower", model.user_tower), ("item_tower", model.item_tower)):
        arguments = list(inspect.signature(tower.forward).parameters)
        assert arguments == [spec.name for spec in io[name].inputs]
        assert [spec.name for spec in io[name].outputs] == ["embedding"]
    assert io["user_tower"].inputs[1].dims == (SMALL.history_len,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_exported_towers_run_on_cuda_when_moved_there(tmp_path: Path) -> None:
    paths = export_towers(small_model(), tmp_path)
    user_tower = torch.jit.load(str(paths["user_tower"]), map_location="cuda")
    inputs = [t.cuda() for t in user_inputs([[1, 2], []])]
    assert user_tower(*inputs).device.type == "cuda"


def planted_events() -> list[LoggedEvent]:
    """Half the users touch A then B, the other half C then D, among random other items."""
    rng = np.random.default_rng(0)
    events: list[LoggedEvent] = []
    for user in range(80):
        first, then = ("A", "B") if user % 2 else ("C", "D")
        others = [f"i{n}" for n in rng.choice(20, size=3, replace=False)]
        for item in [*others[:2], first, then, others[2]]:
            event = Event(
                f"e{len(events)}", f"u{user}", item, EventType.RATE, 4.0, float(len(events))
            )
            events.append(LoggedEvent(len(events) + 1, event))
    return events


def planted_content() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = ["A", "B", "C", "D", "NEW"] + [f"i{n}" for n in range(20)]
    return {i: rng.standard_normal(SMALL.content_dim).astype(np.float32) for i in ids}


@pytest.fixture(scope="module")
def planted() -> TrainedModel:
    torch.set_num_threads(2)
    config = TrainConfig(
        epochs=40,
        batch_size=32,
        lr=1e-2,
        warmup_steps=10,
        uniform_negatives=16,
        newcomer_share=0.0,  # B and D are equally popular: only the history tells them apart
        holdout_fraction=0.1,
        max_seconds=60,
        threads=1,  # a model this small only waits on a second thread
    )
    return train(planted_events(), planted_content(), config, tower=SMALL)


def test_training_learns_what_follows_an_item_when_a_pattern_is_planted(
    planted: TrainedModel,
) -> None:
    catalogue = [i for i in planted_content() if i not in ("A", "C")]
    items = embed_items(planted, catalogue, planted_content())
    users = embed_users(planted, ["newcomer", "other"], [[("A", 2.0)], [("C", 2.0)]])
    scores = users @ items.T
    assert catalogue[int(np.argmax(scores[0]))] == "B"
    assert catalogue[int(np.argmax(scores[1]))] == "D"


def test_training_reports_held_out_metrics_and_the_last_offset_when_done(
    planted: TrainedModel,
) -> None:
    assert 0.0 <= planted.metrics["recall@20"] <= 1.0
    assert planted.trained_through_offset == len(planted_events())
    assert planted.events_used == len(planted_events())
    assert planted.item_counts[planted.items.row("B")] == 40


def test_embed_items_gives_a_finite_unit_vector_when_item_has_only_content(
    planted: TrainedModel,
) -> None:
    vectors = embed_items(planted, ["NEW", "never-heard-of"], planted_content())
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_saved_model_gives_the_same_vectors_when_loaded(
    planted: TrainedModel, tmp_path: Path
) -> None:
    save_trained(planted, tmp_path)
    restored = load_trained(tmp_path)
    histories = [[("A", 2.0), ("i3", 1.0)]]
    assert np.allclose(
        embed_users(restored, ["u1"], histories), embed_users(planted, ["u1"], histories)
    )
    content = planted_content()
    assert np.allclose(
        embed_items(restored, ["B", "NEW"], content), embed_items(planted, ["B", "NEW"], content)
    )
    assert restored.items.ids == planted.items.ids and restored.metrics == planted.metrics


def test_warm_start_grows_the_tables_and_leaves_the_previous_model_when_ids_arrive(
    planted: TrainedModel,
) -> None:
    before = planted.model.item_encoder.id_embedding.weight.detach().clone()
    extra = Event("late", "u999", "NEW", EventType.RATE, 5.0, 10_000.0)
    events = [*planted_events(), LoggedEvent(len(planted_events()) + 1, extra)]
    config = TrainConfig(
        epochs=0.2, batch_size=32, uniform_negatives=4, holdout_fraction=0.0, threads=1
    )
    warm = train(events, planted_content(), config, previous=planted)
    assert warm.items.row("NEW") == len(planted.items)
    assert warm.users.row("u999") == len(planted.users)
    assert warm.model.n_items == len(warm.items)
    assert torch.equal(planted.model.item_encoder.id_embedding.weight, before)
