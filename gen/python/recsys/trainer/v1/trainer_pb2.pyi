import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ForgetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ForgetUserResponse(_message.Message):
    __slots__ = ("model_knew_user", "replay_samples_deleted", "model_versions_rewritten", "checkpoints_rewritten")
    MODEL_KNEW_USER_FIELD_NUMBER: _ClassVar[int]
    REPLAY_SAMPLES_DELETED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_REWRITTEN_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_REWRITTEN_FIELD_NUMBER: _ClassVar[int]
    model_knew_user: bool
    replay_samples_deleted: int
    model_versions_rewritten: int
    checkpoints_rewritten: int
    def __init__(self, model_knew_user: _Optional[bool] = ..., replay_samples_deleted: _Optional[int] = ..., model_versions_rewritten: _Optional[int] = ..., checkpoints_rewritten: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("live_version", "trained_offset", "log_end_offset", "last_publish", "live_metrics", "last_gate_decision", "live_trained_offset", "state", "full_retrain_running", "events_learned", "previous_version", "last_full_retrain_reason", "ray_address", "learned_offset_sum", "ranking_settings", "ranking_changes", "last_ranking_change", "last_full_retrain_node_id", "last_full_retrain_pid")
    class LiveMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RankingSettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LOG_END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAST_PUBLISH_FIELD_NUMBER: _ClassVar[int]
    LIVE_METRICS_FIELD_NUMBER: _ClassVar[int]
    LAST_GATE_DECISION_FIELD_NUMBER: _ClassVar[int]
    LIVE_TRAINED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FULL_RETRAIN_RUNNING_FIELD_NUMBER: _ClassVar[int]
    EVENTS_LEARNED_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_FULL_RETRAIN_REASON_FIELD_NUMBER: _ClassVar[int]
    RAY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEARNED_OFFSET_SUM_FIELD_NUMBER: _ClassVar[int]
    RANKING_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    RANKING_CHANGES_FIELD_NUMBER: _ClassVar[int]
    LAST_RANKING_CHANGE_FIELD_NUMBER: _ClassVar[int]
    LAST_FULL_RETRAIN_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_FULL_RETRAIN_PID_FIELD_NUMBER: _ClassVar[int]
    live_version: str
    trained_offset: int
    log_end_offset: int
    last_publish: _timestamp_pb2.Timestamp
    live_metrics: _containers.ScalarMap[str, float]
    last_gate_decision: str
    live_trained_offset: int
    state: str
    full_retrain_running: bool
    events_learned: int
    previous_version: str
    last_full_retrain_reason: str
    ray_address: str
    learned_offset_sum: int
    ranking_settings: _containers.ScalarMap[str, float]
    ranking_changes: int
    last_ranking_change: str
    last_full_retrain_node_id: str
    last_full_retrain_pid: int
    def __init__(self, live_version: _Optional[str] = ..., trained_offset: _Optional[int] = ..., log_end_offset: _Optional[int] = ..., last_publish: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., live_metrics: _Optional[_Mapping[str, float]] = ..., last_gate_decision: _Optional[str] = ..., live_trained_offset: _Optional[int] = ..., state: _Optional[str] = ..., full_retrain_running: _Optional[bool] = ..., events_learned: _Optional[int] = ..., previous_version: _Optional[str] = ..., last_full_retrain_reason: _Optional[str] = ..., ray_address: _Optional[str] = ..., learned_offset_sum: _Optional[int] = ..., ranking_settings: _Optional[_Mapping[str, float]] = ..., ranking_changes: _Optional[int] = ..., last_ranking_change: _Optional[str] = ..., last_full_retrain_node_id: _Optional[str] = ..., last_full_retrain_pid: _Optional[int] = ...) -> None: ...

class TriggerRetrainRequest(_message.Message):
    __slots__ = ("full", "shuffle_labels")
    FULL_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_LABELS_FIELD_NUMBER: _ClassVar[int]
    full: bool
    shuffle_labels: bool
    def __init__(self, full: _Optional[bool] = ..., shuffle_labels: _Optional[bool] = ...) -> None: ...

class TriggerRetrainResponse(_message.Message):
    __slots__ = ("started",)
    STARTED_FIELD_NUMBER: _ClassVar[int]
    started: bool
    def __init__(self, started: _Optional[bool] = ...) -> None: ...

class WaitUntilTrainedRequest(_message.Message):
    __slots__ = ("offset", "timeout_s")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    offset: int
    timeout_s: float
    def __init__(self, offset: _Optional[int] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class WaitUntilTrainedResponse(_message.Message):
    __slots__ = ("reached", "live_version", "live_trained_offset")
    REACHED_FIELD_NUMBER: _ClassVar[int]
    LIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIVE_TRAINED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    reached: bool
    live_version: str
    live_trained_offset: int
    def __init__(self, reached: _Optional[bool] = ..., live_version: _Optional[str] = ..., live_trained_offset: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("live_version", "rolled_back_from")
    LIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_FROM_FIELD_NUMBER: _ClassVar[int]
    live_version: str
    rolled_back_from: str
    def __init__(self, live_version: _Optional[str] = ..., rolled_back_from: _Optional[str] = ...) -> None: ...
