"""
Headless Chromium for the tests, driven through the Chrome DevTools
Protocol over a pipe (`--remote-debugging-pipe`): the browser reads
commands from its fd 3 and writes answers and events to its fd 4, each a
JSON object ended by a NUL byte.  No port to find, nothing else on the
machine can connect.  One page (a target attached in flat mode, its
session id on every message), every wait bounded, the browser stopped by
its process group.  Skips (with the reason) where `chromium` is missing;
`make test` installs it as root.
"""

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest

# The stop signals the test runner may have inherited ignored (see tests/e2e/process.py).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class BrowserError(Exception):
    """The browser answered a command with an error, went away, or did not answer in time."""


class Browser:
    """
    One headless Chromium of WIDTH x HEIGHT with one page open, its profile
    and log in a directory of its own.  `call` sends a command to the page
    (or, with page=False, to the browser) and returns its result; events
    are kept until `wait_event` takes them.
    """

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 15) -> None:
        executable = shutil.which("chromium")
        if executable is None:
            raise SkipTest("chromium is not installed (make test installs it as root)")
        self.timeout = timeout
        self.directory = Path(tempfile.mkdtemp(prefix="suite-chromium-"))
        self.log = self.directory / "chromium.log"
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self.session: str | None = None
        # The browser's fd 3 reads what we write to `commands`; its fd 4 writes to `answers`.
        to_browser, commands = os.pipe()
        answers, from_browser = os.pipe()
        # Out of the way of 3 and 4, so that placing one cannot close the other.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)
        self._commands, self._answers = commands, answers
        args = [
            executable,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.directory / 'profile'}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--mute-audio",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        try:
            self.pid = os.posix_spawn(
                executable,
                args,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, str(self.log), os.O_WRONLY | os.O_CREAT, 0o600),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                    (os.POSIX_SPAWN_DUP2, ends[0], 3),
                    (os.POSIX_SPAWN_DUP2, ends[1], 4),
                ],
                setsid=True,  # its own process group: stopped whole, by its id
                setsigdef=STOP_SIGNALS,
            )
        finally:
            for fd in ends:
                os.close(fd)
        try:
            self._open_page()
        except BaseException:
            self.close()
            raise

    def _open_page(self) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, page=False)
        attached = self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False
        )
        self.session = attached["sessionId"]
        self.call("Page.enable")
        self.call("Page.setLifecycleEventsEnabled", {"enabled": True})
        self.call("Runtime.enable")

    # --- the protocol ---------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            written = os.write(self._commands, data)
            data = data[written:]

    def _receive(self, deadline: float) -> dict[str, Any]:
        """The browser's next message; BrowserError when none comes by DEADLINE."""
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError("the browser did not answer in time" + self._log_tail())
            readable, _, _ = select.select([self._answers], [], [], remaining)
            if readable:
                chunk = os.read(self._answers, 1 << 20)
                if not chunk:
                    raise BrowserError("the browser closed its pipe" + self._log_tail())
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        page: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send METHOD to the page (or the browser) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self.session
        self._send(message)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            if "method" in answer:
                self._events.append(answer)

    def wait_event(
        self,
        method: str,
        timeout: float | None = None,
        where: Callable[[dict[str, Any]], bool] = lambda params: True,
    ) -> dict[str, Any]:
        """
        The params of the first METHOD event (whose params satisfy WHERE)
        since the last one taken, waiting for it; earlier ones are dropped.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for number, event in enumerate(self._events):
                if event["method"] == method and where(event.get("params", {})):
                    del self._events[: number + 1]
                    return event.get("params", {})
            self._events.append(self._receive(deadline))

    def forget_events(self) -> None:
        self._events.clear()

    # --- what a test does with a page ------------------------------------------------------

    def evaluate(self, expression: str) -> Any:
        """EXPRESSION's value in the page (JSON-able values only)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def _loaded(self, loader: str) -> None:
        """Wait for the load event of the document LOADER loads (not an earlier one's)."""
        self.wait_event(
            "Page.lifecycleEvent",
            where=lambda params: params.get("name") == "load" and params.get("loaderId") == loader,
        )

    def navigate(self, url: str) -> None:
        """Open URL and wait for its load event."""
        answer = self.call("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"{url}: {answer['errorText']}")
        self._loaded(answer["loaderId"])

    def reload(self) -> None:
        """Load the page again (scripts as now set) and wait for its load event."""
        self.forget_events()
        self.call("Page.reload", {"ignoreCache": True})
        navigated = self.wait_event(
            "Page.frameNavigated", where=lambda params: "parentId" not in params["frame"]
        )
        self._loaded(navigated["frame"]["loaderId"])

    def wait_for(
        self, expression: str, timeout: float = 10, every: float = 0.05
    ) -> tuple[Any, float]:
        """
        Evaluate EXPRESSION every EVERY seconds until it is true in
        JavaScript's sense (a DOM node is): (its value, the seconds waited).
        BrowserError after TIMEOUT.
        """
        truthy = f"(() => {{ const value = ({expression}); return value ? [value] : null; }})()"
        started = time.monotonic()
        for _ in range(int(timeout / every) + 2):
            found = self.evaluate(truthy)
            waited = time.monotonic() - started
            if found is not None:
                return found[0], waited
            if waited > timeout:
                break
            time.sleep(every)
        raise BrowserError(f"{expression} still false after {timeout} s")

    def screenshot(self, path: Path, width: int | None = None, height: int | None = None) -> bytes:
        """
        A PNG of the page written to PATH: the viewport, or the top WIDTH x
        HEIGHT CSS pixels of the page when given.
        """
        params: dict[str, Any] = {"format": "png"}
        if width is not None and height is not None:
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
            params["captureBeyondViewport"] = True
        png = base64.b64decode(self.call("Page.captureScreenshot", params)["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png

    # --- stopping -----------------------------------------------------------------------

    def _log_tail(self) -> str:
        try:
            tail = self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""
        return "; chromium's output ends:\n" + tail

    def close(self) -> None:
        """Stop the whole process group (politely, then not), reap it, remove its files."""
        # Browser.close first: the browser then ends its own helpers and reaps them.
        try:
            self.call("Browser.close", page=False, timeout=2)
        except (BrowserError, OSError):
            pass
        for fd in (self._commands, self._answers):
            os.close(fd)
        # The leader exited but unreaped (a zombie) keeps the group id ours: the leader is
        # awaited without reaping, what is left of the group killed, then the leader reaped.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
            time.sleep(0.05)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        shutil.rmtree(self.directory, ignore_errors=True)
