"""Data classes for the Task Manager API's JSON objects.

Every class keeps the fields the server sent under their API names. Fields this version
does not know are kept in ``extra`` (so a newer server never breaks an older client), and
``to_dict()`` gives back the original JSON object. Timestamps stay ISO-8601 strings as the
server sent them; :func:`parse_timestamp` turns one into an aware ``datetime``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional

__all__ = [
    "TaskStatus",
    "TaskType",
    "TERMINAL_STATUSES",
    "Task",
    "TaskList",
    "CancelResult",
    "Artifact",
    "parse_timestamp",
]


class TaskStatus:
    """Task status values (plain strings, so ``task.status == "completed"`` works)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskType:
    """Task types the API reference defines."""

    TEXT_GENERATION = "text_generation"
    IMAGE_GENERATION = "image_generation"
    TEXT_TO_SPEECH = "text_to_speech"
    IMAGE_TO_TEXT = "image_to_text"


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


def parse_timestamp(value: Optional[str]) -> Optional[datetime]:
    """An ISO-8601 timestamp as the server sends it (``2025-05-30T12:00:00.000Z``) as an
    aware UTC ``datetime``; ``None`` stays ``None``."""
    if value is None:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python < 3.11 fromisoformat only takes 0, 3 or 6 fractional digits.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = head + "." + (digits + "000000")[:6] + rest[i:]
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _split(cls: Any, data: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__}.from_dict expects a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "extra"}
    kwargs: Dict[str, Any] = {}
    extra: Dict[str, Any] = {}
    for key, value in data.items():
        if key in known:
            kwargs[key] = value
        else:
            extra[key] = value
    kwargs["extra"] = extra
    return kwargs


def _to_dict(obj: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name == "extra" or not f.init:
            continue
        value = getattr(obj, f.name)
        if f.name in getattr(obj, "_present", ()) or value is not None:
            out[f.name] = value
    out.update(obj.extra)
    return out


@dataclass
class Artifact:
    """A binary output of a task (``result["artifacts"][i]``): audio, an image, ..."""

    name: str
    url: str
    content_type: Optional[str] = None
    size: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Artifact":
        return cls(**_split(cls, data))

    def to_dict(self) -> Dict[str, Any]:
        return _to_dict(self)


@dataclass
class Task:
    """A task as ``POST /tasks``, ``GET /tasks/{id}`` or ``GET /tasks`` return it.

    The create response and list entries carry fewer fields than ``GET /tasks/{id}``;
    fields the server did not send are ``None``. ``extra`` holds fields unknown to this
    client version.
    """

    task_id: str
    status: str
    task_type: Optional[str] = None
    model_name: Optional[str] = None
    priority: Optional[int] = None
    created_at: Optional[str] = None
    started_at: Optional[str] = None
    completed_at: Optional[str] = None
    cancelled_at: Optional[str] = None
    worker_id: Optional[str] = None
    attempts: Optional[int] = None
    max_attempts: Optional[int] = None
    timeout_seconds: Optional[float] = None
    progress: Optional[float] = None
    estimated_completion: Optional[str] = None
    queue_position: Optional[int] = None
    input_data: Optional[Dict[str, Any]] = None
    parameters: Optional[Dict[str, Any]] = None
    result: Any = None
    error: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    # Names of the fields the server actually sent (so to_dict keeps explicit nulls).
    _present: frozenset = field(default=frozenset(), init=False, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Task":
        kwargs = _split(cls, data)
        if "task_id" not in kwargs or "status" not in kwargs:
            raise ValueError("a task object needs task_id and status")
        task = cls(**kwargs)
        task._present = frozenset(k for k in data.keys() if k in kwargs)
        return task

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object this task was built from (fields the server sent, ``extra`` included)."""
        return _to_dict(self)

    # -- conveniences ----------------------------------------------------------

    @property
    def is_terminal(self) -> bool:
        """``True`` once the task is completed, failed or cancelled."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_completed(self) -> bool:
        return self.status == TaskStatus.COMPLETED

    @property
    def error_code(self) -> Optional[str]:
        """``error["code"]`` of a failed task (``ENGINE_ERROR``, ``TIMEOUT``, ...)."""
        if isinstance(self.error, dict):
            code = self.error.get("code")
            return code if isinstance(code, str) else None
        return None

    @property
    def error_message(self) -> Optional[str]:
        if isinstance(self.error, dict):
            message = self.error.get("message")
            return message if isinstance(message, str) else None
        return None

    @property
    def artifacts(self) -> List[Artifact]:
        """``result["artifacts"]`` as :class:`Artifact` objects (empty when none)."""
        if not isinstance(self.result, dict):
            return []
        items = self.result.get("artifacts")
        if not isinstance(items, list):
            return []
        return [
            Artifact.from_dict(a)
            for a in items
            if isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("url"), str)
        ]

    def artifact(self, name: str) -> Optional[Artifact]:
        for a in self.artifacts:
            if a.name == name:
                return a
        return None

    @property
    def created_at_dt(self) -> Optional[datetime]:
        return parse_timestamp(self.created_at)

    @property
    def started_at_dt(self) -> Optional[datetime]:
        return parse_timestamp(self.started_at)

    @property
    def completed_at_dt(self) -> Optional[datetime]:
        return parse_timestamp(self.completed_at)

    @property
    def cancelled_at_dt(self) -> Optional[datetime]:
        return parse_timestamp(self.cancelled_at)

    @property
    def estimated_completion_dt(self) -> Optional[datetime]:
        return parse_timestamp(self.estimated_completion)


@dataclass
class TaskList:
    """One page of ``GET /tasks``."""

    tasks: List[Task]
    total: int
    limit: int
    offset: int
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TaskList":
        kwargs = _split(cls, data)
        kwargs["tasks"] = [Task.from_dict(t) for t in (kwargs.get("tasks") or [])]
        kwargs.setdefault("total", len(kwargs["tasks"]))
        kwargs.setdefault("limit", len(kwargs["tasks"]))
        kwargs.setdefault("offset", 0)
        return cls(**kwargs)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "tasks": [t.to_dict() for t in self.tasks],
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
        }
        out.update(self.extra)
        return out

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def has_more(self) -> bool:
        """Whether a later page exists (``offset + len(tasks) < total``)."""
        return self.offset + len(self.tasks) < self.total


@dataclass
class CancelResult:
    """The response of ``DELETE /tasks/{id}``: ``task_id``, ``status`` and ``cancelled_at``."""

    task_id: str
    status: str
    cancelled_at: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CancelResult":
        kwargs = _split(cls, data)
        if "task_id" not in kwargs or "status" not in kwargs:
            raise ValueError("a cancel response needs task_id and status")
        return cls(**kwargs)

    def to_dict(self) -> Dict[str, Any]:
        return _to_dict(self)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def cancelled_at_dt(self) -> Optional[datetime]:
        return parse_timestamp(self.cancelled_at)
