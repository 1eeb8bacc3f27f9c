"""Domain errors. Servicers map them to gRPC status codes; domain modules never import grpc."""

from __future__ import annotations


class ServiceError(Exception):
    """Base for errors a caller can act on; the message is shown to the caller."""

    status_name = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    """Bad input. The message starts with the offending field, e.g. `items[3].item_id`."""

    status_name = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Undecodable(ServiceError):
    """The request's bytes are not the message the method takes."""

    status_name = "INVALID_ARGUMENT"

    def __init__(self) -> None:
        super().__init__("the request could not be decoded")


class NotFound(ServiceError):
    status_name = "NOT_FOUND"


class FailedPrecondition(ServiceError):
    status_name = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    status_name = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # > 0: sent as google.rpc.RetryInfo


class StreamIdle(ServiceError):
    status_name = "DEADLINE_EXCEEDED"


class Unauthenticated(ServiceError):
    status_name = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    status_name = "PERMISSION_DENIED"


class Unavailable(ServiceError):
    status_name = "UNAVAILABLE"
