"""Async Python client (standard library only) for the Task Manager API.

    import asyncio
    from task_manager_client import TaskManagerClient

    async def main():
        async with TaskManagerClient("http://localhost:8002") as client:
            task = await client.create_task(
                task_type="text_generation",
                model_name="tiny-llama",
                input_data={"prompt": "Hello world!"},
            )
            task = await client.wait_for_task(task.task_id, timeout=120)
            print(task.status, task.result)

    asyncio.run(main())
"""

from ._version import __version__
from .client import TaskManagerClient
from .errors import (
    ArtifactNotFoundError,
    AuthenticationError,
    ConflictError,
    IdempotencyKeyReusedError,
    InternalServerError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelNotFoundError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    RateLimitedError,
    RouteNotFoundError,
    ServerError,
    ServiceUnavailableError,
    TaskManagerConnectionError,
    TaskManagerError,
    TaskManagerTimeoutError,
    TaskNotCancellableError,
    TaskNotFoundError,
    UnsupportedMediaTypeError,
    ValidationError,
    WaitTimeoutError,
    WorkerUnavailableError,
)
from .models import (
    TERMINAL_STATUSES,
    Artifact,
    CancelResult,
    Task,
    TaskList,
    TaskStatus,
    TaskType,
    parse_timestamp,
)

__all__ = [
    "__version__",
    "TaskManagerClient",
    # models
    "Task",
    "TaskList",
    "CancelResult",
    "Artifact",
    "TaskStatus",
    "TaskType",
    "TERMINAL_STATUSES",
    "parse_timestamp",
    # errors
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
    "ProtocolError",
    "TaskManagerTimeoutError",
    "WaitTimeoutError",
]
