"""HTTP/1.1 and retry behaviour of the SDK against a scripted in-process server
(no Node.js needed): chunked bodies, keep-alive reuse, headers sent, retries, Prefer: wait."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import unittest
import warnings
from pathlib import Path
from typing import Awaitable, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from task_manager_client import (  # noqa: E402
    ServiceUnavailableError,
    Task,
    TaskManagerClient,
    TaskManagerConnectionError,
    TaskManagerError,
    TaskManagerTimeoutError,
    WorkerUnavailableError,
)

Request = Dict[str, object]
Handler = Callable[[Request], Awaitable[Optional[bytes]]]

TASK = {
    "task_id": "task_1",
    "status": "pending",
    "task_type": "text_generation",
    "model_name": "tiny-llama",
    "priority": 0,
    "created_at": "2025-05-30T12:00:00.000Z",
    "estimated_completion": None,
    "queue_position": 0,
}


def response(status: int, body: object = None, *, headers: Tuple[Tuple[str, str], ...] = (), chunked: bool = False,
             reason: str = "X") -> bytes:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    head = [f"HTTP/1.1 {status} {reason}"]
    head += [f"{k}: {v}" for k, v in headers]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        pieces = [raw[i:i + 7] for i in range(0, len(raw), 7)]
        payload = b"".join(f"{len(p):x};ext=1\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\nX-Trailer: 1\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(raw)}")
        payload = raw
    if body is not None and not isinstance(body, bytes):
        head.append("Content-Type: application/json; charset=utf-8")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class FakeServer:
    """Reads HTTP/1.1 requests and answers each with ``handler(request)`` (None: hang up)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: List[Request] = []
        self.connections = 0
        self.server: Optional[asyncio.AbstractServer] = None
        self._tasks: set = set()

    async def __aenter__(self) -> "FakeServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = asyncio.current_task()
        self._tasks.add(me)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode().split(" ", 2)
                headers: Dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b""):
                        break
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                req: Request = {"method": method, "target": target, "headers": headers, "body": body,
                                "connection": self.connections}
                self.requests.append(req)
                out = await self.handler(req)
                if out is None:
                    return
                writer.write(out)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a test server: a cancelled handler just hangs up
        finally:
            self._tasks.discard(me)
            writer.close()


