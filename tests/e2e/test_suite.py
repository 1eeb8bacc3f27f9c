"""The whole suite started as a user starts it (`recsys up`), called over gRPC."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from recsys.gateway.v1 import gateway_pb2
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tests.e2e.harness import JUMANJI, TOY_STORY, TOY_STORY_2, TOY_STORY_3, UserSuite, catalogue


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserSuite]:
    # `recsys up` as a user runs it, the continual trainer included (idle: it would start
    # training only from a billion events).
    idle = {"RECSYS_TRAINER_BOOTSTRAP_MIN_EVENTS": str(10**9)}
    running = UserSuite(tmp_path_factory.mktemp("suite"), trainer=True, env=idle).start()
    client = running.client()
    for start in range(0, len(catalogue()), 256):
        client.upsert(catalogue()[start : start + 256])
    yield running
    assert running.terminate() == 0


def ids(items: list[gateway_pb2.ScoredItem]) -> list[str]:
    return [i.item_id for i in items]


def test_similar_items_to_toy_story_are_its_sequels(suite: UserSuite) -> None:
    similar = ids(suite.client().similar(TOY_STORY, k=5))
    assert TOY_STORY not in similar
    assert similar[0] == TOY_STORY_2 and TOY_STORY_3 in similar


def test_similar_items_respects_category_filters(suite: UserSuite) -> None:
    reply = suite.stub().SimilarItems(
        gateway_pb2.SimilarItemsRequest(
            item_id=TOY_STORY,
            k=20,
            filter=gateway_pb2.Filter(exclude_categories=["Animation"], exclude_item_ids=[JUMANJI]),
        ),
        timeout=5,
    )
    found = ids(list(reply.items))
    items = suite.stub().GetItems(gateway_pb2.GetItemsRequest(item_ids=found), timeout=5).items
    assert len(found) == 20 and JUMANJI not in found
    assert all("Animation" not in item.categories for item in items)


def test_get_items_returns_items_in_request_order(suite: UserSuite) -> None:
    reply = suite.stub().GetItems(gateway_pb2.GetItemsRequest(item_ids=["2", "1"]), timeout=5)
    assert [i.title for i in reply.items] == ["Jumanji (1995)", "Toy Story (1995)"]
    assert list(reply.items[1].categories)[:2] == ["Adventure", "Animation"]


def test_deleted_item_never_comes_back_in_results(suite: UserSuite) -> None:
    stub = suite.stub()
    stub.UpsertItems(
        gateway_pb2.UpsertItemsRequest(
            items=[
                gateway_pb2.Item(
                    item_id="tmp", title="Toy Story 4 (2019)", categories=["Animation"]
                )
            ]
        ),
        timeout=60,
    )
    assert "tmp" in ids(suite.client().similar(TOY_STORY, k=5))
    assert (
        stub.DeleteItems(
            gateway_pb2.DeleteItemsRequest(item_ids=["tmp", "never"]), timeout=5
        ).deleted
        == 1
    )
    assert "tmp" not in ids(suite.client().similar(TOY_STORY, k=50))
    with pytest.raises(grpc.RpcError) as error:
        stub.GetItems(gateway_pb2.GetItemsRequest(item_ids=["tmp"]), timeout=5)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_duplicate_ids_in_one_upsert_keep_the_last(suite: UserSuite) -> None:
    stub = suite.stub()
    items = [
        gateway_pb2.Item(item_id="dup", title="first"),
        gateway_pb2.Item(item_id="dup", title="last"),
    ]
    assert stub.UpsertItems(gateway_pb2.UpsertItemsRequest(items=items), timeout=60).upserted == 1
    reply = stub.GetItems(gateway_pb2.GetItemsRequest(item_ids=["dup"]), timeout=5)
    assert reply.items[0].title == "last"


BAD_REQUESTS = [
    ("UpsertItems", gateway_pb2.UpsertItemsRequest(), "items"),
    (
        "UpsertItems",
        gateway_pb2.UpsertItemsRequest(items=[gateway_pb2.Item(item_id="ok"), gateway_pb2.Item()]),
        "items[1].item_id",
    ),
    (
        "UpsertItems",
        gateway_pb2.UpsertItemsRequest(items=[gateway_pb2.Item(item_id="x" * 300)]),
        "items[0].item_id",
    ),
    (
        "UpsertItems",
        gateway_pb2.UpsertItemsRequest(items=[gateway_pb2.Item(item_id="a", title="t" * 1001)]),
        "items[0].title",
    ),
    (
        "UpsertItems",
        gateway_pb2.UpsertItemsRequest(
            items=[gateway_pb2.Item(item_id=str(i)) for i in range(1001)]
        ),
        "items",
    ),
    ("DeleteItems", gateway_pb2.DeleteItemsRequest(item_ids=["a", ""]), "item_ids[1]"),
    ("GetItems", gateway_pb2.GetItemsRequest(), "item_ids"),
    ("SimilarItems", gateway_pb2.SimilarItemsRequest(item_id="", k=5), "item_id"),
    ("SimilarItems", gateway_pb2.SimilarItemsRequest(item_id=TOY_STORY, k=0), "k"),
    ("SimilarItems", gateway_pb2.SimilarItemsRequest(item_id=TOY_STORY, k=1001), "k"),
    (
        "SimilarItems",
        gateway_pb2.SimilarItemsRequest(
            item_id=TOY_STORY, k=5, filter=gateway_pb2.Filter(exclude_item_ids=[""])
        ),
        "filter.exclude_item_ids[0]",
    ),
]


@pytest.mark.parametrize(("method", "request_message", "field"), BAD_REQUESTS)
def test_bad_input_is_invalid_argument_naming_the_field(
    suite: UserSuite, method: str, request_message: object, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        getattr(suite.stub(), method)(request_message, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(f"{field}: ")


def test_rejected_batch_writes_nothing(suite: UserSuite) -> None:
    stub = suite.stub()
    batch = [
        gateway_pb2.Item(item_id="half-ok", title="fine"),
        gateway_pb2.Item(item_id="b", title="t" * 2000),
    ]
    with pytest.raises(grpc.RpcError):
        stub.UpsertItems(gateway_pb2.UpsertItemsRequest(items=batch), timeout=60)
    reply = stub.GetItems(
        gateway_pb2.GetItemsRequest(item_ids=["half-ok"], allow_missing=True), timeout=5
    )
    assert list(reply.missing_item_ids) == ["half-ok"]


def test_recsys_up_starts_the_continual_trainer_on_loopback(suite: UserSuite) -> None:
    assert suite.trainer.startswith("127.0.0.1:")
    stub = trainer_pb2_grpc.TrainerServiceStub(grpc.insecure_channel(suite.trainer))
    status = stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=10)
    assert status.live_version == "" and status.ray_address == "in-process"
    assert status.state == "idle" and not status.full_retrain_running


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp{,6} writes addresses as host-order 32-bit words in hex."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _listening(inodes: set[str]) -> list[str]:
    """Local addresses of listening TCP and bound, unconnected UDP sockets."""
    found = []
    for table, waiting in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == waiting and inode in inodes:
                found.append(
                    f"{table} {_address(local.split(':')[0])}:{int(local.split(':')[1], 16)}"
                )
    return found


def _loopback(entry: str) -> bool:
    address = ipaddress.ip_address(entry.split()[1].rsplit(":", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def test_no_process_of_the_suite_listens_beyond_loopback(suite: UserSuite) -> None:
    processes = suite.processes()
    names = {p.name for p in processes}
    assert {"gcs_server", "raylet", "tritonserver"} <= names, names  # Ray and Triton are up
    listening = {
        f"{p.name}[{p.pid}] {entry}"
        for p in processes
        for entry in _listening(_socket_inodes(p.pid))
    }
    assert any("raylet" in entry for entry in listening)
    assert [e for e in listening if not _loopback(e.split(" ", 1)[1])] == []


def test_similar_items_of_unknown_item_is_not_found(suite: UserSuite) -> None:
    with pytest.raises(grpc.RpcError) as error:
        suite.stub().SimilarItems(gateway_pb2.SimilarItemsRequest(item_id="nope", k=5), timeout=5)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_restart_after_sigterm_keeps_the_catalogue(tmp_path: Path) -> None:
    first = UserSuite(tmp_path).start()
    first.client().upsert(catalogue()[:50] + [m for m in catalogue() if m.item_id == TOY_STORY_2])
    before = ids(first.client().similar(TOY_STORY, k=10))
    assert first.terminate() == 0
    second = UserSuite(tmp_path).start()
    try:
        assert ids(second.client().similar(TOY_STORY, k=10)) == before
        assert second.client().titles([TOY_STORY_2]) == {TOY_STORY_2: "Toy Story 2 (1999)"}
    finally:
        second.stop()


def test_acknowledged_upserts_and_deletes_survive_sigkill_of_every_process(tmp_path: Path) -> None:
    first = UserSuite(tmp_path).start()
    movies = catalogue()[:120]
    first.client().upsert(movies)
    first.stub().DeleteItems(gateway_pb2.DeleteItemsRequest(item_ids=[JUMANJI]), timeout=5)
    first.kill_everything()
    second = UserSuite(tmp_path).start()
    try:
        client = second.client()
        found = client.titles([m.item_id for m in movies])
        assert set(found) == {m.item_id for m in movies} - {JUMANJI}
        assert JUMANJI not in ids(client.similar(TOY_STORY, k=200))
        assert len(client.similar(TOY_STORY, k=200)) == 118
    finally:
        second.stop()
