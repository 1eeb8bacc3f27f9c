from recsys.gateway.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VectorRecord(_message.Message):
    __slots__ = ("item_id", "vector", "categories")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_id: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("item_id", "score", "shared_categories", "closest_profile_item_id", "reserved")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SHARED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    CLOSEST_PROFILE_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    shared_categories: _containers.RepeatedScalarFieldContainer[str]
    closest_profile_item_id: str
    reserved: bool
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., shared_categories: _Optional[_Iterable[str]] = ..., closest_profile_item_id: _Optional[str] = ..., reserved: _Optional[bool] = ...) -> None: ...

class WeightedItem(_message.Message):
    __slots__ = ("item_id", "weight")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    weight: float
    def __init__(self, item_id: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class ItemWeights(_message.Message):
    __slots__ = ("item_ids", "weights")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., weights: _Optional[_Iterable[float]] = ...) -> None: ...

class SearchByProfileRequest(_message.Message):
    __slots__ = ("index", "profile", "k", "filter", "exclude_item_ids", "boosts")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    BOOSTS_FIELD_NUMBER: _ClassVar[int]
    index: str
    profile: _containers.RepeatedCompositeFieldContainer[WeightedItem]
    k: int
    filter: _gateway_pb2.Filter
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    boosts: ItemWeights
    def __init__(self, index: _Optional[str] = ..., profile: _Optional[_Iterable[_Union[WeightedItem, _Mapping]]] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[_gateway_pb2.Filter, _Mapping]] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., boosts: _Optional[_Union[ItemWeights, _Mapping]] = ...) -> None: ...

class StreamSearchRequest(_message.Message):
    __slots__ = ("search", "by_profile")
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    BY_PROFILE_FIELD_NUMBER: _ClassVar[int]
    search: SearchRequest
    by_profile: SearchByProfileRequest
    def __init__(self, search: _Optional[_Union[SearchRequest, _Mapping]] = ..., by_profile: _Optional[_Union[SearchByProfileRequest, _Mapping]] = ...) -> None: ...

class StreamSearchResponse(_message.Message):
    __slots__ = ("search", "by_profile")
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    BY_PROFILE_FIELD_NUMBER: _ClassVar[int]
    search: SearchResponse
    by_profile: SearchByProfileResponse
    def __init__(self, search: _Optional[_Union[SearchResponse, _Mapping]] = ..., by_profile: _Optional[_Union[SearchByProfileResponse, _Mapping]] = ...) -> None: ...

class SearchByProfileResponse(_message.Message):
    __slots__ = ("hits", "profile_items_found")
    HITS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ITEMS_FOUND_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    profile_items_found: int
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., profile_items_found: _Optional[int] = ...) -> None: ...

class UpsertVectorsRequest(_message.Message):
    __slots__ = ("index", "records")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    index: str
    records: _containers.RepeatedCompositeFieldContainer[VectorRecord]
    def __init__(self, index: _Optional[str] = ..., records: _Optional[_Iterable[_Union[VectorRecord, _Mapping]]] = ...) -> None: ...

class UpsertVectorsResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class DeleteVectorsRequest(_message.Message):
    __slots__ = ("index", "item_ids")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    index: str
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, index: _Optional[str] = ..., item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteVectorsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("index", "vector", "k", "filter", "exclude_item_ids", "boosts", "profile", "reserved")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    BOOSTS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    index: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    k: int
    filter: _gateway_pb2.Filter
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    boosts: ItemWeights
    profile: ProfileTerm
    reserved: ReservedSlots
    def __init__(self, index: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[_gateway_pb2.Filter, _Mapping]] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., boosts: _Optional[_Union[ItemWeights, _Mapping]] = ..., profile: _Optional[_Union[ProfileTerm, _Mapping]] = ..., reserved: _Optional[_Union[ReservedSlots, _Mapping]] = ...) -> None: ...

class ReservedSlots(_message.Message):
    __slots__ = ("slots", "category")
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    slots: int
    category: str
    def __init__(self, slots: _Optional[int] = ..., category: _Optional[str] = ...) -> None: ...

class ProfileTerm(_message.Message):
    __slots__ = ("index", "items", "weight")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    index: str
    items: _containers.RepeatedCompositeFieldContainer[WeightedItem]
    weight: float
    def __init__(self, index: _Optional[str] = ..., items: _Optional[_Iterable[_Union[WeightedItem, _Mapping]]] = ..., weight: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class SearchSimilarRequest(_message.Message):
    __slots__ = ("index", "item_id", "k", "filter")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    index: str
    item_id: str
    k: int
    filter: _gateway_pb2.Filter
    def __init__(self, index: _Optional[str] = ..., item_id: _Optional[str] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[_gateway_pb2.Filter, _Mapping]] = ...) -> None: ...

class SearchSimilarResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class GetIndexStatsRequest(_message.Message):
    __slots__ = ("index",)
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: str
    def __init__(self, index: _Optional[str] = ...) -> None: ...

class GetIndexStatsResponse(_message.Message):
    __slots__ = ("size", "dimension", "kind", "generation")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    size: int
    dimension: int
    kind: str
    generation: int
    def __init__(self, size: _Optional[int] = ..., dimension: _Optional[int] = ..., kind: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class DropIndexRequest(_message.Message):
    __slots__ = ("index",)
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: str
    def __init__(self, index: _Optional[str] = ...) -> None: ...

class DropIndexResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class ListIndexesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IndexInfo(_message.Message):
    __slots__ = ("name", "dimension", "size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimension: int
    size: int
    def __init__(self, name: _Optional[str] = ..., dimension: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class ListIndexesResponse(_message.Message):
    __slots__ = ("indexes",)
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    indexes: _containers.RepeatedCompositeFieldContainer[IndexInfo]
    def __init__(self, indexes: _Optional[_Iterable[_Union[IndexInfo, _Mapping]]] = ...) -> None: ...

class ExportVectorsRequest(_message.Message):
    __slots__ = ("index", "after_item_id", "limit")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    AFTER_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    index: str
    after_item_id: str
    limit: int
    def __init__(self, index: _Optional[str] = ..., after_item_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ExportVectorsResponse(_message.Message):
    __slots__ = ("records", "next_after_item_id")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[VectorRecord]
    next_after_item_id: str
    def __init__(self, records: _Optional[_Iterable[_Union[VectorRecord, _Mapping]]] = ..., next_after_item_id: _Optional[str] = ...) -> None: ...