class ProtocolTests(unittest.IsolatedAsyncioTestCase):
    async def test_create_sends_json_and_idempotency_key_and_reads_chunked(self) -> None:
        async def handler(req: Request) -> bytes:
            return response(201, dict(TASK, brand_new_field={"x": 1}), chunked=True)

        async with FakeServer(handler) as srv:
            async with TaskManagerClient(srv.url, headers={"Authorization": "Bearer t"}) as client:
                task = await client.create_task(
                    "text_generation", "tiny-llama", {"prompt": "héllo"}, {"temperature": 0.5},
                    priority=3, idempotency_key="key-1",
                )
                again = await client.create_task("text_generation", "tiny-llama", {"prompt": "x"})
        self.assertEqual(task.task_id, "task_1")
        self.assertEqual(task.extra, {"brand_new_field": {"x": 1}})
        self.assertEqual(task.to_dict()["brand_new_field"], {"x": 1})
        first, second = srv.requests
        self.assertEqual((first["method"], first["target"]), ("POST", "/tasks"))
        self.assertEqual(first["headers"]["content-type"], "application/json")
        self.assertEqual(first["headers"]["idempotency-key"], "key-1")
        self.assertEqual(first["headers"]["authorization"], "Bearer t")
        self.assertEqual(json.loads(first["body"]), {
            "task_type": "text_generation", "model_name": "tiny-llama",
            "input_data": {"prompt": "héllo"}, "parameters": {"temperature": 0.5}, "priority": 3,
        })
        self.assertNotIn("idempotency-key", second["headers"])
        self.assertEqual(again.task_id, "task_1")
        self.assertEqual(srv.connections, 1, "keep-alive connection reused")

    async def test_get_retries_503_then_succeeds_delete_too(self) -> None:
        answers = [
            response(503, {"error": {"code": "SERVICE_UNAVAILABLE", "message": "db down"}, "request_id": "r1"}),
            response(200, dict(TASK, status="running")),
            response(429, {"error": {"code": "RATE_LIMITED", "message": "slow"}}, headers=(("Retry-After", "0"),)),
            response(200, {"task_id": "task_1", "status": "cancelled", "cancelled_at": "2025-05-30T12:00:01Z"}),
        ]

        async def handler(req: Request) -> bytes:
            return answers.pop(0)

        async with FakeServer(handler) as srv:
            async with TaskManagerClient(srv.url, backoff=0.01) as client:
                task = await client.get_task("task_1")
                cancelled = await client.cancel_task(task)
        self.assertEqual(task.status, "running")
        self.assertEqual(cancelled.status, "cancelled")
        self.assertEqual([r["method"] for r in srv.requests], ["GET", "GET", "DELETE", "DELETE"])

    async def test_post_without_key_is_not_retried_with_key_is(self) -> None:
        async def handler(req: Request) -> bytes:
            return response(503, {"error": {"code": "WORKER_UNAVAILABLE", "message": "no worker",
                                            "details": {"model_name": "m"}}, "request_id": "req_9"})

        async with FakeServer(handler) as srv:
            async with TaskManagerClient(srv.url, retries=2, backoff=0.01) as client:
                with self.assertRaises(WorkerUnavailableError) as ctx:
                    await client.create_task("text_generation", "m", {"prompt": "x"})
                self.assertEqual(len(srv.requests), 1)
                with self.assertRaises(ServiceUnavailableError):
                    await client.create_task("text_generation", "m", {"prompt": "x"}, idempotency_key="k")
                self.assertEqual(len(srv.requests), 4)
        err = ctx.exception
        self.assertEqual((err.code, err.status, err.request_id), ("WORKER_UNAVAILABLE", 503, "req_9"))
        self.assertEqual(err.details, {"model_name": "m"})

    async def test_connection_errors_are_retried_for_get(self) -> None:
        calls = {"n": 0}

        async def handler(req: Request) -> Optional[bytes]:
            calls["n"] += 1
            if calls["n"] == 1:
                return None  # hang up without answering
            return response(200, dict(TASK))

        async with FakeServer(handler) as srv:
            async with TaskManagerClient(srv.url, backoff=0.01) as client:
                task = await client.get_task("task_1")
                self.assertEqual(task.task_id, "task_1")
                with self.assertRaises(TaskManagerConnectionError):
                    calls["n"] = 0
                    await client.create_task("text_generation", "m", {"prompt": "x"})
        self.assertEqual(srv.connections, 2)  # the failed POST used the pooled connection

    async def test_connection_refused(self) -> None:
        async with FakeServer(lambda r: asyncio.sleep(0)) as srv:
            url = srv.url
        async with TaskManagerClient(url, retries=1, backoff=0.01) as client:
            with self.assertRaises(TaskManagerConnectionError) as ctx:
                await client.health()
        self.assertEqual(ctx.exception.code, "CONNECTION_ERROR")
        self.assertIsNone(ctx.exception.status)

    async def test_request_timeout(self) -> None:
        async def handler(req: Request) -> bytes:
            await asyncio.sleep(5)
            return response(200, {})

        async with FakeServer(handler) as srv:
            async with TaskManagerClient(srv.url, timeout=0.2) as client:
                with self.assertRaises(TaskManagerTimeoutError) as ctx:
                    await client.get_task("task_1")
        self.assertIsInstance(ctx.exception, TimeoutError)

    async def test_wait_for_task_sends_prefer_wait_and_polls(self) -> None:
        states = ["pending", "running", "running", "completed"]

        async def handler(req: Request) -> bytes:
            status = states.pop(0)
            result = {"generated_text": "hi"} if status == "completed" else None
            return response(200, dict(TASK, status=status, result=result))

        async with FakeServer(handler) as srv:
            async with TaskManagerClient(srv.url) as client:
                loop = asyncio.get_running_loop()
                started = loop.time()
                task = await client.wait_for_task("task_1", timeout=10, poll_interval=0.05)
                elapsed = loop.time() - started
        self.assertEqual(task.status, "completed")
        self.assertEqual(task.result, {"generated_text": "hi"})
        prefers = [r["headers"].get("prefer") for r in srv.requests]
        self.assertEqual(len(prefers), 4)
        for p in prefers:
            self.assertRegex(p, r"^wait=\d+$")
            self.assertLessEqual(int(p.split("=")[1]), 30)
            self.assertGreaterEqual(int(p.split("=")[1]), 1)
        self.assertGreaterEqual(elapsed, 0.1)  # polled with pauses when the server ignores Prefer

    async def test_wait_for_task_with_server_honouring_prefer(self) -> None:
        states = ["pending", "running", "completed"]

        async def handler(req: Request) -> bytes:
            await asyncio.sleep(0.05)  # the server holds the request until the task changes
            return response(200, dict(TASK, status=states.pop(0)), headers=(("Preference-Applied", "wait=5"),))

        async with FakeServer(handler) as srv:
            async with TaskManagerClient(srv.url) as client:
                loop = asyncio.get_running_loop()
                started = loop.time()
                task = await client.wait_for_task("task_1", timeout=5, poll_interval=2.0)
                elapsed = loop.time() - started
        self.assertEqual(task.status, "completed")
        self.assertEqual(len(srv.requests), 3)
        self.assertLess(elapsed, 1.5)  # no poll_interval pauses between long polls that saw a change

    async def test_wait_for_task_no_timeout_caps_prefer_at_30(self) -> None:
        async def handler(req: Request) -> bytes:
            return response(200, dict(TASK, status="failed", error={"code": "ENGINE_ERROR", "message": "boom"}),
                            headers=(("Preference-Applied", "wait=30"),))

        async with FakeServer(handler) as srv:
            async with TaskManagerClient(srv.url) as client:
                task = await client.wait_for_task("task_1")
        self.assertEqual(srv.requests[0]["headers"]["prefer"], "wait=30")
        self.assertEqual(task.error_code, "ENGINE_ERROR")

    async def test_non_json_error_body(self) -> None:
        async def handler(req: Request) -> bytes:
            return response(502, b"<html>Bad gateway</html>", headers=(("Content-Type", "text/html"),))

        async with FakeServer(handler) as srv:
            async with TaskManagerClient(srv.url, retries=0) as client:
                with self.assertRaises(TaskManagerError) as ctx:
                    await client.list_tasks()
        self.assertEqual(ctx.exception.status, 502)
        self.assertEqual(ctx.exception.code, "HTTP_502")
        self.assertIn("Bad gateway", ctx.exception.message)

    async def test_base_url_prefix_and_query(self) -> None:
        async def handler(req: Request) -> bytes:
            if "?" in str(req["target"]):
                return response(200, {"tasks": [TASK], "total": 1, "limit": 5, "offset": 0})
            return response(200, TASK)

        async with FakeServer(handler) as srv:
            async with TaskManagerClient(srv.url + "/api/") as client:
                page = await client.list_tasks(status="pending", limit=5, sort_order="asc")
                await client.get_task("task/with space")
        self.assertEqual(srv.requests[0]["target"], "/api/tasks?status=pending&limit=5&offset=0&sort_order=asc")
        self.assertEqual(srv.requests[1]["target"], "/api/tasks/task%2Fwith%20space")
        self.assertIsInstance(page.tasks[0], Task)

    def test_task_from_dict_round_trip(self) -> None:
        data = dict(TASK, started_at=None, result=None, future={"a": [1]})
        task = Task.from_dict(data)
        self.assertEqual(task.to_dict(), data)
        self.assertEqual(task.extra, {"future": {"a": [1]}})
        self.assertEqual(task.created_at_dt.year, 2025)
        with self.assertRaises(ValueError):
            Task.from_dict({"status": "pending"})

    def test_client_usable_across_event_loops(self) -> None:
        async def handler(req: Request) -> bytes:
            return response(200, {"status": "healthy"})

        async def run_once(client: TaskManagerClient, close: bool) -> Dict[str, object]:
            async with FakeServer(handler) as srv:
                client._origin = ("http", "127.0.0.1", int(srv.url.rsplit(":", 1)[1]))
                try:
                    return await client.health()
                finally:
                    if close:
                        await client.close()

        client = TaskManagerClient("http://127.0.0.1:1")
        with warnings.catch_warnings():
            # The first loop ends with an idle connection the client never closed; the
            # second asyncio.run drops it (a ResourceWarning when it is collected).
            warnings.simplefilter("ignore", ResourceWarning)
            self.assertEqual(asyncio.run(run_once(client, close=False))["status"], "healthy")
            self.assertEqual(asyncio.run(run_once(client, close=True))["status"], "healthy")
            gc.collect()
        self.assertTrue(client.closed)

if __name__ == "__main__":
    unittest.main()
