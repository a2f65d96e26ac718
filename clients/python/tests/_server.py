"""Start and stop a real Task Manager server (``node dist/cli/main.js serve``) for tests."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

# clients/python/tests/_server.py -> repository root is three levels above tests/.
REPO_ROOT = Path(__file__).resolve().parents[3]
SERVER_JS = REPO_ROOT / "dist" / "cli" / "main.js"
PYTHON_SDK_ROOT = Path(__file__).resolve().parents[1]

START_TIMEOUT_S = 30.0


class ServerNotBuilt(AssertionError):
    pass


def check_prerequisites() -> None:
    """Fail with a clear message when the server has not been built or node is missing."""
    if shutil.which("node") is None:
        raise ServerNotBuilt("node is not on PATH; the SDK tests run the real Task Manager server with Node.js 20+")
    if not SERVER_JS.is_file():
        raise ServerNotBuilt(
            f"{SERVER_JS} does not exist: build the server first with `npm run build` in {REPO_ROOT}"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TaskManagerServer:
    """One server process on a free port with its own temporary SQLite database."""

    def __init__(self, env: Optional[Dict[str, str]] = None) -> None:
        self.extra_env = dict(env or {})
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.tmpdir: Optional[str] = None
        self._log = None

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "TaskManagerServer":
        check_prerequisites()
        self.tmpdir = tempfile.mkdtemp(prefix="tm-pysdk-")
        last_error = ""
        for _ in range(3):  # a port taken between probing and binding: try another
            self.port = _free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_MANAGER_")}
            for key in ("PORT", "HOST", "DATABASE_URL"):
                env.pop(key, None)
            env.update(
                {
                    "PORT": str(self.port),
                    "HOST": "127.0.0.1",
                    "DATABASE_URL": f"sqlite:{os.path.join(self.tmpdir, f'tasks-{self.port}.db')}",
                    "TASK_MANAGER_RATE_LIMIT": "false",
                    "TASK_MANAGER_LOG_LEVEL": "warn",
                    "TASK_MANAGER_SHUTDOWN_GRACE_SECONDS": "0",
                }
            )
            env.update(self.extra_env)
            log_path = os.path.join(self.tmpdir, f"server-{self.port}.log")
            self._log = open(log_path, "wb")
            self.proc = subprocess.Popen(
                ["node", str(SERVER_JS), "serve"],
                cwd=str(REPO_ROOT),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if self._wait_healthy():
                return self
            last_error = self._log_tail()
            self._stop_process()
            if "EADDRINUSE" not in last_error:
                break
        self.stop()
        raise AssertionError(f"the Task Manager server did not start:\n{last_error}")

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return True
            except OSError:
                pass
            finally:
                conn.close()
            # Not a fixed sleep: a short back-off between readiness probes.
            time.sleep(0.05)
        return False

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        try:
            with open(self._log.name, "rb") as f:
                return f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def _stop_process(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: node and any engine child
                except OSError:
                    proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        self._stop_process()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
