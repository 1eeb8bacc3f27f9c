"""The continual learner without Ray or gRPC: micro-batches, replay, checkpoints, scores."""

from __future__ import annotations

import asyncio
import gc
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from services.trainer.continual_learner import (
    Accounting,
    ContinualConfig,
    ContinualLearner,
    ReplayBuffer,
    checkpoint_users,
    copy_trained,
    forget_in_checkpoint,
)
from services.trainer.model_training import SampleBuilder, TrainConfig, TrainedModel, train, update
from services.trainer.two_tower import TowerConfig, Vocabulary
from shared.events import Event, EventType, LoggedEvent

SMALL = TowerConfig(dim=16, content_dim=8, content_hidden=16, history_len=6, feedforward=32)
TRAIN = TrainConfig(
    epochs=10,
    batch_size=32,
    lr=1e-2,
    warmup_steps=5,
    uniform_negatives=16,
    newcomer_share=0.0,
    holdout_fraction=0.0,
    max_seconds=30,
    threads=1,
)
CONTINUAL = ContinualConfig(lr=5e-3, batch_size=32, replay_ratio=1.0, replay_capacity=200)


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def events(users: range, first_offset: int = 1, items: tuple[str, ...] = ()) -> list[LoggedEvent]:
    """Odd users touch A then B, even users C then D, among random other items."""
    rng = np.random.default_rng(first_offset)
    out: list[LoggedEvent] = []
    for user in users:
        pair = ("A", "B") if user % 2 else ("C", "D")
        others = [f"i{n}" for n in rng.choice(20, size=3, replace=False)]
        for item in [*others[:2], *pair, *items, others[2]]:
            offset = first_offset + len(out)
            event = Event(f"e{offset}", f"u{user}", item, EventType.RATE, 4.0, float(offset))
            out.append(LoggedEvent(offset, event, appended_at=1000.0 + offset))
    return out


def content() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = ["A", "B", "C", "D", "NEW"] + [f"i{n}" for n in range(20)]
    return {i: rng.standard_normal(SMALL.content_dim).astype(np.float32) for i in ids}


@pytest.fixture(scope="module")
def base() -> tuple[TrainedModel, list[LoggedEvent]]:
    torch.set_num_threads(1)
    history = events(range(40))
    return train(history, content(), TRAIN, tower=SMALL), history


def learner_from(base: tuple[TrainedModel, list[LoggedEvent]]) -> ContinualLearner:
    trained, history = base
    copy = train(history, content(), TRAIN, tower=SMALL)  # the fixture stays untouched
    assert copy.trained_through_offset == trained.trained_through_offset
    return ContinualLearner.start(copy, history, CONTINUAL, TRAIN, content())


def test_learner_adds_rows_and_accounts_every_offset_once_when_batches_arrive(
    base: tuple[TrainedModel, list[LoggedEvent]],
) -> None:
    learner = learner_from(base)
    start = learner.offset + 1
    fresh = events(range(40, 60), first_offset=start, items=("NEW",))
    first, second = fresh[:50], fresh[50:]
    report = learner.learn(first)
    again = learner.learn(first + second)  # the first batch again: only its new part counts
    assert report.events == 50 and again.events == len(second)
    assert learner.offset == fresh[-1].offset
    assert learner.accounting.events_learned == len(base[1]) + len(fresh)
    assert learner.accounting.offset_sum == sum(e.offset for e in base[1] + fresh)
    assert learner.trained.items.row("NEW") > 0
    assert learner.trained.model.n_items == len(learner.trained.items)
    assert learner.trained.users.row("u59") > 0
    assert learner.trained.newest_event_appended_at == fresh[-1].appended_at


def test_learner_scores_each_batch_before_learning_it_against_the_live_model(
    base: tuple[TrainedModel, list[LoggedEvent]],
) -> None:
    learner = learner_from(base)
    live = learner.snapshot()
    fresh = events(range(40, 80), first_offset=learner.offset + 1)
    report = learner.learn(fresh, live=live)
    assert report.candidate.events == report.live.events == len(fresh)
    # The model learned the planted pattern: B after A is ranked high, far above chance.
    assert report.candidate.hits / report.candidate.events > 0.3
    window = learner.window
    assert window.candidate.events == len(fresh) and window.live.events == len(fresh)


