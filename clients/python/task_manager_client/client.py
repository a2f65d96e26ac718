"""The asyncio client for the Task Manager REST API."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import ssl as _ssl
import time
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote, urlencode, urljoin, urlsplit

from ._http import ConnectionFailed, HTTPTransport, Origin, Response
from ._version import __version__
from .errors import (
    ArtifactNotFoundError,
    TaskManagerError,
    TaskManagerTimeoutError,
    WaitTimeoutError,
    error_from_response,
)
from .models import TERMINAL_STATUSES, CancelResult, Task, TaskList

__all__ = ["TaskManagerClient"]

logger = logging.getLogger("task_manager_client")
logger.addHandler(logging.NullHandler())

TaskRef = Union[str, Task, CancelResult]

# The longest Prefer: wait=N the client asks for in one request.
MAX_PREFER_WAIT_SECONDS = 30

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def _task_id_of(task: TaskRef) -> str:
    if isinstance(task, (Task, CancelResult)):
        return task.task_id
    if isinstance(task, str) and task:
        return task
    raise TypeError(f"expected a task id (str) or a Task, got {type(task).__name__}")


def _path_segment(value: str) -> str:
    return quote(value, safe="")


class TaskManagerClient:
    """Async client for the Task Manager API.

    >>> async with TaskManagerClient("http://localhost:8002") as client:
    ...     task = await client.create_task("text_generation", "tiny-llama", {"prompt": "Hi"})
    ...     task = await client.wait_for_task(task.task_id, timeout=60)

    Args:
        base_url: the server, e.g. ``http://localhost:8002`` (``https://`` uses TLS; a
            path prefix such as ``http://gateway/task-manager`` is kept).
        timeout: seconds allowed for each HTTP request (connect, send and receive).
        headers: headers sent with every request (e.g. ``Authorization``).
        retries: extra attempts for retryable failures (see below); ``0`` disables them.
        backoff: first retry delay in seconds; doubles each retry (with jitter), capped
            at ``max_backoff``.
        max_backoff: longest delay between two attempts when the server names none.
        max_retry_wait: the longest ``Retry-After`` the client waits out by itself; a
            ``429`` asking for longer raises :class:`RateLimitedError` at once.
        ssl_context: the TLS context for ``https`` (default: ``ssl.create_default_context()``).

    Retries: ``GET`` and ``DELETE`` requests (and ``POST /tasks`` when an
    ``idempotency_key`` is given) are retried on connection errors and on ``429`` /
    ``503`` responses, honouring ``Retry-After``. Other requests are sent once.

    The client keeps idle keep-alive connections; close it with :meth:`close` or use it
    as ``async with``. It must be used from one event loop at a time.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: Optional[float] = 30.0,
        headers: Optional[Mapping[str, str]] = None,
        retries: int = 2,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        max_retry_wait: float = 10.0,
        ssl_context: Optional[_ssl.SSLContext] = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url:
            raise ValueError("base_url must be a URL such as http://localhost:8002")
        parts = urlsplit(base_url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not parts.hostname:
            raise ValueError(f"base_url has no host: {base_url!r}")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"base_url has an invalid port: {base_url!r}") from exc
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None for no limit)")
        self._origin: Origin = (scheme, parts.hostname, port or (443 if scheme == "https" else 80))
        self._prefix = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        self.base_url = f"{scheme}://{parts.netloc}{self._prefix}"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_wait = max_retry_wait
        self._headers: List[Tuple[str, str]] = [
            ("User-Agent", f"task-manager-client-python/{__version__}"),
            ("Accept", "application/json"),
        ]
        if headers:
            lowered = {k.lower() for k in headers}
            self._headers = [(k, v) for k, v in self._headers if k.lower() not in lowered]
            self._headers.extend((str(k), str(v)) for k, v in headers.items())
        self._transport = HTTPTransport(ssl_context=ssl_context)

    def __repr__(self) -> str:
        return f"TaskManagerClient({self.base_url!r})"

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> "TaskManagerClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close pooled connections. The client cannot be used afterwards."""
        await self._transport.aclose()

    @property
    def closed(self) -> bool:
        return self._transport.closed

    # -- tasks ---------------------------------------------------------------------

    async def create_task(
        self,
        task_type: str,
        model_name: str,
        input_data: Mapping[str, Any],
        parameters: Optional[Mapping[str, Any]] = None,
        *,
        priority: Optional[int] = None,
        max_attempts: Optional[int] = None,
        timeout_seconds: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        extra_fields: Optional[Mapping[str, Any]] = None,
    ) -> Task:
        """``POST /tasks``: queue a task and return it (status ``pending`` as a rule).

        ``priority`` (-100..100, higher runs first), ``max_attempts`` (1..20) and
        ``timeout_seconds`` (1..86400) are sent only when given. ``idempotency_key`` is
        sent as the ``Idempotency-Key`` header and makes the request retryable.
        ``extra_fields`` are merged into the body as-is (for fields newer servers accept).

        Raises :class:`ModelNotFoundError`, :class:`ValidationError`, ... on refusal.
        """
        body: Dict[str, Any] = {
            "task_type": task_type,
            "model_name": model_name,
            "input_data": dict(input_data) if isinstance(input_data, Mapping) else input_data,
        }
        if parameters is not None:
            body["parameters"] = dict(parameters) if isinstance(parameters, Mapping) else parameters
        if priority is not None:
            body["priority"] = priority
        if max_attempts is not None:
            body["max_attempts"] = max_attempts
        if timeout_seconds is not None:
            body["timeout_seconds"] = timeout_seconds
        if extra_fields:
            body.update(extra_fields)
        headers: List[Tuple[str, str]] = []
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str) or not idempotency_key:
                raise ValueError("idempotency_key must be a non-empty string")
            headers.append(("Idempotency-Key", idempotency_key))
        response = await self._request(
            "POST", "/tasks", json_body=body, headers=headers, retryable=idempotency_key is not None
        )
        return self._parse(Task, response)

    async def get_task(self, task_id: TaskRef) -> Task:
        """``GET /tasks/{task_id}``: the task's current state, result and error."""
        response = await self._get_task_response(_task_id_of(task_id), wait=None)
        return self._parse(Task, response)

    async def list_tasks(
        self,
        *,
        status: Optional[str] = None,
        task_type: Optional[str] = None,
        model_name: Optional[str] = None,
        limit: int = 50,
        offset: int = 0,
        sort_by: Optional[str] = None,
        sort_order: Optional[str] = None,
    ) -> TaskList:
        """``GET /tasks``: one page of tasks (``limit`` 1..1000), newest first by default."""
        params = {
            "status": status,
            "task_type": task_type,
            "model_name": model_name,
            "limit": limit,
            "offset": offset,
            "sort_by": sort_by,
            "sort_order": sort_order,
        }
        response = await self._request("GET", "/tasks", params=params)
        return self._parse(TaskList, response)

    async def iter_tasks(
        self,
        *,
        status: Optional[str] = None,
        task_type: Optional[str] = None,
        model_name: Optional[str] = None,
        sort_by: Optional[str] = None,
        sort_order: Optional[str] = None,
        page_size: int = 100,
        offset: int = 0,
    ) -> AsyncIterator[Task]:
        """Every task matching the filters, fetching pages of ``page_size`` as needed::

            async for task in client.iter_tasks(status="completed"):
                ...

        Pages are offset-based: tasks created while iterating may shift later pages, so
        a task already yielded is never yielded twice (skipped by id).
        """
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        seen = set()
        while True:
            page = await self.list_tasks(
                status=status,
                task_type=task_type,
                model_name=model_name,
                limit=page_size,
                offset=offset,
                sort_by=sort_by,
                sort_order=sort_order,
            )
            for task in page.tasks:
                if task.task_id in seen:
                    continue
                seen.add(task.task_id)
                yield task
            offset += len(page.tasks)
            if not page.tasks or len(page.tasks) < page.limit or offset >= page.total:
                return

    async def cancel_task(self, task_id: TaskRef) -> CancelResult:
        """``DELETE /tasks/{task_id}``: cancel a pending or running task.

        Returns the cancel response (``task_id``, ``status``, ``cancelled_at``). Raises
        :class:`ConflictError` (``TASK_NOT_CANCELLABLE``, 409) for a completed or failed
        task and :class:`TaskNotFoundError` for an unknown one; cancelling a cancelled
        task returns it again.
        """
        path = f"/tasks/{_path_segment(_task_id_of(task_id))}"
        response = await self._request("DELETE", path)
        return self._parse(CancelResult, response)

    async def wait_for_task(
        self,
        task_id: TaskRef,
        *,
        timeout: Optional[float] = None,
        poll_interval: float = 1.0,
    ) -> Task:
        """Wait until the task is completed, failed or cancelled and return it.

        Each ``GET /tasks/{id}`` asks the server to hold the response until the task
        changes (``Prefer: wait=N``, N ≤ 30 s); a server that does not honour it is
        polled every ``poll_interval`` seconds. A failed or cancelled task is returned,
        not raised — check ``task.status``.

        Raises :class:`WaitTimeoutError` (an ``asyncio.TimeoutError``) after
        ``timeout`` seconds (``None``: no limit); its ``task`` is the last state seen.
        """
        if poll_interval < 0:
            raise ValueError("poll_interval must be >= 0")
        tid = _task_id_of(task_id)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(0.0, timeout)
        last: Dict[str, Optional[Task]] = {"task": None}

        async def poll() -> Task:
            previous_status: Optional[str] = None
            while True:
                wait_s: Optional[int] = MAX_PREFER_WAIT_SECONDS
                if deadline is not None:
                    remaining = deadline - loop.time()
                    wait_s = min(MAX_PREFER_WAIT_SECONDS, int(remaining)) if remaining >= 1 else None
                started = loop.time()
                response = await self._get_task_response(tid, wait=wait_s)
                task = self._parse(Task, response)
                last["task"] = task
                if task.status in TERMINAL_STATUSES:
                    return task
                elapsed = loop.time() - started
                honoured = response.header("preference-applied") is not None
                if honoured and task.status != previous_status:
                    delay = 0.0  # the server long-polls and something changed: ask again now
                else:
                    delay = max(0.0, poll_interval - elapsed)
                previous_status = task.status
                logger.debug(
                    "task %s is %s; next poll in %.2fs (prefer wait %s)",
                    tid, task.status, delay, "honoured" if honoured else "not honoured",
                )
                if delay:
                    await asyncio.sleep(delay)

        if deadline is None:
            return await poll()
        try:
            return await asyncio.wait_for(poll(), timeout=max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError as exc:
            if isinstance(exc, TaskManagerError):
                raise  # a single request timed out, not the wait
            seen = last["task"]
            raise WaitTimeoutError(
                "WAIT_TIMEOUT",
                f"task {tid} did not finish within {timeout} s"
                + (f" (last status: {seen.status})" if seen is not None else ""),
                {"task_id": tid, "timeout": timeout},
                task=seen,
            ) from None

    async def download_artifact(self, task: TaskRef, name: str) -> bytes:
        """The bytes of an artifact (``result["artifacts"][i]``), e.g. a TTS WAV file.

        ``task`` is a :class:`Task` (its artifact ``url`` is used, resolved against the
        server) or a task id (``/tasks/{id}/artifacts/{name}`` is fetched).
        """
        if not isinstance(name, str) or not name:
            raise ValueError("artifact name must be a non-empty string")
        tid = _task_id_of(task)
        url: Optional[str] = None
        if isinstance(task, Task):
            artifact = task.artifact(name)
            if artifact is not None:
                url = artifact.url
            elif task.is_terminal and task.result is not None:
                available = [a.name for a in task.artifacts]
                raise ArtifactNotFoundError(
                    "ARTIFACT_NOT_FOUND",
                    f"task {tid} has no artifact named {name!r} (artifacts: {', '.join(available) or 'none'})",
                    {"task_id": tid, "name": name, "available": available},
                )
        if url is None:
            url = f"{self._prefix}/tasks/{_path_segment(tid)}/artifacts/{_path_segment(name)}"
        # The artifact url is relative to the server (an absolute path, or a full URL).
        absolute = urljoin(self.base_url + "/", url)
        parts = urlsplit(absolute)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported artifact URL {url!r}")
        origin: Origin = (scheme, parts.hostname, parts.port or (443 if scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        response = await self._request(
            "GET",
            target,
            origin=origin,
            raw_target=True,
            accept="*/*",
            # Never send this client's headers (credentials) to another host.
            default_headers=origin == self._origin,
        )
        return response.body

    # -- system --------------------------------------------------------------------

    async def health(self) -> Dict[str, Any]:
        """``GET /health``: the health document (``status`` is ``"healthy"`` or
        ``"unhealthy"``; an unhealthy server answers 503 with the same document, which is
        returned rather than raised)."""
        response = await self._request("GET", "/health", allow_status=(503,), retryable=True)
        try:
            data = json.loads(response.body)
        except ValueError:
            data = None
        if response.status == 503 and not (isinstance(data, dict) and "status" in data):
            raise error_from_response(response.status, response.headers, data if data is not None else response.body)
        if not isinstance(data, dict):
            raise TaskManagerError("INVALID_RESPONSE", "health response is not a JSON object", status=response.status)
        return data

    async def list_models(self) -> List[Dict[str, Any]]:
        """``GET /models``: catalog entries and models advertised by live workers."""
        response = await self._request("GET", "/models")
        data = self._json_object(response)
        models = data.get("models")
        return list(models) if isinstance(models, list) else []

    # -- plumbing ------------------------------------------------------------------

    async def _get_task_response(self, task_id: str, *, wait: Optional[int]) -> Response:
        headers: List[Tuple[str, str]] = []
        extra_time = 0.0
        if wait is not None and wait >= 1:
            headers.append(("Prefer", f"wait={int(wait)}"))
            extra_time = float(wait)
        return await self._request(
            "GET", f"/tasks/{_path_segment(task_id)}", headers=headers, extra_time=extra_time
        )

    def _parse(self, cls: Any, response: Response) -> Any:
        data = self._json_object(response)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise TaskManagerError(
                "INVALID_RESPONSE",
                f"unexpected {cls.__name__} object from the server: {exc}",
                status=response.status,
                request_id=response.header("x-request-id"),
                body=data,
            ) from exc

    def _json_object(self, response: Response) -> Dict[str, Any]:
        try:
            data = json.loads(response.body)
        except ValueError as exc:
            raise TaskManagerError(
                "INVALID_RESPONSE",
                f"expected a JSON object from the server, got {response.body[:200]!r}",
                status=response.status,
                request_id=response.header("x-request-id"),
            ) from exc
        if not isinstance(data, dict):
            raise TaskManagerError(
                "INVALID_RESPONSE",
                f"expected a JSON object from the server, got {type(data).__name__}",
                status=response.status,
                request_id=response.header("x-request-id"),
            )
        return data

    def _retry_delay(self, attempt: int) -> float:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        return delay * random.uniform(0.5, 1.0)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Mapping[str, Any]] = None,
        json_body: Any = None,
        headers: Optional[List[Tuple[str, str]]] = None,
        retryable: Optional[bool] = None,
        allow_status: Tuple[int, ...] = (),
        extra_time: float = 0.0,
        origin: Optional[Origin] = None,
        raw_target: bool = False,
        accept: Optional[str] = None,
        default_headers: bool = True,
    ) -> Response:
        if self.closed:
            raise RuntimeError("the TaskManagerClient is closed")
        method = method.upper()
        target = path if raw_target else self._prefix + path
        if params:
            query = urlencode([(k, _query_value(v)) for k, v in params.items() if v is not None])
            if query:
                target += "?" + query
        all_headers: List[Tuple[str, str]] = list(self._headers) if default_headers else []
        if accept is not None:
            all_headers = [(k, v) for k, v in all_headers if k.lower() != "accept"]
            all_headers.append(("Accept", accept))
        body: Optional[bytes] = None
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
            all_headers.append(("Content-Type", "application/json"))
        if headers:
            all_headers.extend(headers)
        if retryable is None:
            retryable = method in _IDEMPOTENT_METHODS
        origin = origin or self._origin
        request_timeout = None if self.timeout is None else self.timeout + extra_time

        attempt = 0
        while True:
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(
                    self._transport.request(method, origin, target, all_headers, body), request_timeout
                )
            except asyncio.TimeoutError:
                raise TaskManagerTimeoutError(
                    "REQUEST_TIMEOUT", f"{method} {target} got no complete response within {request_timeout} s"
                ) from None
            except ConnectionFailed as exc:
                # A reused keep-alive connection the server closed meanwhile: nothing was
                # answered, so a retryable request goes again at once on a new connection.
                stale = exc.reused and not exc.response_started
                if retryable and attempt < self.retries:
                    delay = 0.0 if stale else self._retry_delay(attempt)
                    attempt += 1
                    logger.debug("%s %s: %s; retry %d/%d in %.2fs", method, target, exc, attempt, self.retries, delay)
                    if delay:
                        await asyncio.sleep(delay)
                    continue
                raise
            logger.debug(
                "%s %s -> %d (%.1f ms)", method, target, response.status, (time.monotonic() - started) * 1000
            )
            if 200 <= response.status < 300 or response.status in allow_status:
                return response
            error = error_from_response(response.status, response.headers, _decode_error_body(response))
            if retryable and response.status in (429, 503) and attempt < self.retries:
                retry_after = getattr(error, "retry_after", None)
                if retry_after is not None and retry_after > self.max_retry_wait:
                    raise error
                delay = retry_after if retry_after is not None else self._retry_delay(attempt)
                attempt += 1
                logger.debug(
                    "%s %s -> %d %s; retry %d/%d in %.2fs",
                    method, target, response.status, error.code, attempt, self.retries, delay,
                )
                await asyncio.sleep(delay)
                continue
            raise error


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _decode_error_body(response: Response) -> Any:
    """The decoded JSON error body, or the raw bytes when it is not JSON."""
    if not response.body:
        return None
    try:
        return json.loads(response.body)
    except ValueError:
        return response.body
