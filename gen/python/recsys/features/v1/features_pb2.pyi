import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from recsys.gateway.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AppendEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Event]
    def __init__(self, events: _Optional[_Iterable[_Union[_gateway_pb2.Event, _Mapping]]] = ...) -> None: ...

class AppendEventsResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "last_offset")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    LAST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    last_offset: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., last_offset: _Optional[int] = ...) -> None: ...

class LoggedEvent(_message.Message):
    __slots__ = ("offset", "event", "appended_at")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    APPENDED_AT_FIELD_NUMBER: _ClassVar[int]
    offset: int
    event: _gateway_pb2.Event
    appended_at: _timestamp_pb2.Timestamp
    def __init__(self, offset: _Optional[int] = ..., event: _Optional[_Union[_gateway_pb2.Event, _Mapping]] = ..., appended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReadEventsRequest(_message.Message):
    __slots__ = ("from_offset", "limit")
    FROM_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    from_offset: int
    limit: int
    def __init__(self, from_offset: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ReadEventsResponse(_message.Message):
    __slots__ = ("events", "end_offset")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[LoggedEvent]
    end_offset: int
    def __init__(self, events: _Optional[_Iterable[_Union[LoggedEvent, _Mapping]]] = ..., end_offset: _Optional[int] = ...) -> None: ...

class Interaction(_message.Message):
    __slots__ = ("item_id", "type", "value", "timestamp")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    type: _gateway_pb2.EventType
    value: float
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, item_id: _Optional[str] = ..., type: _Optional[_Union[_gateway_pb2.EventType, str]] = ..., value: _Optional[float] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetUserHistoryRequest(_message.Message):
    __slots__ = ("user_id", "limit", "include_seen_item_ids", "known_version")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEEN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    limit: int
    include_seen_item_ids: bool
    known_version: str
    def __init__(self, user_id: _Optional[str] = ..., limit: _Optional[int] = ..., include_seen_item_ids: _Optional[bool] = ..., known_version: _Optional[str] = ...) -> None: ...

class GetUserHistoryResponse(_message.Message):
    __slots__ = ("recent", "seen_item_ids", "first_offset", "version", "unchanged")
    RECENT_FIELD_NUMBER: _ClassVar[int]
    SEEN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    recent: _containers.RepeatedCompositeFieldContainer[Interaction]
    seen_item_ids: _containers.RepeatedScalarFieldContainer[str]
    first_offset: int
    version: str
    unchanged: bool
    def __init__(self, recent: _Optional[_Iterable[_Union[Interaction, _Mapping]]] = ..., seen_item_ids: _Optional[_Iterable[str]] = ..., first_offset: _Optional[int] = ..., version: _Optional[str] = ..., unchanged: _Optional[bool] = ...) -> None: ...

class GetTrendingRequest(_message.Message):
    __slots__ = ("k", "filter", "exclude_item_ids", "known_version", "half_life_s")
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    HALF_LIFE_S_FIELD_NUMBER: _ClassVar[int]
    k: int
    filter: _gateway_pb2.Filter
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    known_version: str
    half_life_s: float
    def __init__(self, k: _Optional[int] = ..., filter: _Optional[_Union[_gateway_pb2.Filter, _Mapping]] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., known_version: _Optional[str] = ..., half_life_s: _Optional[float] = ...) -> None: ...

class GetTrendingResponse(_message.Message):
    __slots__ = ("items", "version", "unchanged", "half_life_s")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    HALF_LIFE_S_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.ScoredItem]
    version: str
    unchanged: bool
    half_life_s: float
    def __init__(self, items: _Optional[_Iterable[_Union[_gateway_pb2.ScoredItem, _Mapping]]] = ..., version: _Optional[str] = ..., unchanged: _Optional[bool] = ..., half_life_s: _Optional[float] = ...) -> None: ...

class StreamRankingInputsRequest(_message.Message):
    __slots__ = ("inputs",)
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    inputs: GetRankingInputsRequest
    def __init__(self, inputs: _Optional[_Union[GetRankingInputsRequest, _Mapping]] = ...) -> None: ...

class StreamRankingInputsResponse(_message.Message):
    __slots__ = ("inputs",)
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    inputs: GetRankingInputsResponse
    def __init__(self, inputs: _Optional[_Union[GetRankingInputsResponse, _Mapping]] = ...) -> None: ...

class GetRankingInputsRequest(_message.Message):
    __slots__ = ("history", "trending", "related")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    TRENDING_FIELD_NUMBER: _ClassVar[int]
    RELATED_FIELD_NUMBER: _ClassVar[int]
    history: GetUserHistoryRequest
    trending: GetTrendingRequest
    related: GetRelatedRequest
    def __init__(self, history: _Optional[_Union[GetUserHistoryRequest, _Mapping]] = ..., trending: _Optional[_Union[GetTrendingRequest, _Mapping]] = ..., related: _Optional[_Union[GetRelatedRequest, _Mapping]] = ...) -> None: ...

class GetRelatedRequest(_message.Message):
    __slots__ = ("k", "profile_half_life_s", "filter")
    K_FIELD_NUMBER: _ClassVar[int]
    PROFILE_HALF_LIFE_S_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    k: int
    profile_half_life_s: float
    filter: _gateway_pb2.Filter
    def __init__(self, k: _Optional[int] = ..., profile_half_life_s: _Optional[float] = ..., filter: _Optional[_Union[_gateway_pb2.Filter, _Mapping]] = ...) -> None: ...

class RelatedItem(_message.Message):
    __slots__ = ("item_id", "score", "because_item_id")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BECAUSE_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    because_item_id: str
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., because_item_id: _Optional[str] = ...) -> None: ...

