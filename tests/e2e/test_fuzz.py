"""Every RPC of every service, fuzzed: each method listed by reflection (Triton's from its
client's descriptors) gets a few hundred seeded requests generated from its message
descriptor, and raw bodies that are not the message at all. One suite, started once,
with a published model and the continual trainer.

What must hold: no UNKNOWN, no INTERNAL from our services, no call past its deadline, no
process dies, every INVALID_ARGUMENT names a field (or says the request could not be
decoded) and shows no exception, nothing of a rejected batch is written, and afterwards
the suite answers a known SimilarItems and Recommend exactly as before: no input destroys
state.

Two kinds of method get only undecodable bodies, since every request they can decode is
a legitimate change that would also change what the suite answers: the trainer's
TriggerRetrain and Rollback, and Triton's LogSettings and TraceSetting (which name files
Triton writes). Triton's repository methods never see the served models' names.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from tritonclient.grpc import service_pb2 as triton_pb2

from recsys.gateway.v1 import gateway_pb2 as api
from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.launcher import is_serving
from shared.errors import InvalidArgument
from shared.items import Item, validate_id
from tests.e2e.fuzz import Generator, Method, caller, methods_by_reflection, methods_of
from tests.e2e.harness import HOST, UserSuite, catalogue
from tests.e2e.test_events import T0, log, rate

CALLS_PER_METHOD = 200
DEADLINE_S = 10.0
WAIT_DEADLINE_S = 1.0  # WaitUntilTrained waits for as long as it is allowed
KNOWN_USER = "fuzz-known-user-31"
CATEGORY = "Comedy"
SERVED_MODELS = ["user_tower", "item_tower"]
DECODABLE_MEANS_ACTION = {
    "recsys.trainer.v1.TrainerService/TriggerRetrain",
    "recsys.trainer.v1.TrainerService/Rollback",
    "inference.GRPCInferenceService/LogSettings",
    "inference.GRPCInferenceService/TraceSetting",
}
# A field path first: items[3].item_id, items[0].attributes['colour'], timestamp.nanos.
FIELD_FIRST = re.compile(r"^[a-z_][a-z0-9_]*(\[.*?\])?(\.[a-z_][a-z0-9_]*(\[.*?\])?)*: ")
UNDECODED = "the request could not be decoded"
ENV = {
    # The continual trainer runs, but neither bootstraps nor publishes on its own: the
    # fuzzer's valid events must not change the model the checks compare against.
    "RECSYS_TRAINER_BOOTSTRAP_MIN_EVENTS": str(2**31 - 1),
    "RECSYS_TRAINER_PUBLISH_EVERY_EVENTS": str(2**31 - 1),
    "RECSYS_TRAINER_PUBLISH_EVERY_S": "1e9",
}


def films() -> list[Item]:
    """Shipped films under ids no generated string can be."""
    return [replace(m, item_id=f"film-{m.item_id}") for m in catalogue()[:120]]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserSuite]:
    running = UserSuite(tmp_path_factory.mktemp("fuzz"), trainer=True, env=ENV).start()
    catalogue_ = films()
    running.client().upsert(catalogue_)
    events = [
        rate(f"fuzz-seed-{n}", f"fuzz-seed-user-{n % 12}", catalogue_[n % 60].item_id, T0 + n)
        for n in range(300)
    ]
    events += [rate(f"fuzz-known-{n}", KNOWN_USER, catalogue_[n].item_id, T0 + n) for n in range(8)]
    log(running, *events)
    running.train(max_seconds=3.0)
    assert running.wait_for_version("two-tower-1", user=KNOWN_USER).model_version == "two-tower-1"
    yield running
    assert running.terminate() == 0


@dataclass
class Report:
    calls: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    rejected: dict[str, set[str]] = field(default_factory=dict)  # ids only in rejected batches
    accepted: dict[str, set[str]] = field(default_factory=dict)


def _event_ids(message: Any) -> set[str]:
    return {e.event_id for e in message.events}


def _item_ids(message: Any) -> set[str]:
    return {i.item_id for i in message.items}


def _vector_ids(message: Any) -> set[str]:
    return {f"{message.index}\t{r.item_id}" for r in message.records}


# Batch writes whose rejection must leave nothing behind: method -> (what, ids of a request).
BATCHES: dict[str, tuple[str, Callable[[Any], set[str]]]] = {
    "recsys.gateway.v1.GatewayService/LogEvents": ("events", _event_ids),
    "recsys.features.v1.FeaturesService/AppendEvents": ("events", _event_ids),
    "recsys.gateway.v1.GatewayService/UpsertItems": ("items", _item_ids),
    "recsys.features.v1.FeaturesService/UpsertItems": ("items", _item_ids),
    "recsys.retrieval.v1.RetrievalService/UpsertVectors": ("vectors", _vector_ids),
}


Answers = tuple[list[str], list[float], list[str], list[float], str]


def known_answers(suite: UserSuite) -> Answers:
    """SimilarItems of a known film and Recommend for a known user, among films of one
    category (so that the fuzzer's own valid items, of other categories, cannot enter)."""
    stub = suite.stub()
    flt = api.Filter(include_categories=[CATEGORY])
    similar = stub.SimilarItems(
        api.SimilarItemsRequest(item_id=films()[0].item_id, k=5, filter=flt), timeout=10
    )
    recommended = stub.Recommend(
        api.RecommendRequest(user_id=KNOWN_USER, k=5, filter=flt), timeout=10
    )
    return (
        [i.item_id for i in similar.items],
        [i.score for i in similar.items],
        [i.item_id for i in recommended.items],
        [i.score for i in recommended.items],
        recommended.model_version,
    )


def targets(suite: UserSuite) -> list[tuple[str, list[Method]]]:
    found = []
    for service in ("GATEWAY", "FEATURES", "RETRIEVAL", "TRAINER"):
        address = f"{HOST}:{suite.env[f'RECSYS_{service}_PORT']}"
        with grpc.insecure_channel(address) as channel:
            found.append((address, methods_by_reflection(channel)))
    triton = f"{HOST}:{suite.env['RECSYS_EMBEDDING_PORT']}"
    found.append(
        (triton, methods_of(triton_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]))
    )
    return found


