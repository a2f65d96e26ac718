"""Exceptions raised by the Task Manager client.

Every error the server reports has the shape::

    {"error": {"code": "...", "message": "...", "details": {...}},
     "timestamp": "...", "request_id": "req_..."}

and becomes a :class:`TaskManagerError` subclass chosen by ``error.code`` (falling
back to the HTTP status for codes this version does not know).
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "TaskManagerError",
    "ValidationError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "AuthenticationError",
    "NotFoundError",
    "TaskNotFoundError",
    "ArtifactNotFoundError",
    "RouteNotFoundError",
    "MethodNotAllowedError",
    "ConflictError",
    "TaskNotCancellableError",
    "IdempotencyKeyReusedError",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "RateLimitedError",
    "ServerError",
    "InternalServerError",
    "ServiceUnavailableError",
    "WorkerUnavailableError",
    "TaskManagerConnectionError",
    "TaskManagerTimeoutError",
    "WaitTimeoutError",
    "ProtocolError",
    "error_from_response",
]


class TaskManagerError(Exception):
    """Base class of every error raised by this package.

    Attributes:
        code: the server's error code (``"VALIDATION_ERROR"``, ...), or a client-side
            code such as ``"CONNECTION_ERROR"``.
        message: human-readable message.
        details: the server's ``error.details`` object (empty dict when absent).
        status: HTTP status code, or ``None`` when no response was received.
        request_id: the server's request id (body ``request_id`` or ``X-Request-Id``).
        timestamp: the server's error timestamp, when given.
        headers: response headers (lower-case names), when there was a response.
    """

    default_code = "TASK_MANAGER_ERROR"

    def __init__(
        self,
        code: Optional[str] = None,
        message: str = "",
        details: Optional[Mapping[str, Any]] = None,
        status: Optional[int] = None,
        request_id: Optional[str] = None,
        *,
        timestamp: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        body: Any = None,
    ) -> None:
        self.code = code or self.default_code
        self.message = message or self.code
        self.details: Dict[str, Any] = dict(details or {})
        self.status = status
        self.request_id = request_id
        self.timestamp = timestamp
        self.headers: Dict[str, str] = dict(headers or {})
        self.body = body
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(str(self.status))
        parts.append(self.code)
        text = f"[{' '.join(parts)}] {self.message}"
        if self.request_id:
            text += f" (request_id={self.request_id})"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"status={self.status!r}, request_id={self.request_id!r})"
        )


# ---- 4xx ---------------------------------------------------------------------


class ValidationError(TaskManagerError):
    """422 ``VALIDATION_ERROR``: a field is missing, unknown or out of bounds.

    ``details["field"]`` names the field (``"input_data.prompt"``, ``"limit"``, ...).
    """

    default_code = "VALIDATION_ERROR"

    @property
    def field(self) -> Optional[str]:
        value = self.details.get("field")
        return value if isinstance(value, str) else None


class InvalidRequestError(TaskManagerError):
    """400 ``INVALID_REQUEST``: the request could not be parsed (e.g. invalid JSON)."""

    default_code = "INVALID_REQUEST"


class AuthenticationError(TaskManagerError):
    """401 ``UNAUTHORIZED``."""

    default_code = "UNAUTHORIZED"


class NotFoundError(TaskManagerError):
    """A 404 (or another ``*_NOT_FOUND`` code)."""

    default_code = "NOT_FOUND"


class ModelNotFoundError(NotFoundError):
    """400 ``MODEL_NOT_FOUND``: no catalog entry or live worker for ``model_name``,
    or the model does not serve ``task_type``."""

    default_code = "MODEL_NOT_FOUND"


class TaskNotFoundError(NotFoundError):
    """404 ``TASK_NOT_FOUND``."""

    default_code = "TASK_NOT_FOUND"


class ArtifactNotFoundError(NotFoundError):
    """404 ``ARTIFACT_NOT_FOUND`` (or an artifact name the task's result does not list)."""

    default_code = "ARTIFACT_NOT_FOUND"


class RouteNotFoundError(NotFoundError):
    """404 ``ROUTE_NOT_FOUND``: the server has no such endpoint (check ``base_url``)."""

    default_code = "ROUTE_NOT_FOUND"


class MethodNotAllowedError(TaskManagerError):
    """405 ``METHOD_NOT_ALLOWED``."""

    default_code = "METHOD_NOT_ALLOWED"


class ConflictError(TaskManagerError):
    """Any 409: the request conflicts with the resource's current state."""

    default_code = "CONFLICT"


class TaskNotCancellableError(ConflictError):
    """409 ``TASK_NOT_CANCELLABLE``: the task already completed or failed."""

    default_code = "TASK_NOT_CANCELLABLE"


class IdempotencyKeyReusedError(ConflictError):
    """409 ``IDEMPOTENCY_KEY_REUSED``: the key was used before for a different request."""

    default_code = "IDEMPOTENCY_KEY_REUSED"


class PayloadTooLargeError(TaskManagerError):
    """413 ``PAYLOAD_TOO_LARGE``."""

    default_code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaTypeError(TaskManagerError):
    """415 ``UNSUPPORTED_MEDIA_TYPE``."""

    default_code = "UNSUPPORTED_MEDIA_TYPE"


class RateLimitedError(TaskManagerError):
    """429 ``RATE_LIMITED``. ``retry_after`` is the ``Retry-After`` header in seconds
    (``None`` if the server sent none)."""

    default_code = "RATE_LIMITED"

    def __init__(self, *args: Any, retry_after: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


# ---- 5xx ---------------------------------------------------------------------


class ServerError(TaskManagerError):
    """A 5xx response."""

    default_code = "SERVER_ERROR"


class InternalServerError(ServerError):
    """500 ``INTERNAL_ERROR``."""

    default_code = "INTERNAL_ERROR"


class ServiceUnavailableError(ServerError):
    """503 ``SERVICE_UNAVAILABLE``: the task store cannot be read or written.

    ``retry_after`` carries a ``Retry-After`` header when the server sent one.
    """

    default_code = "SERVICE_UNAVAILABLE"

    def __init__(self, *args: Any, retry_after: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class WorkerUnavailableError(ServiceUnavailableError):
    """503 ``WORKER_UNAVAILABLE``: no worker serves the model (servers started with
    ``TASK_MANAGER_REJECT_WITHOUT_WORKER=true``). A subclass of
    :class:`ServiceUnavailableError` since both are 503s; check ``code`` to tell them apart."""

    default_code = "WORKER_UNAVAILABLE"


# ---- client side ---------------------------------------------------------------


class TaskManagerConnectionError(TaskManagerError):
    """The server could not be reached, or the connection broke before a full response."""

    default_code = "CONNECTION_ERROR"


class ProtocolError(TaskManagerConnectionError):
    """The server's response was not valid HTTP/1.x."""

    default_code = "PROTOCOL_ERROR"


# Before Python 3.11 asyncio.TimeoutError is not the built-in TimeoutError: be both.
_TIMEOUT_BASES = (TimeoutError,) if asyncio.TimeoutError is TimeoutError else (asyncio.TimeoutError, TimeoutError)


class TaskManagerTimeoutError(TaskManagerError, *_TIMEOUT_BASES):  # type: ignore[misc]
    """One HTTP request took longer than the client's ``timeout``.

    Also a :class:`TimeoutError` and an :class:`asyncio.TimeoutError`."""

    default_code = "REQUEST_TIMEOUT"


class WaitTimeoutError(TaskManagerError, *_TIMEOUT_BASES):  # type: ignore[misc]
    """:meth:`TaskManagerClient.wait_for_task` gave up before the task finished.

    A subclass of :class:`asyncio.TimeoutError` (and of :class:`TimeoutError`); ``task``
    is the last state seen (``None`` if none was fetched)."""

    default_code = "WAIT_TIMEOUT"

    def __init__(self, *args: Any, task: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task = task


# ---- mapping -------------------------------------------------------------------

_BY_CODE: Dict[str, Type[TaskManagerError]] = {
    "VALIDATION_ERROR": ValidationError,
    "INVALID_REQUEST": InvalidRequestError,
    "MODEL_NOT_FOUND": ModelNotFoundError,
    "UNAUTHORIZED": AuthenticationError,
    "TASK_NOT_FOUND": TaskNotFoundError,
    "ARTIFACT_NOT_FOUND": ArtifactNotFoundError,
    "ROUTE_NOT_FOUND": RouteNotFoundError,
    "WORKER_NOT_FOUND": NotFoundError,
    "METHOD_NOT_ALLOWED": MethodNotAllowedError,
    "TASK_NOT_CANCELLABLE": TaskNotCancellableError,
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReusedError,
    "LEASE_CONFLICT": ConflictError,
    "CONFLICT": ConflictError,
    "PAYLOAD_TOO_LARGE": PayloadTooLargeError,
    "UNSUPPORTED_MEDIA_TYPE": UnsupportedMediaTypeError,
    "RATE_LIMITED": RateLimitedError,
    "INTERNAL_ERROR": InternalServerError,
    "SERVICE_UNAVAILABLE": ServiceUnavailableError,
    "WORKER_UNAVAILABLE": WorkerUnavailableError,
}

_BY_STATUS: Dict[int, Type[TaskManagerError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: ValidationError,
    429: RateLimitedError,
    500: InternalServerError,
    503: ServiceUnavailableError,
}


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``None`` if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime
            from datetime import datetime, timezone

            when = parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            seconds = (when - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def error_from_response(status: int, headers: Mapping[str, str], body: Any) -> TaskManagerError:
    """Build the exception for an error response.

    ``body`` is the decoded JSON body (a dict in the server's error shape), or the raw
    text/bytes when the body was not JSON (e.g. a proxy's HTML page).
    """
    code: Optional[str] = None
    message = ""
    details: Dict[str, Any] = {}
    request_id = headers.get("x-request-id")
    timestamp = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code") if isinstance(err.get("code"), str) else None
            message = str(err.get("message") or "")
            if isinstance(err.get("details"), dict):
                details = err["details"]
        elif isinstance(err, str):  # tolerate {"error": "text"}
            message = err
        if isinstance(body.get("request_id"), str):
            request_id = body["request_id"]
        if isinstance(body.get("timestamp"), str):
            timestamp = body["timestamp"]
    elif isinstance(body, (bytes, str)) and body:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        message = text.strip()[:500]

    cls: Optional[Type[TaskManagerError]] = _BY_CODE.get(code) if code else None
    if cls is None:
        if code and code.endswith("_NOT_FOUND"):
            cls = NotFoundError
        else:
            cls = _BY_STATUS.get(status)
            if cls is None:
                cls = ServerError if status >= 500 else TaskManagerError
    if code is None:
        code = cls.default_code if cls not in (TaskManagerError, ServerError) else f"HTTP_{status}"
    if not message:
        message = f"HTTP {status}"

    kwargs: Dict[str, Any] = dict(timestamp=timestamp, headers=headers, body=body)
    if issubclass(cls, (RateLimitedError, ServiceUnavailableError)):
        kwargs["retry_after"] = parse_retry_after(headers.get("retry-after"))
    return cls(code, message, details, status, request_id, **kwargs)
