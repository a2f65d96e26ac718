"""Integration tests of the Python SDK against a real Task Manager server.

Each test starts ``node dist/cli/main.js serve`` (built beforehand with ``npm run build``
in the repository root) on a free port with a temporary SQLite database, and stops it in
tearDown. Run from ``clients/python``::

    python3 -m unittest discover -s tests -v
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _server import PYTHON_SDK_ROOT, TaskManagerServer  # noqa: E402

from task_manager_client import (  # noqa: E402
    CancelResult,
    ConflictError,
    ModelNotFoundError,
    RateLimitedError,
    Task,
    TaskList,
    TaskManagerClient,
    TaskManagerError,
    TaskNotCancellableError,
    TaskNotFoundError,
    ValidationError,
    WaitTimeoutError,
)

# The API reference's "Python SDK" example, verbatim except for the model name
# (microsoft/DialoGPT-medium is not in the default catalog; tiny-llama is).
SPEC_EXAMPLE = '''import asyncio
from task_manager_client import TaskManagerClient

async def main():
    client = TaskManagerClient("http://localhost:8002")
    
    # Create task
    task = await client.create_task(
        task_type="text_generation",
        model_name="tiny-llama",
        input_data={"prompt": "Hello world!"}
    )
    
    # Poll for completion
    while task.status in ["pending", "running"]:
        await asyncio.sleep(1)
        task = await client.get_task(task.task_id)
    
    print(f"Result: {task.result}")

asyncio.run(main())
'''

TINY = {"task_type": "text_generation", "model_name": "tiny-llama"}
SHORT = {"max_tokens": 8}  # keeps tiny-llama runs short where the text does not matter


class ServerTestCase(unittest.IsolatedAsyncioTestCase):
    """A fresh server per test; ``self.client`` talks to it."""

    server_env: dict = {}

    def setUp(self) -> None:
        self.server = TaskManagerServer(self.server_env).start()
        self.addCleanup(self.server.stop)  # also runs when a later setUp step fails

    async def asyncSetUp(self) -> None:
        self.client = TaskManagerClient(self.server.url, timeout=30.0)

    async def asyncTearDown(self) -> None:
        await self.client.close()

    def tearDown(self) -> None:
        self.server.stop()


class TaskLifecycleTests(ServerTestCase):
    async def test_create_get_list_cancel(self) -> None:
        created = await self.client.create_task(
            task_type="text_to_speech",
            model_name="espeak-ng",
            input_data={"text": "Hello from the Python SDK"},
            parameters={"speed": 1.2},
            priority=5,
            max_attempts=2,
            timeout_seconds=60,
        )
        self.assertIsInstance(created, Task)
        self.assertTrue(created.task_id.startswith("task_"))
        self.assertIn(created.status, ("pending", "running", "completed"))
        self.assertEqual(created.task_type, "text_to_speech")
        self.assertEqual(created.model_name, "espeak-ng")
        self.assertEqual(created.priority, 5)
        self.assertIsNotNone(created.created_at_dt)

        fetched = await self.client.get_task(created.task_id)
        self.assertEqual(fetched.task_id, created.task_id)
        self.assertEqual(fetched.input_data, {"text": "Hello from the Python SDK"})
        self.assertEqual(fetched.parameters, {"speed": 1.2})
        self.assertEqual(fetched.max_attempts, 2)
        self.assertEqual(fetched.timeout_seconds, 60)
        for name in ("started_at", "completed_at", "cancelled_at", "worker_id", "result", "error"):
            self.assertIn(name, fetched.to_dict())  # sent by the server, even when null

        # A second task of another model, still pending or running, to cancel.
        victim = await self.client.create_task(**TINY, input_data={"prompt": "cancel me"}, parameters={"max_tokens": 4096})
        page = await self.client.list_tasks(limit=10)
        self.assertIsInstance(page, TaskList)
        self.assertEqual(page.total, 2)
        self.assertEqual((page.limit, page.offset), (10, 0))
        self.assertEqual({t.task_id for t in page.tasks}, {created.task_id, victim.task_id})
        only_tts = await self.client.list_tasks(task_type="text_to_speech", sort_by="created_at", sort_order="asc")
        self.assertEqual([t.task_id for t in only_tts.tasks], [created.task_id])
        by_model = await self.client.list_tasks(model_name="tiny-llama")
        self.assertEqual([t.task_id for t in by_model.tasks], [victim.task_id])

        cancelled = await self.client.cancel_task(victim.task_id)
        self.assertIsInstance(cancelled, CancelResult)
        self.assertEqual(cancelled.task_id, victim.task_id)
        self.assertEqual(cancelled.status, "cancelled")
        self.assertIsNotNone(cancelled.cancelled_at_dt)
        again = await self.client.get_task(victim)
        self.assertEqual(again.status, "cancelled")
        self.assertEqual(again.cancelled_at, cancelled.cancelled_at)
        listed = await self.client.list_tasks(status="cancelled")
        self.assertEqual([t.task_id for t in listed.tasks], [victim.task_id])

    async def test_wait_for_task_tiny_llama(self) -> None:
        task = await self.client.create_task(**TINY, input_data={"prompt": "Hello world!"}, parameters=SHORT)
        done = await self.client.wait_for_task(task.task_id, timeout=45, poll_interval=0.2)
        self.assertEqual(done.status, "completed", done.error)
        self.assertTrue(done.is_terminal)
        self.assertIsInstance(done.result, dict)
        self.assertIsInstance(done.result.get("generated_text"), str)
        self.assertIsNotNone(done.completed_at)
        self.assertGreaterEqual(done.attempts, 1)

    async def test_wait_for_task_espeak_and_download_artifact(self) -> None:
        task = await self.client.create_task(
            task_type="text_to_speech", model_name="espeak-ng", input_data={"text": "Hello world!"}
        )
        done = await self.client.wait_for_task(task, timeout=30, poll_interval=0.2)
        self.assertEqual(done.status, "completed", done.error)
        names = [a.name for a in done.artifacts]
        self.assertTrue(names, done.result)
        wav = await self.client.download_artifact(done, names[0])
        self.assertIsInstance(wav, bytes)
        self.assertTrue(wav.startswith(b"RIFF"), wav[:16])
        self.assertEqual(len(wav), done.artifacts[0].size)
        # By task id, the artifact path is built from the name.
        self.assertEqual(await self.client.download_artifact(done.task_id, names[0]), wav)

    async def test_failed_task_is_returned_not_raised(self) -> None:
        task = await self.client.create_task(
            task_type="image_generation",
            model_name="stable-diffusion-v1-5",
            input_data={"prompt": "a cat"},
            max_attempts=1,
        )
        done = await self.client.wait_for_task(task.task_id, timeout=30, poll_interval=0.2)
        self.assertEqual(done.status, "failed")
        self.assertIsNone(done.result)
        self.assertIsInstance(done.error_code, str)
        self.assertTrue(done.error_message)

    async def test_wait_for_task_timeout(self) -> None:
        task = await self.client.create_task(**TINY, input_data={"prompt": "long one"}, parameters={"max_tokens": 4096})
        started = time.monotonic()
        with self.assertRaises(asyncio.TimeoutError) as ctx:
            await self.client.wait_for_task(task.task_id, timeout=0.6, poll_interval=0.1)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIsInstance(ctx.exception, WaitTimeoutError)
        self.assertIsInstance(ctx.exception, TimeoutError)
        self.assertEqual(ctx.exception.task.task_id, task.task_id)
        await self.client.cancel_task(task)

    async def test_iter_tasks_walks_pages(self) -> None:
        ids = []
        for i in range(7):
            t = await self.client.create_task(
                task_type="text_to_speech", model_name="espeak-ng", input_data={"text": f"number {i}"}
            )
            ids.append(t.task_id)
        seen = [t.task_id async for t in self.client.iter_tasks(page_size=3, sort_order="asc")]
        self.assertEqual(seen, ids)
        filtered = [t async for t in self.client.iter_tasks(task_type="text_generation", page_size=2)]
        self.assertEqual(filtered, [])
        first_page = await self.client.list_tasks(limit=3, offset=6, sort_order="asc")
        self.assertEqual([t.task_id for t in first_page.tasks], ids[6:])
        self.assertEqual(first_page.total, 7)
        self.assertFalse(first_page.has_more)

    async def test_health_and_idempotency_key(self) -> None:
        health = await self.client.health()
        self.assertEqual(health["status"], "healthy")
        self.assertIn("pending_tasks", health)
        task = await self.client.create_task(
            task_type="text_to_speech",
            model_name="espeak-ng",
            input_data={"text": "once"},
            idempotency_key=f"pysdk-{time.time_ns()}",
        )
        self.assertTrue(task.task_id.startswith("task_"))

    async def test_library_prints_nothing(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            async with TaskManagerClient(self.server.url) as client:
                await client.health()
                t = await client.create_task("text_to_speech", "espeak-ng", {"text": "quiet"})
                await client.wait_for_task(t, timeout=30, poll_interval=0.1)
                with self.assertRaises(TaskNotFoundError):
                    await client.get_task("task_missing")
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(err.getvalue(), "")


class ErrorMappingTests(ServerTestCase):
    async def test_unknown_model(self) -> None:
        with self.assertRaises(ModelNotFoundError) as ctx:
            await self.client.create_task("text_generation", "no-such-model", {"prompt": "hi"})
        err = ctx.exception
        self.assertEqual(err.code, "MODEL_NOT_FOUND")
        self.assertEqual(err.status, 400)
        self.assertEqual(err.details.get("field"), "model_name")
        self.assertTrue(err.request_id and err.request_id.startswith("req_"))
        self.assertIsInstance(err, TaskManagerError)

    async def test_bad_input_is_validation_error(self) -> None:
        with self.assertRaises(ValidationError) as ctx:
            await self.client.create_task("text_generation", "tiny-llama", {"prompt": "   "})
        self.assertEqual(ctx.exception.code, "VALIDATION_ERROR")
        self.assertEqual(ctx.exception.status, 422)
        self.assertEqual(ctx.exception.details["field"], "input_data.prompt")
        self.assertEqual(ctx.exception.field, "input_data.prompt")

        with self.assertRaises(ValidationError) as ctx:
            await self.client.create_task("text_generation", "tiny-llama", {"prompt": "hi"}, priority=1000)
        self.assertEqual(ctx.exception.details["field"], "priority")

        with self.assertRaises(ValidationError) as ctx:
            await self.client.list_tasks(status="bogus")
        self.assertEqual(ctx.exception.details["field"], "status")

    async def test_unknown_task(self) -> None:
        for call in (self.client.get_task, self.client.cancel_task):
            with self.assertRaises(TaskNotFoundError) as ctx:
                await call("task_00000000-0000-0000-0000-000000000000")
            self.assertEqual(ctx.exception.code, "TASK_NOT_FOUND")
            self.assertEqual(ctx.exception.status, 404)

    async def test_cancel_completed_task_conflicts(self) -> None:
        task = await self.client.create_task("text_to_speech", "espeak-ng", {"text": "done soon"})
        done = await self.client.wait_for_task(task.task_id, timeout=30, poll_interval=0.1)
        self.assertEqual(done.status, "completed")
        with self.assertRaises(ConflictError) as ctx:
            await self.client.cancel_task(done.task_id)
        self.assertEqual(ctx.exception.status, 409)
        self.assertEqual(ctx.exception.code, "TASK_NOT_CANCELLABLE")
        self.assertIsInstance(ctx.exception, TaskNotCancellableError)


class RateLimitTests(ServerTestCase):
    server_env = {
        "TASK_MANAGER_RATE_LIMIT": "true",
        "TASK_MANAGER_RATE_LIMIT_BURST": "3",
        "TASK_MANAGER_RATE_LIMIT_BURST_SECONDS": "3",
    }

    async def test_429_is_rate_limited_error_with_retry_after(self) -> None:
        strict = TaskManagerClient(self.server.url, retries=0)
        self.addAsyncCleanup(strict.close)
        for _ in range(3):
            await strict.list_tasks(limit=1)
        with self.assertRaises(RateLimitedError) as ctx:
            await strict.list_tasks(limit=1)
        err = ctx.exception
        self.assertEqual(err.status, 429)
        self.assertEqual(err.code, "RATE_LIMITED")
        self.assertIsNotNone(err.retry_after)
        self.assertGreater(err.retry_after, 0)
        self.assertLessEqual(err.retry_after, 3)
        self.assertIn("x-ratelimit-remaining", err.headers)

        # /health is exempt from rate limiting.
        self.assertEqual((await strict.health())["status"], "healthy")

        # A Retry-After longer than max_retry_wait is raised at once, not waited out.
        impatient = TaskManagerClient(self.server.url, retries=3, max_retry_wait=0.0)
        self.addAsyncCleanup(impatient.close)
        started = time.monotonic()
        with self.assertRaises(RateLimitedError):
            await impatient.get_task("task_whatever")
        self.assertLess(time.monotonic() - started, 1.0)

        # The default client waits out a short Retry-After and then succeeds.
        patient = TaskManagerClient(self.server.url, retries=3, max_retry_wait=5.0)
        self.addAsyncCleanup(patient.close)
        page = await patient.list_tasks(limit=1)
        self.assertEqual(page.total, 0)


class SpecExampleTests(unittest.TestCase):
    """The API reference's Python SDK example, run as a script exactly as written."""

    def setUp(self) -> None:
        self.server = TaskManagerServer().start()
        self.addCleanup(self.server.stop)

    def tearDown(self) -> None:
        self.server.stop()

    def test_spec_example_runs_verbatim(self) -> None:
        self.assertIn('TaskManagerClient("http://localhost:8002")', SPEC_EXAMPLE)
        script = SPEC_EXAMPLE.replace("http://localhost:8002", self.server.url)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "spec_example.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(script)
            env = dict(os.environ)
            env["PYTHONPATH"] = str(PYTHON_SDK_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            proc = subprocess.run(
                [sys.executable, path], cwd=tmp, env=env, capture_output=True, text=True, timeout=60
            )
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stderr, "")
        self.assertTrue(proc.stdout.startswith("Result: {"), proc.stdout)
        self.assertIn("'generated_text':", proc.stdout)
        self.assertEqual(proc.stdout.count("\n"), 1, proc.stdout)


if __name__ == "__main__":
    unittest.main()
