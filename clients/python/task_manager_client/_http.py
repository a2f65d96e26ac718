"""A small HTTP/1.1 client on asyncio streams (standard library only).

Internal: the public surface is :class:`task_manager_client.TaskManagerClient`.

- one request per connection at a time; idle keep-alive connections are pooled per
  origin and per event loop, and dropped once the peer closed them or they idled too long;
- responses framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or connection
  close; ``1xx`` interim responses are skipped;
- ``https`` through an :class:`ssl.SSLContext` (the default context unless given one).
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from .errors import ProtocolError, TaskManagerConnectionError

logger = logging.getLogger("task_manager_client")

# (scheme, host, port)
Origin = Tuple[str, str, int]

_STREAM_LIMIT = 1 << 20  # longest status/header/chunk-size line accepted
_MAX_HEADERS = 200


@dataclass
class Response:
    status: int
    reason: str
    headers: Dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    version: str = "HTTP/1.1"
    elapsed: float = 0.0
    keep_alive: bool = field(default=False, repr=False)

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self.headers.get(name.lower(), default)


class ConnectionFailed(TaskManagerConnectionError):
    """A connection-level failure, with what is known about how far the request got."""

    def __init__(self, message: str, *, reused: bool, response_started: bool, cause: Optional[BaseException] = None) -> None:
        super().__init__("CONNECTION_ERROR", message)
        self.reused = reused
        self.response_started = response_started
        if cause is not None:
            self.__cause__ = cause


class _Connection:
    __slots__ = ("origin", "reader", "writer", "idle_since", "uses")

    def __init__(self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.uses = 0

    def reusable(self, max_idle_seconds: float) -> bool:
        if self.writer.is_closing() or self.reader.at_eof() or self.reader.exception() is not None:
            return False
        return time.monotonic() - self.idle_since < max_idle_seconds

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # pragma: no cover - loop already closed etc.
            pass


def _host_header(origin: Origin) -> str:
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if (scheme == "http" and port == 80) or (scheme == "https" and port == 443):
        return shown
    return f"{shown}:{port}"


def _check_header(name: str, value: str) -> None:
    if not name or any(c in name for c in "\r\n:\0 \t"):
        raise ValueError(f"invalid HTTP header name {name!r}")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"invalid value for HTTP header {name!r} (contains CR, LF or NUL)")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"invalid value for HTTP header {name!r} (not ISO-8859-1 text)") from None


class HTTPTransport:
    """Connection pool plus request/response framing. Not thread-safe (one event loop)."""

    def __init__(
        self,
        *,
        ssl_context: Optional[_ssl.SSLContext] = None,
        max_idle_connections: int = 10,
        max_idle_seconds: float = 15.0,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_idle_connections = max_idle_connections
        self._max_idle_seconds = max_idle_seconds
        self._idle: Dict[Origin, List[_Connection]] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._closed = False

    # -- pool --------------------------------------------------------------------

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Connections belong to the loop that opened them; a new loop (a second
            # asyncio.run) starts with an empty pool.
            old_loop, self._loop = self._loop, loop
            if old_loop is not None and not old_loop.is_closed():
                for conns in self._idle.values():
                    for conn in conns:
                        conn.close()
            self._idle = {}

    def _ssl_for(self, scheme: str) -> Optional[_ssl.SSLContext]:
        if scheme != "https":
            return None
        if self._ssl_context is None:
            self._ssl_context = _ssl.create_default_context()
        return self._ssl_context

    async def _acquire(self, origin: Origin) -> Tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.reusable(self._max_idle_seconds):
                return conn, True
            conn.close()
        scheme, host, port = origin
        ssl_ctx = self._ssl_for(scheme)
        try:
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl_ctx,
                server_hostname=host if ssl_ctx is not None else None,
                limit=_STREAM_LIMIT,
            )
        except (OSError, _ssl.SSLError) as exc:
            raise ConnectionFailed(
                f"cannot connect to {scheme}://{_host_header(origin)}: {exc}",
                reused=False,
                response_started=False,
                cause=exc,
            ) from exc
        logger.debug("opened connection to %s://%s", scheme, _host_header(origin))
        return _Connection(origin, reader, writer), False

    def _release(self, conn: _Connection) -> None:
        if self._closed or asyncio.get_running_loop() is not self._loop:
            conn.close()
            return
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= self._max_idle_connections:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their request ends."""
        self._closed = True
        conns = [c for cs in self._idle.values() for c in cs]
        self._idle = {}
        for conn in conns:
            conn.close()
        for conn in conns:
            try:
                await asyncio.wait_for(conn.writer.wait_closed(), 1.0)
            except (Exception, asyncio.CancelledError):  # pragma: no cover - best effort
                pass

    @property
    def closed(self) -> bool:
        return self._closed

    def __del__(self) -> None:
        # A client dropped without close() (as in `client = TaskManagerClient(...)` at the
        # end of a coroutine): close its idle sockets while their loop still runs, so
        # nothing is left to warn about.
        idle = getattr(self, "_idle", None)
        loop = getattr(self, "_loop", None)
        if not idle or loop is None or loop.is_closed():
            return
        for conns in idle.values():
            for conn in conns:
                conn.close()
        idle.clear()

    # -- one exchange --------------------------------------------------------------

    async def request(
        self,
        method: str,
        origin: Origin,
        target: str,
        headers: Iterable[Tuple[str, str]],
        body: Optional[bytes] = None,
    ) -> Response:
        """Send one request and read its whole response (no timeout here: callers wrap
        this in ``asyncio.wait_for``; a cancelled exchange closes its connection)."""
        if self._closed:
            raise RuntimeError("the client is closed")
        self._bind_loop()
        method = method.upper()
        lines = [f"{method} {target} HTTP/1.1", f"Host: {_host_header(origin)}"]
        for name, value in headers:
            value = str(value)
            _check_header(name, value)
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if body:
            raw += body

        started = time.monotonic()
        conn, reused = await self._acquire(origin)
        conn.uses += 1
        progress = {"response_started": False}
        try:
            try:
                conn.writer.write(raw)
                await conn.writer.drain()
                response = await self._read_response(conn.reader, method, progress)
            except (OSError, asyncio.IncompleteReadError, _ssl.SSLError) as exc:
                what = "reading the response" if progress["response_started"] else "sending the request"
                raise ConnectionFailed(
                    f"connection to {origin[0]}://{_host_header(origin)} failed while {what}: "
                    f"{type(exc).__name__}: {exc}",
                    reused=reused,
                    response_started=progress["response_started"],
                    cause=exc,
                ) from exc
        except BaseException:
            conn.close()
            raise
        response.elapsed = time.monotonic() - started
        if response.keep_alive:
            self._release(conn)
        else:
            conn.close()
        return response

    async def _read_response(self, reader: asyncio.StreamReader, method: str, progress: Dict[str, bool]) -> Response:
        while True:
            line = await _readline(reader)
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
            progress["response_started"] = True
            version, status, reason = _parse_status_line(line)
            headers = await _read_headers(reader)
            if 100 <= status < 200 and status != 101:
                continue  # interim response (100 Continue, 103 Early Hints)
            break

        connection_tokens = {t.strip().lower() for t in headers.get("connection", "").split(",") if t.strip()}
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection_tokens
        else:
            keep_alive = "keep-alive" in connection_tokens

        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            te = headers.get("transfer-encoding")
            if te is not None:
                codings = [c.strip().lower() for c in te.split(",") if c.strip()]
                if codings and codings[-1] == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.read()
                    keep_alive = False
            elif "content-length" in headers:
                try:
                    values = {v.strip() for v in headers["content-length"].split(",")}
                    if len(values) != 1:
                        raise ValueError
                    length = int(values.pop())
                    if length < 0:
                        raise ValueError
                except ValueError:
                    raise ProtocolError("PROTOCOL_ERROR", f"invalid Content-Length {headers['content-length']!r}") from None
                body = await reader.readexactly(length) if length else b""
            else:
                body = await reader.read()  # until the server closes
                keep_alive = False
        return Response(status=status, reason=reason, headers=headers, body=body, version=version, keep_alive=keep_alive)


