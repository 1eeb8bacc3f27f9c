"""Requests generated from message descriptors, for calling every RPC of a service with
bad and random input: boundary and random values, oversize strings and repeated fields,
unknown enum values, NaN and infinities, vectors of every nearby dimension, fields left
unset, and raw bodies that are not the message at all (random bytes, a truncated message,
invalid UTF-8 in a string field). Seeded, so a failure repeats."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

F = FieldDescriptor
STRINGS = [
    "",
    " ",
    "a",
    # The retrieval index of the catalogue's text vectors, which must never be dropped. (A
    # model version's index is dropped when the version is retired: dropping the live
    # one's is a legitimate, destructive call that no fuzzer should make.)
    "content",
    "\x00",
    "a\x1fb",
    "\u00e9",
    "\U0001f600",
    "x" * 257,  # one byte past an id's limit
    "\u00e9" * 129,  # 258 bytes in 129 characters
    "y" * 20_000,
]
INTS = [0, 1, -1, 2, 255, 256, 257, 1_000, 1_001, 10_001, 2**31 - 1, -(2**31)]
LONGS = [*INTS, 2**63 - 1, -(2**63)]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, 3.4e38, -3.4e38, math.nan, math.inf, -math.inf]
# Vector lengths around the dimensions in use: the model's (64) and the encoder's (384).
VECTOR_LENGTHS = [0, 1, 2, 16, 63, 64, 65, 383, 384, 385]
OVERSIZE = [1_001, 10_001]  # one past the suite's limits on items and events per request
MAX_DEPTH = 3


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    input: Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def methods_by_reflection(channel: grpc.Channel) -> list[Method]:
    """Every method of every service the server lists by reflection."""
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    found = []
    for name in database.get_services():
        service = pool.FindServiceByName(name)
        found += [_method(name, m) for m in service.methods]
    return found


def methods_of(service: Any) -> list[Method]:
    """Every method of a service descriptor compiled into a client (Triton's)."""
    return [_method(service.full_name, m) for m in service.methods]


def _method(service: str, method: MethodDescriptor) -> Method:
    return Method(
        service,
        method.name,
        method.input_type,
        method.client_streaming,
        method.server_streaming,
    )


class Generator:
    """Messages for one method's input type; `strings` widens the pool of string values."""

    def __init__(self, seed: int, strings: list[str] | None = None) -> None:
        self.rng = random.Random(seed)
        self.strings = STRINGS + (strings or [])
        self.small = False  # while an entry of an oversize list is made

    def message(self, descriptor: Descriptor, depth: int = 0) -> Message:
        message = message_factory.GetMessageClass(descriptor)()
        for field in descriptor.fields:
            if self.rng.random() < 0.3:
                continue  # left unset: a missing field
            self._fill(message, field, depth)
        return message

    def _fill(self, message: Message, field: FieldDescriptor, depth: int) -> None:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            self._fill_map(message, field, depth)
        elif field.label == F.LABEL_REPEATED:
            self._fill_repeated(message, field, depth)
        elif field.message_type is not None:
            if depth < MAX_DEPTH:
                getattr(message, field.name).CopyFrom(self.message(field.message_type, depth + 1))
        else:
            setattr(message, field.name, self.scalar(field))

    def _fill_repeated(self, message: Message, field: FieldDescriptor, depth: int) -> None:
        values = getattr(message, field.name)
        if field.cpp_type in (F.CPPTYPE_FLOAT, F.CPPTYPE_DOUBLE):
            count = self.rng.choice(VECTOR_LENGTHS)
        elif depth == 0 and self.rng.random() < 0.1:
            # Oversize, at the top only, of small entries: what matters is their count.
            count = self.rng.choice(OVERSIZE)
            if field.message_type is not None:
                self.small = True
                try:
                    small = self.message(field.message_type, MAX_DEPTH)
                finally:
                    self.small = False
                for _ in range(count):
                    values.add().CopyFrom(small)
            else:
                values.extend([self._small(field)] * count)
            return
        else:
            count = self.rng.randrange(4)
        if field.message_type is not None:
            if depth < MAX_DEPTH:
                for _ in range(count):
                    values.add().CopyFrom(self.message(field.message_type, depth + 1))
        else:
            values.extend(self.scalar(field) for _ in range(count))

    def _fill_map(self, message: Message, field: FieldDescriptor, depth: int) -> None:
        entries = getattr(message, field.name)
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        count = 65 if depth == 0 and self.rng.random() < 0.1 else self.rng.randrange(3)
        for n in range(count):
            key = f"k{n}" if count > 3 else self.scalar(key_field)
            if value_field.message_type is not None:
                if depth < MAX_DEPTH:
                    entries[key].CopyFrom(self.message(value_field.message_type, depth + 1))
            else:
                entries[key] = self.scalar(value_field)

    def _small(self, field: FieldDescriptor) -> Any:
        value = self._scalar(field)
        return value[:8] if isinstance(value, str | bytes) else value

    def scalar(self, field: FieldDescriptor) -> Any:
        return self._small(field) if self.small else self._scalar(field)

    def _scalar(self, field: FieldDescriptor) -> Any:
        rng, kind = self.rng, field.cpp_type
        if kind == F.CPPTYPE_STRING and field.type == F.TYPE_BYTES:
            return rng.randbytes(rng.choice([0, 1, 8, 1024]))
        if kind == F.CPPTYPE_STRING:
            if rng.random() < 0.6:
                return rng.choice(self.strings)
            return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(1, 24)))
        if kind == F.CPPTYPE_BOOL:
            return rng.random() < 0.5
        if kind in (F.CPPTYPE_FLOAT, F.CPPTYPE_DOUBLE):
            return rng.choice(FLOATS) if rng.random() < 0.5 else rng.uniform(-10, 10)
        if kind == F.CPPTYPE_ENUM:
            known = [v.number for v in field.enum_type.values]
            return rng.choice([*known, 42, -7])  # unknown values too
        return self._integer(field, rng)

    @staticmethod
    def _integer(field: FieldDescriptor, rng: random.Random) -> int:
        kind = field.cpp_type
        pool = LONGS if kind in (F.CPPTYPE_INT64, F.CPPTYPE_UINT64) else INTS
        value = rng.choice(pool) if rng.random() < 0.7 else rng.randrange(-1000, 100_000)
        if kind == F.CPPTYPE_UINT32:
            return value % 2**32
        if kind == F.CPPTYPE_UINT64:
            return value % 2**64
        return value

    def raw_bodies(self, descriptor: Descriptor) -> Iterator[tuple[bytes, bool]]:
        """Bytes that are most likely not a `descriptor` message, each with whether it
        certainly is not (random bytes or a truncated message may still parse)."""
        yield self.rng.randbytes(self.rng.randrange(1, 64)), False
        yield bytes([0xFF] * 10), True  # field number 0 does not exist
        whole = self.message(descriptor).SerializeToString()
        if len(whole) > 2:
            yield whole[: self.rng.randrange(1, len(whole))], False
        strings = [f for f in descriptor.fields if f.type == F.TYPE_STRING]
        if strings:
            tag = (strings[0].number << 3) | 2
            yield whole + _varint(tag) + bytes([2, 0xC3, 0x28]), True  # invalid UTF-8


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@dataclass
class Outcome:
    method: Method
    code: grpc.StatusCode
    details: str
    seconds: float
    raw: bool  # the body was not a valid message


