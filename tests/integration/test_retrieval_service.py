"""The retrieval service as a real process: FAISS search over gRPC, durable across restarts."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from recsys.gateway.v1 import gateway_pb2
from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.conftest import ServiceProcess, running

DIM = 16


def vectors(count: int, seed: int = 1) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def upsert(
    stub: retrieval_pb2_grpc.RetrievalServiceStub,
    matrix: np.ndarray,
    start: int = 0,
    index: str = "content",
) -> None:
    records = [
        retrieval_pb2.VectorRecord(
            item_id=f"i{start + n}",
            vector=row.tolist(),
            categories=["even" if n % 2 == 0 else "odd"],
        )
        for n, row in enumerate(matrix)
    ]
    for first in range(0, len(records), 500):
        stub.UpsertVectors(
            retrieval_pb2.UpsertVectorsRequest(index=index, records=records[first : first + 500]),
            timeout=30,
        )


def similar(stub: retrieval_pb2_grpc.RetrievalServiceStub, item_id: str, k: int = 5) -> list[str]:
    reply = stub.SearchSimilar(
        retrieval_pb2.SearchSimilarRequest(index="content", item_id=item_id, k=k), timeout=5
    )
    return [h.item_id for h in reply.hits]


def exact_similar(matrix: np.ndarray, n: int, k: int) -> list[str]:
    scores = matrix @ matrix[n]
    order = [int(i) for i in np.argsort(-scores) if i != n]
    return [f"i{i}" for i in order[:k]]


def test_search_similar_returns_exact_neighbours_without_the_item(data_dir: Path) -> None:
    matrix = vectors(300)
    with running(ServiceProcess("retrieval", data_dir)) as service:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(service.channel())
        upsert(stub, matrix)
        assert similar(stub, "i10") == exact_similar(matrix, 10, 5)


def test_filtered_search_keeps_only_matching_categories(data_dir: Path) -> None:
    matrix = vectors(100)
    with running(ServiceProcess("retrieval", data_dir)) as service:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(service.channel())
        upsert(stub, matrix)
        reply = stub.Search(
            retrieval_pb2.SearchRequest(
                index="content",
                vector=matrix[0].tolist(),
                k=100,
                filter=gateway_pb2.Filter(include_categories=["odd"], exclude_item_ids=["i1"]),
            ),
            timeout=5,
        )
        ids = [h.item_id for h in reply.hits]
        assert len(ids) == 49 and all(int(i[1:]) % 2 == 1 for i in ids) and "i1" not in ids


def test_hybrid_search_adds_the_profile_similarity_in_another_index(data_dir: Path) -> None:
    content, model = vectors(200, seed=1), vectors(200, seed=2)
    profile = [("i3", 2.0), ("i7", 1.0)]
    with running(ServiceProcess("retrieval", data_dir)) as service:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(service.channel())
        upsert(stub, content)
        upsert(stub, model, index="two-tower-1")
        reply = stub.Search(
            retrieval_pb2.SearchRequest(
                index="two-tower-1",
                vector=model[0].tolist(),
                k=5,
                exclude_item_ids=["i3", "i7"],
                profile=retrieval_pb2.ProfileTerm(
                    index="content",
                    items=[retrieval_pb2.WeightedItem(item_id=i, weight=w) for i, w in profile],
                    weight=0.5,
                ),
            ),
            timeout=5,
        )
        taste = 2.0 * content[3] + content[7]
        expected = model @ model[0] + 0.5 * content @ (taste / np.linalg.norm(taste))
        expected[[3, 7]] = -np.inf
        assert [h.item_id for h in reply.hits] == [f"i{n}" for n in np.argsort(-expected)[:5]]
        assert [h.score for h in reply.hits] == pytest.approx(np.sort(expected)[::-1][:5], abs=1e-5)
        with pytest.raises(grpc.RpcError) as error:
            stub.Search(
                retrieval_pb2.SearchRequest(
                    index="two-tower-1",
                    vector=model[0].tolist(),
                    k=5,
                    profile=retrieval_pb2.ProfileTerm(index="content", weight=float("nan")),
                ),
                timeout=5,
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("profile.weight")


def test_reserved_slots_go_to_the_best_items_of_their_category(data_dir: Path) -> None:
    matrix = vectors(100)
    marked = {f"i{n}" for n in range(0, 100, 10)}
    records = [
        retrieval_pb2.VectorRecord(
            item_id=f"i{n}",
            vector=row.tolist(),
            categories=["new"] if f"i{n}" in marked else ["old"],
        )
        for n, row in enumerate(matrix)
    ]
    scores = matrix @ matrix[1]
    order = [f"i{n}" for n in np.argsort(-scores) if n != 1]
    with running(ServiceProcess("retrieval", data_dir)) as service:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(service.channel())
        stub.UpsertVectors(
            retrieval_pb2.UpsertVectorsRequest(index="content", records=records), timeout=10
        )
        reply = stub.Search(
            retrieval_pb2.SearchRequest(
                index="content",
                vector=matrix[1].tolist(),
                k=10,
                exclude_item_ids=["i1"],
                reserved=retrieval_pb2.ReservedSlots(slots=2, category="new"),
            ),
            timeout=5,
        )
        first = order[:8]
        best_marked = [i for i in order if i in marked and i not in first][:2]
        assert [h.item_id for h in reply.hits] == first + best_marked
        assert [h.reserved for h in reply.hits] == [False] * 8 + [True] * 2
        with pytest.raises(grpc.RpcError) as error:
            stub.Search(
                retrieval_pb2.SearchRequest(
                    index="content",
                    vector=matrix[1].tolist(),
                    k=3,
                    reserved=retrieval_pb2.ReservedSlots(slots=4, category="new"),
                ),
                timeout=5,
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("reserved.slots")


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (retrieval_pb2.VectorRecord(item_id="x", vector=[1.0] * (DIM - 1)), "records[0].vector"),
        (retrieval_pb2.VectorRecord(item_id="x", vector=[float("nan")] * DIM), "records[0].vector"),
        (retrieval_pb2.VectorRecord(item_id="", vector=[1.0] * DIM), "records[0].item_id"),
    ],
)
def test_bad_vector_is_invalid_argument_naming_the_record(
    data_dir: Path, record: retrieval_pb2.VectorRecord, field: str
) -> None:
    with running(ServiceProcess("retrieval", data_dir)) as service:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(service.channel())
        upsert(stub, vectors(3))
        with pytest.raises(grpc.RpcError) as error:
            stub.UpsertVectors(
                retrieval_pb2.UpsertVectorsRequest(index="content", records=[record]), timeout=5
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith(field)


def test_restart_after_sigterm_restores_index_from_snapshot(data_dir: Path) -> None:
    matrix = vectors(200)
    service = ServiceProcess("retrieval", data_dir).start()
    stub = retrieval_pb2_grpc.RetrievalServiceStub(service.channel())
    upsert(stub, matrix)
    stub.DeleteVectors(
        retrieval_pb2.DeleteVectorsRequest(index="content", item_ids=["i1", "i2"]), timeout=5
    )
    before = similar(stub, "i0", 10)
    assert service.terminate() == 0
    assert (data_dir / "snapshots" / "content.faiss").exists()
    with running(ServiceProcess("retrieval", data_dir)) as restarted:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(restarted.channel())
        assert similar(stub, "i0", 10) == before
        assert "i1" not in similar(stub, "i0", 200)


def test_acknowledged_writes_survive_sigkill(data_dir: Path) -> None:
    matrix = vectors(400)
    env = {"RECSYS_RETRIEVAL_HNSW_THRESHOLD": "300", "RECSYS_RETRIEVAL_SNAPSHOT_INTERVAL_S": "3600"}
    service = ServiceProcess("retrieval", data_dir, env).start()
    stub = retrieval_pb2_grpc.RetrievalServiceStub(service.channel())
    upsert(stub, matrix)
    stub.DeleteVectors(
        retrieval_pb2.DeleteVectorsRequest(index="content", item_ids=["i5"]), timeout=5
    )
    service.kill()
    with running(ServiceProcess("retrieval", data_dir, env)) as restarted:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(restarted.channel())
        stats = stub.GetIndexStats(retrieval_pb2.GetIndexStatsRequest(index="content"), timeout=5)
        assert (stats.size, stats.kind) == (399, "hnsw")
        assert "i5" not in similar(stub, "i4", 399)
        with pytest.raises(grpc.RpcError) as error:
            similar(stub, "i5")
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("name", ["", "content"])
def test_drop_index_refuses_an_empty_name_and_the_content_index_when_asked_to_drop_them(
    data_dir: Path, name: str
) -> None:
    matrix = vectors(50)
    with running(ServiceProcess("retrieval", data_dir)) as service:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(service.channel())
        upsert(stub, matrix)
        with pytest.raises(grpc.RpcError) as error:
            stub.DropIndex(retrieval_pb2.DropIndexRequest(index=name), timeout=5)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("index:")
        assert similar(stub, "i10") == exact_similar(matrix, 10, 5)


def test_every_request_names_its_index_when_the_index_is_left_empty(data_dir: Path) -> None:
    with running(ServiceProcess("retrieval", data_dir)) as service:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(service.channel())
        upsert(stub, vectors(5))
        calls = [
            (stub.SearchSimilar, retrieval_pb2.SearchSimilarRequest(item_id="i1", k=2)),
            (stub.GetIndexStats, retrieval_pb2.GetIndexStatsRequest()),
            (stub.DeleteVectors, retrieval_pb2.DeleteVectorsRequest(item_ids=["i1"])),
            (stub.Search, retrieval_pb2.SearchRequest(vector=[1.0] * DIM, k=2)),
        ]
        for method, request in calls:
            with pytest.raises(grpc.RpcError) as error:
                method(request, timeout=5)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.value.details() == "index: must not be empty"
        assert len(similar(stub, "i1", 4)) == 4