def test_learner_resumes_from_a_checkpoint_exactly_where_it_stood(
    base: tuple[TrainedModel, list[LoggedEvent]], tmp_path: Path
) -> None:
    learner = learner_from(base)
    fresh = events(range(40, 70), first_offset=learner.offset + 1, items=("NEW",))
    learner.learn(fresh[:60])
    learner.save(tmp_path / "checkpoint")
    restored = ContinualLearner.load(tmp_path / "checkpoint", CONTINUAL, TRAIN, content())
    learner.learn(fresh[60:])
    restored.learn(fresh[60:])
    assert restored.accounting == learner.accounting
    for (name, a), (_, b) in zip(
        learner.trained.model.state_dict().items(),
        restored.trained.model.state_dict().items(),
        strict=True,
    ):
        assert torch.equal(a, b), name
    assert restored.trained.items.ids == learner.trained.items.ids


def test_checkpoint_appears_whole_or_not_at_all_when_written_again(
    base: tuple[TrainedModel, list[LoggedEvent]], tmp_path: Path
) -> None:
    learner = learner_from(base)
    target = tmp_path / "checkpoint"
    learner.save(target)
    learner.save(target)  # replaces the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_forgotten_user_leaves_no_trace_in_the_learner_or_its_checkpoint(
    base: tuple[TrainedModel, list[LoggedEvent]], tmp_path: Path
) -> None:
    learner = learner_from(base)
    row = learner.trained.users.row("u3")
    assert row and learner.trained.model.user_tower.user_embedding.weight[row].abs().sum() > 0
    other = learner.trained.users.row("u4")
    kept = learner.trained.model.user_tower.user_embedding.weight[other].clone()
    learner.save(tmp_path / "before")

    forgotten = learner.forget(["u3", "nobody"])

    assert set(forgotten) == {"u3"} and forgotten["u3"].replay_samples > 0
    assert "u3" not in learner.trained.users and "u3" not in learner.builder.histories
    assert "u3" not in learner.builder._visits
    assert not (learner.buffer.samples.users == row).any()
    assert learner.trained.model.user_tower.user_embedding.weight[row].abs().sum() == 0
    assert torch.equal(learner.trained.model.user_tower.user_embedding.weight[other], kept)
    assert learner.trained.users.row("u4") == other  # the other users keep their rows
    snapshot = learner.snapshot()
    assert "u3" not in snapshot.users

    # A checkpoint written before the forget is written again without the user.
    assert "u3" in checkpoint_users(tmp_path / "before")
    found = forget_in_checkpoint(tmp_path / "before", {"u3"}, CONTINUAL, TRAIN)
    assert found == {"u3"}
    pickled = _pickled(tmp_path / "before" / "learner.pt")
    assert _as_pickled("u4") in pickled and _as_pickled("u3") not in pickled
    restored = ContinualLearner.load(tmp_path / "before", CONTINUAL, TRAIN, content())
    assert "u3" not in restored.trained.users and "u3" not in checkpoint_users(tmp_path / "before")

    # The same id later is a new user with a new row.
    learner.learn(events(range(3, 4), first_offset=learner.offset + 1))
    assert learner.trained.users.row("u3") > row


def _pickled(path: Path) -> bytes:
    """The checkpoint's pickled objects (where ids are), without its tensor data."""
    with zipfile.ZipFile(path) as archive:
        return b"".join(archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))


def _as_pickled(text: str) -> bytes:
    """How pickle writes a short str: BINUNICODE, a 4-byte length, the UTF-8 bytes."""
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def test_accounting_refuses_an_offset_learned_before() -> None:
    accounting = Accounting()
    accounting.add(events(range(1)))
    with pytest.raises(ValueError, match="learned already"):
        accounting.add(events(range(1)))


def test_replay_buffer_keeps_a_uniform_sample_of_everything_when_full() -> None:
    builder = SampleBuilder(Vocabulary(), Vocabulary(), 4)
    samples = builder.add(events(range(400)))
    buffer = ReplayBuffer(500, 4)
    rng = np.random.default_rng(0)
    for start in range(0, len(samples), 100):
        buffer.add(samples.take(slice(start, start + 100)), rng)
    assert len(buffer) == 500 and buffer.seen == len(samples)
    kept = buffer.samples.offsets
    # Early and late samples are both there, about in proportion.
    assert 0.35 < float(np.mean(kept < len(samples) / 2)) < 0.65
    assert len(buffer.draw(64, rng)) == 64


def test_a_model_that_stopped_earlier_is_compared_on_the_events_after_it(
    base: tuple[TrainedModel, list[LoggedEvent]],
) -> None:
    learner = learner_from(base)
    stopped_at = learner.offset
    fresh = events(range(40, 60), first_offset=stopped_at + 1)
    learner.learn(fresh[:40])
    learner.learn(fresh[40:])
    challenger, incumbent = learner.compare_after(fresh[29].offset, base[0])
    assert challenger.events == incumbent.events == len(fresh) - 30
    assert challenger.per_event.size == incumbent.per_event.size == len(fresh) - 30