Body = bytes | list[bytes]


def bodies(method: Method, seed: int) -> Iterator[tuple[Body, bool, Message | None]]:
    """(body, whether it certainly cannot be decoded, the message it encodes)."""
    served = method.service.startswith("inference") and "Repository" not in method.name
    generator = Generator(seed, SERVED_MODELS if served else [])
    raw = [body for _ in range(8) for body in generator.raw_bodies(method.input)]
    for body, certain in raw:
        if method.client_streaming and method.server_streaming:
            # Each message answered in turn (StreamSearch): a first message's own error
            # would end the stream before the bad one is read.
            yield [body], certain, None
        elif method.client_streaming:  # a good message first, then the bad one
            yield [generator.message(method.input).SerializeToString(), body], certain, None
        else:
            yield body, certain, None
    if f"{method.service}/{method.name}" in DECODABLE_MEANS_ACTION:
        return
    empty = generator.message(method.input).__class__()
    yield _framed(method, empty), False, empty  # every field missing
    for _ in range(CALLS_PER_METHOD - len(raw) - 1):
        if method.client_streaming:
            messages = [generator.message(method.input) for _ in range(generator.rng.randrange(4))]
            yield [m.SerializeToString() for m in messages], False, None
        else:
            message = generator.message(method.input)
            yield message.SerializeToString(), False, message


def _framed(method: Method, message: Message) -> bytes | list[bytes]:
    body = message.SerializeToString()
    return [body] if method.client_streaming else body


def fuzz_method(address: str, method: Method, seed: int) -> Report:
    report = Report()
    ours = not method.service.startswith("inference")
    deadline = WAIT_DEADLINE_S if method.name == "WaitUntilTrained" else DEADLINE_S
    key = f"{method.service}/{method.name}"
    with grpc.insecure_channel(address) as channel:
        call = caller(channel, method)
        for body, undecodable, message in bodies(method, seed):
            started = time.monotonic()
            code, details = call(body, deadline)
            elapsed = time.monotonic() - started
            report.calls += 1
            report.codes[f"{'ours' if ours else 'triton'} {code.name}"] += 1
            where = f"{key} ({'undecodable' if undecodable else 'generated'})"
            if code == grpc.StatusCode.UNKNOWN:
                report.violations.append(f"{where}: UNKNOWN {details[:200]!r}")
            if ours and code == grpc.StatusCode.INTERNAL:
                report.violations.append(f"{where}: INTERNAL {details[:200]!r}")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED or elapsed > deadline + 2.0:
                report.violations.append(f"{where}: {code.name} after {elapsed:.1f}s")
            if ours and code == grpc.StatusCode.INVALID_ARGUMENT:
                if not (details.startswith(UNDECODED) or FIELD_FIRST.match(details)):
                    report.violations.append(f"{where}: names no field: {details[:200]!r}")
                if "Traceback" in details or "<class" in details or "Error" in details:
                    report.violations.append(f"{where}: shows an exception: {details[:200]!r}")
            if undecodable and ours and not details.startswith(UNDECODED):
                report.violations.append(f"{where}: {code.name} {details[:100]!r}")
            if message is not None and key in BATCHES:
                what, ids_of = BATCHES[key]
                rejected = code == grpc.StatusCode.INVALID_ARGUMENT
                side = report.rejected if rejected else report.accepted
                side.setdefault(what, set()).update(ids_of(message))
    return report