Caller = Callable[[bytes | list[bytes], float], tuple[grpc.StatusCode, str]]


def caller(channel: grpc.Channel, method: Method) -> Caller:
    """Calls `method` with serialized bodies (a list of them for a request stream)."""
    identity = {"request_serializer": None, "response_deserializer": None}
    if method.client_streaming and method.server_streaming:
        stream = channel.stream_stream(method.path, **identity)

        def bidi(body: bytes | list[bytes], timeout: float) -> tuple[grpc.StatusCode, str]:
            bodies = body if isinstance(body, list) else [body]
            return _drain(stream(iter(bodies), timeout=timeout))

        return bidi
    if method.client_streaming:
        upload = channel.stream_unary(method.path, **identity)

        def client_stream(body: bytes | list[bytes], timeout: float) -> tuple[grpc.StatusCode, str]:
            bodies = body if isinstance(body, list) else [body]
            return _ended(lambda: upload(iter(bodies), timeout=timeout))

        return client_stream
    if method.server_streaming:
        listen = channel.unary_stream(method.path, **identity)

        def server_stream(body: bytes | list[bytes], timeout: float) -> tuple[grpc.StatusCode, str]:
            assert isinstance(body, bytes)
            responses = listen(body, timeout=timeout)
            try:
                next(responses)  # a watch goes on for ever: its first answer is enough
            except grpc.RpcError as error:
                return error.code(), error.details() or ""
            except StopIteration:
                pass
            responses.cancel()
            return grpc.StatusCode.OK, ""

        return server_stream
    unary = channel.unary_unary(method.path, **identity)

    def once(body: bytes | list[bytes], timeout: float) -> tuple[grpc.StatusCode, str]:
        return _ended(lambda: unary(body, timeout=timeout))

    return once


def _ended(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _drain(responses: Any) -> tuple[grpc.StatusCode, str]:
    try:
        for _ in responses:
            pass
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""