def test_a_large_batch_is_scored_for_the_gate_on_a_sample_and_learned_whole(
    base: tuple[TrainedModel, list[LoggedEvent]],
) -> None:
    learner = learner_from(base)
    learner.config = replace(learner.config, gate_sample=20)
    fresh = events(range(40, 60), first_offset=learner.offset + 1)

    report = learner.learn(fresh, live=base[0])

    assert report.events == len(fresh) == 100  # 20 users, 5 events each
    assert report.candidate.events == report.live.events == 20
    assert learner.window.candidate.events == 20
    assert learner.accounting.events_learned == len(base[1]) + len(fresh)


def test_a_fresh_optimizer_warms_up_instead_of_moving_every_weight_by_the_full_rate(
    base: tuple[TrainedModel, list[LoggedEvent]],
) -> None:
    trained, history = base
    builder = SampleBuilder(Vocabulary(trained.users.ids), Vocabulary(trained.items.ids), 6)
    samples = builder.add(history)

    def moved(steps_before: int) -> float:
        model = copy_trained(trained)
        before = model.model.item_encoder.id_embedding.weight.detach().clone()
        update(model, samples, TRAIN, 1, steps_before=steps_before)
        after = model.model.item_encoder.id_embedding.weight.detach()
        return float((after - before).abs().max())

    assert moved(0) < moved(1_000) / 3  # the first of TRAIN's 5 warm-up steps: a fifth


def test_a_failed_retirement_is_logged_and_its_error_retrieved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from services.trainer.config import TrainerConfig
    from services.trainer.continual_trainer import ContinualTrainer

    trainer = ContinualTrainer(TrainerConfig.from_env({"RECSYS_DATA_DIR": str(tmp_path)}))

    async def triton_down() -> None:
        raise ConnectionError("Triton is down")

    async def scenario() -> None:
        trainer.publication.background(triton_down())
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    gc.collect()  # an unretrieved task exception is reported when the task is collected
    assert "retiring old versions failed" in caplog.text
    assert "never retrieved" not in caplog.text


def test_forgetting_discards_a_publish_killed_before_it_wrote_serving_json(
    base: tuple[TrainedModel, list[LoggedEvent]], tmp_path: Path
) -> None:
    from services.trainer.model_training import WEIGHTS_FILE, save_trained
    from services.trainer.publisher import Publisher
    from shared.model_store import ModelStore
    from shared.triton_repository import TOWERS, Repository

    store = ModelStore(tmp_path / "models")
    repository = Repository(store.repository)
    published = learner_from(base).snapshot()
    save_trained(published, store.version_dir(1) / "weights")
    store.write_serving(1, SMALL.history_len, SMALL.dim, published.users.ids, [], 10)
    # Version 2: the trainer was killed after the weights and the towers, before serving.json.
    save_trained(published, store.version_dir(2) / "weights")
    (store.version_dir(2) / "weights" / WEIGHTS_FILE).unlink()
    for tower in TOWERS:
        repository.version_dir(tower, 2).mkdir(parents=True)
    assert not store.is_complete(2) and store.is_complete(1)
    publisher = Publisher(store, None, None, None)  # type: ignore[arg-type]  # no call made

    counts = publisher.forget_users({"u3"})

    assert counts == {"u3": 1}
    assert store.versions() == [1] and "u3" not in store.serving(1).users
    assert all(not repository.version_dir(tower, 2).exists() for tower in TOWERS)
    assert store.next_version() == 2


def test_a_publisher_for_the_pytorch_backend_writes_gpu_configs(tmp_path: Path) -> None:
    from services.trainer.publisher import Publisher, PublishSettings
    from services.trainer.two_tower import tower_io
    from shared.model_store import ModelStore
    from shared.triton_repository import GPU_SERVING, read_config

    store = ModelStore(tmp_path / "models")
    settings = PublishSettings(triton_variant="pytorch_libtorch")
    publisher = Publisher(store, None, None, None, settings)  # type: ignore[arg-type]  # no call made
    assert publisher.repository.serving == GPU_SERVING
    publisher.repository.set_versions("user_tower", tower_io(SMALL)["user_tower"], [1])
    config = read_config(store.repository / "user_tower" / "config.pbtxt")
    assert config.platform == "pytorch_libtorch" and not config.backend
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    assert config.max_batch_size == GPU_SERVING.max_batch_size
    local = Publisher(store, None, None, None)  # type: ignore[arg-type]
    assert local.repository.variant == "python"