def merged(reports: list[Report]) -> Report:
    total = Report()
    for report in reports:
        total.calls += report.calls
        total.codes.update(report.codes)
        total.violations += report.violations
        for mine, theirs in ((total.rejected, report.rejected), (total.accepted, report.accepted)):
            for what, ids in theirs.items():
                mine.setdefault(what, set()).update(ids)
    return total


def _valid_id(value: str) -> bool:
    try:
        validate_id(value, "id")
    except InvalidArgument:
        return False
    return True


def check_nothing_rejected_was_written(suite: UserSuite, report: Report) -> None:
    only_rejected = {
        what: ids - report.accepted.get(what, set()) for what, ids in report.rejected.items()
    }
    logged = {e.event_id for e in suite.logged_events()}
    written = only_rejected.get("events", set()) & logged
    assert not written, f"events of rejected batches were written: {sorted(written)[:5]}"
    items = sorted(i for i in only_rejected.get("items", set()) if _valid_id(i))
    stub = suite.stub()
    for start in range(0, len(items), 500):
        found = stub.GetItems(
            api.GetItemsRequest(item_ids=items[start : start + 500], allow_missing=True), timeout=10
        )
        assert not found.items, f"items of rejected batches were written: {found.items[:3]}"
    retrieval = retrieval_pb2_grpc.RetrievalServiceStub(
        grpc.insecure_channel(f"{HOST}:{suite.env['RECSYS_RETRIEVAL_PORT']}")
    )
    upserted_items = report.accepted.get("items", set())  # also written to indexes
    vectors = [
        v for v in only_rejected.get("vectors", set()) if v.split("\t", 1)[1] not in upserted_items
    ]
    for entry in sorted(vectors)[:300]:
        index, item_id = entry.split("\t", 1)
        try:
            retrieval.SearchSimilar(
                retrieval_pb2.SearchSimilarRequest(index=index, item_id=item_id, k=1), timeout=5
            )
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        else:
            raise AssertionError(f"a vector of a rejected batch was written: {entry!r}")


@pytest.mark.timeout(600)
def test_no_input_to_any_rpc_gets_unknown_internal_or_a_hang_or_destroys_state(
    suite: UserSuite,
) -> None:
    before = known_answers(suite)
    assert before[4] == "two-tower-1" and len(before[0]) == len(before[2]) == 5
    jobs = [
        (address, method, seed)
        for address, methods in targets(suite)
        for seed, method in enumerate(methods)
    ]
    assert len(jobs) > 50, [m.name for _, m, _ in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        report = merged([f.result() for f in [pool.submit(fuzz_method, *job) for job in jobs]])
    print(f"fuzzed {len(jobs)} methods with {report.calls} calls:", dict(report.codes))
    assert not report.violations, "\n".join(report.violations[:30])
    assert suite.process is not None and suite.process.poll() is None, "the suite went down"
    for service in ("GATEWAY", "FEATURES", "RETRIEVAL", "TRAINER", "EMBEDDING"):
        assert is_serving(f"{HOST}:{suite.env[f'RECSYS_{service}_PORT']}", timeout_s=5), service
    check_nothing_rejected_was_written(suite, report)
    after = known_answers(suite)
    assert (after[0], after[2], after[4]) == (before[0], before[2], before[4])
    assert after[1] == pytest.approx(before[1], abs=1e-3)
    assert after[3] == pytest.approx(before[3], abs=1e-3)
