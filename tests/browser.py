"""Headless Chromium for the report tests: a page as a real browser renders it, offline.

``render(page, out)`` writes a full-width screenshot of ``page`` (a local HTML file) and
returns the text of the DOM Chromium built from it, so a test checks both that the page
draws something (the screenshot is not blank) and what it says (its key text). Chromium
comes from ``apt-get install chromium`` (scripts/test.sh installs it when missing); the
browser gets no network (``--host-resolver-rules`` maps every name nowhere), so a page
that needs a CDN shows it.

``Browser`` drives a page over the DevTools protocol (no extra package: a pipe): it records
every request the page made and every load that failed, and evaluates JavaScript in the
page after its scripts ran (rows a script drew, computed styles, loaded fonts)."""
from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,1600"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no Chromium on PATH: `apt-get install chromium` (bash scripts/test.sh does it)")


def render(page: Path, out: Path) -> str:
    """Screenshot ``page`` to ``out`` (PNG); return the rendered DOM's visible text."""
    url = Path(page).resolve().as_uri()
    subprocess.run([chromium(), *FLAGS, f"--screenshot={out}", url], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([chromium(), *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    body = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", dom)
    return " ".join(html.unescape(re.sub(r"(?s)<[^>]+>", " ", body)).split())


def ink(png: Path) -> float:
    """Share of the screenshot's pixels that are not the background (white)."""
    from matplotlib.image import imread

    img = imread(str(png))[..., :3]
    return float((np.abs(img - 1.0).sum(axis=-1) > 0.1).mean())


# -- a page driven over the DevTools protocol: what it requested, what failed, what it drew --
OFFLINE_FLAGS = [*FLAGS, "--proxy-server=127.0.0.1:9", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-default-apps", "--no-default-browser-check", "--remote-debugging-pipe"]


class Browser:
    """Headless Chromium with no network, driven over ``--remote-debugging-pipe`` (the
    DevTools protocol on file descriptors 3 and 4, messages ending in NUL). Every name
    resolves nowhere and the proxy is a closed port, so nothing leaves the machine; the
    DevTools network events record every request a page makes (``requests``, ``file://``
    ones included) and every load that failed (``failed``), and ``errors`` holds the
    page's uncaught exceptions and console errors.

        with Browser() as b:
            b.open(page)
            rows = b.eval("document.querySelectorAll('tr').length")
    """

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.requests: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._ids: dict[str, str] = {}
        self._events: list[dict] = []
        self._next = 0
        self._buf = b""
        self._session = None

    def __enter__(self) -> "Browser":
        import os
        import tempfile

        self._profile = tempfile.mkdtemp(prefix="chromium-")
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        self._log = open(Path(self._profile) / "stderr.log", "wb")  # noqa: SIM115 - closed in __exit__
        # bash puts our pipe ends on the fds Chromium expects (3: it reads, 4: it writes)
        self._proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_r} 4>&{from_w}', chromium(), *OFFLINE_FLAGS,
             f"--user-data-dir={self._profile}", "about:blank"],
            pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(to_r)
        os.close(from_w)
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Page", "Runtime"):
            self._call(f"{domain}.enable")
        return self

    def __exit__(self, *exc) -> None:
        import os

        try:
            self._session = None
            self._call("Browser.close")
        except Exception:  # noqa: BLE001 - it is going down either way
            pass
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._to_w, self._from_r):
            os.close(fd)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    # the protocol
    def _send(self, method: str, params: dict | None = None) -> int:
        import json
        import os

        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if self._session:
            msg["sessionId"] = self._session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        return self._next

    def _recv(self, deadline: float) -> dict | None:
        """The next message, or None at ``deadline``."""
        import json
        import os
        import select
        import time

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from_r], [], [], left)
            if ready:
                chunk = os.read(self._from_r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium went away: {(Path(self._profile) / 'stderr.log').read_text()[-2000:]}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg = json.loads(raw)
        if "method" in msg:
            self._on_event(msg)
        return msg

    def _on_event(self, msg: dict) -> None:
        method, p = msg["method"], msg.get("params", {})
        self._events.append(msg)
        if method == "Network.requestWillBeSent":
            self.requests.append(p["request"]["url"])
            self._ids[p["requestId"]] = p["request"]["url"]
        elif method == "Network.loadingFailed":
            self.failed.append((self._ids.get(p["requestId"], "?"), p.get("errorText", "")))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append((d.get("exception") or {}).get("description") or d.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and p.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))

    def _call(self, method: str, params: dict | None = None) -> dict:
        import time

        want = self._send(method, params)
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._recv(deadline)
            if msg is None:
                raise TimeoutError(f"no answer to {method} in {self.timeout} s")
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def _settle(self, quiet: float = 0.5) -> None:
        """Read events until none came for ``quiet`` seconds."""
        import time

        end = time.monotonic() + self.timeout
        while time.monotonic() < end and self._recv(time.monotonic() + quiet) is not None:
            pass

    # what a test uses
    def open(self, page) -> None:
        """Load ``page`` (a local file or a URL) and wait until it and its fonts have loaded
        and the network has been quiet for half a second."""
        import time

        url = page if isinstance(page, str) and "://" in page else Path(page).resolve().as_uri()
        self._events.clear()
        self._call("Page.navigate", {"url": url})
        deadline = time.monotonic() + self.timeout
        while not any(e["method"] == "Page.loadEventFired" for e in self._events):
            if self._recv(deadline) is None:
                raise TimeoutError(f"{url} did not finish loading in {self.timeout} s")
        self.eval("document.fonts.ready.then(() => true)")
        self._settle()

    def eval(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = self._call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def text(self) -> str:
        """The page's visible text, as drawn."""
        return " ".join((self.eval("document.body.innerText") or "").split())

    def off_disk(self) -> list[str]:
        """The requests that went anywhere but the local disk (or inline ``data:``)."""
        return [u for u in self.requests if not u.startswith(("file://", "data:", "about:"))]