async def _readline(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return b""
    except asyncio.LimitOverrunError:
        raise ProtocolError("PROTOCOL_ERROR", "response line too long") from None


def _parse_status_line(line: bytes) -> Tuple[str, int, str]:
    text = line.decode("latin-1").rstrip("\r\n")
    parts = text.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ProtocolError("PROTOCOL_ERROR", f"invalid HTTP status line {text[:100]!r}")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""


async def _read_headers(reader: asyncio.StreamReader) -> Dict[str, str]:
    headers: Dict[str, str] = {}
    count = 0
    while True:
        line = await _readline(reader)
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line in (b"\r\n", b"\n"):
            return headers
        count += 1
        if count > _MAX_HEADERS:
            raise ProtocolError("PROTOCOL_ERROR", "too many response headers")
        text = line.decode("latin-1").rstrip("\r\n")
        name, sep, value = text.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError("PROTOCOL_ERROR", f"invalid header line {text[:100]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        line = await _readline(reader)
        if not line:
            raise asyncio.IncompleteReadError(bytes(body), None)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
            if size < 0:
                raise ValueError
        except ValueError:
            raise ProtocolError("PROTOCOL_ERROR", f"invalid chunk size {size_text[:20]!r}") from None
        if size == 0:
            break
        body += await reader.readexactly(size)
        end = await _readline(reader)
        if end not in (b"\r\n", b"\n"):
            if not end:
                raise asyncio.IncompleteReadError(bytes(body), None)
            raise ProtocolError("PROTOCOL_ERROR", "chunk not followed by CRLF")
    while True:  # trailer section
        line = await _readline(reader)
        if not line:
            raise asyncio.IncompleteReadError(bytes(body), None)
        if line in (b"\r\n", b"\n"):
            return bytes(body)
