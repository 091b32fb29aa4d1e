"""A real `vidcore serve` on a free loopback port, in a child process or (`in_thread`) in this one.

`start` runs ``python -m vidcore serve --port 0 ...``, reads the port from
its ``serving on http://...`` line and waits for ``/health/ready``; `kill`
is SIGKILL (no clean-up at all), `stop` is SIGTERM (the graceful path).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

try:  # the HTTP client the openai SDK depends on: httpx2 in new releases, httpx in older ones
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

KEY = "test-key-0123456789"
LINE = re.compile(r"serving on (http://\S+?) ")


@dataclass
class Live:
    proc: subprocess.Popen
    url: str
    out: Path
    log: list[str] = field(default_factory=list)

    def client(self, key: str | None = KEY, **kwargs):
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or "none", max_retries=0, **kwargs)

    def http(self, key: str | None = KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def text(self) -> str:
        return "".join(self.log)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM: uvicorn shuts down (the workers stop, the store closes), then ends by the same signal."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        assert code in (0, -signal.SIGTERM), (code, self.text()[-3000:])
        deadline = time.time() + 5
        while "stopped; " not in self.text() and time.time() < deadline:
            time.sleep(0.05)  # the pump thread may still be reading the last lines
        assert "stopped; " in self.text(), self.text()[-3000:]


def _pump(stream, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def start(out: Path, *args: str, key: str | None = KEY, timeout: float = 120.0) -> Live:
    env = dict(os.environ, VIDCORE_LOAD_PLUGINS="latte", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("VIDCORE_API_KEY", None)
    if key is not None:
        env["VIDCORE_API_KEY"] = key
    cmd = [sys.executable, "-m", "vidcore", "serve", "--port", "0", "--out", str(out), "--backend", "latte-shapes",
           *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log: list[str] = []
    threading.Thread(target=_pump, args=(proc.stdout, log), daemon=True).start()
    deadline = time.time() + timeout
    url = None
    while time.time() < deadline and proc.poll() is None:
        m = next((LINE.search(line) for line in list(log) if LINE.search(line)), None)
        if m:
            url = m.group(1)
            try:
                if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                    return Live(proc, url, out, log)
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=30)
    raise AssertionError(f"server did not become ready (url {url}): {''.join(log)[-3000:]}")


def within(seconds: float, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` (e.g. the SDK's create_and_poll, which polls forever), failing after ``seconds``."""
    result: list = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            result.append(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    if errors:
        raise errors[0]
    if not result:
        raise AssertionError(f"{getattr(fn, '__name__', fn)} did not return within {seconds} s")
    return result[0]


def wait_for(predicate, timeout: float = 60.0, every: float = 0.05):
    """Poll until ``predicate()`` is truthy; return its value (fail the test after ``timeout``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {getattr(predicate, '__name__', predicate)}")


@contextlib.contextmanager
def in_thread(config, *, ready: bool = True) -> Iterator[str]:
    """A `vidcore.serve` app for ``config`` under uvicorn in a thread of this process; yields its base URL.

    With ``ready`` it waits for the workers to load their pipelines, else only for the socket.
    """
    import uvicorn

    from vidcore.serve.app import create_app
    from vidcore.serve.command import bind
    from vidcore.serve.server import Server

    server = Server(config)
    sock = bind("127.0.0.1", 0)
    userver = uvicorn.Server(uvicorn.Config(create_app(server), log_level="warning"))
    thread = threading.Thread(target=userver.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_for(lambda: userver.started and (server.ready or not ready), timeout=60)
        yield url
    finally:
        userver.should_exit = True
        thread.join(60)
        sock.close()