class GetRankingInputsResponse(_message.Message):
    __slots__ = ("history", "trending", "related")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    TRENDING_FIELD_NUMBER: _ClassVar[int]
    RELATED_FIELD_NUMBER: _ClassVar[int]
    history: GetUserHistoryResponse
    trending: GetTrendingResponse
    related: _containers.RepeatedCompositeFieldContainer[RelatedItem]
    def __init__(self, history: _Optional[_Union[GetUserHistoryResponse, _Mapping]] = ..., trending: _Optional[_Union[GetTrendingResponse, _Mapping]] = ..., related: _Optional[_Iterable[_Union[RelatedItem, _Mapping]]] = ...) -> None: ...

class ForgetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ForgetUserResponse(_message.Message):
    __slots__ = ("events_deleted",)
    EVENTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    events_deleted: int
    def __init__(self, events_deleted: _Optional[int] = ...) -> None: ...

class ItemVector(_message.Message):
    __slots__ = ("item_id", "categories", "vector")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, item_id: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Item]
    def __init__(self, items: _Optional[_Iterable[_Union[_gateway_pb2.Item, _Mapping]]] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("upserted", "vectors", "reused_encodings", "encoder")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    REUSED_ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    vectors: _containers.RepeatedCompositeFieldContainer[ItemVector]
    reused_encodings: int
    encoder: str
    def __init__(self, upserted: _Optional[int] = ..., vectors: _Optional[_Iterable[_Union[ItemVector, _Mapping]]] = ..., reused_encodings: _Optional[int] = ..., encoder: _Optional[str] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class GetItemsRequest(_message.Message):
    __slots__ = ("item_ids", "allow_missing")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    allow_missing: bool
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class GetItemsResponse(_message.Message):
    __slots__ = ("items", "missing_item_ids")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MISSING_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Item]
    missing_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[_gateway_pb2.Item, _Mapping]]] = ..., missing_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EncodeTextsRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class EncodeTextsResponse(_message.Message):
    __slots__ = ("vectors", "encoder")
    class Vector(_message.Message):
        __slots__ = ("values",)
        VALUES_FIELD_NUMBER: _ClassVar[int]
        values: _containers.RepeatedScalarFieldContainer[float]
        def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[EncodeTextsResponse.Vector]
    encoder: str
    def __init__(self, vectors: _Optional[_Iterable[_Union[EncodeTextsResponse.Vector, _Mapping]]] = ..., encoder: _Optional[str] = ...) -> None: ...

class ListItemVectorsRequest(_message.Message):
    __slots__ = ("after_item_id", "limit")
    AFTER_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after_item_id: str
    limit: int
    def __init__(self, after_item_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListItemVectorsResponse(_message.Message):
    __slots__ = ("vectors", "next_after_item_id")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[ItemVector]
    next_after_item_id: str
    def __init__(self, vectors: _Optional[_Iterable[_Union[ItemVector, _Mapping]]] = ..., next_after_item_id: _Optional[str] = ...) -> None: ...
