"""What the operations end-to-end test needs around the code location: a webhook receiver, process
groups for ``dagster-webserver`` and ``dagster-daemon``, the webserver's GraphQL, headless chromium
and a reader of the pixels of its screenshots.

Everything here listens on or talks to 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx

LOOPBACK = "127.0.0.1"
CHROMIUM = Path("/usr/bin/chromium")
WINDOW_SIZE = (1400, 1000)  # the browser's viewport, and so every screenshot's size in pixels
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float,
    waiting_for: str,
    interval: float = 1.0,
    diagnostics: Callable[[], str] = lambda: "",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if outcome:
            return outcome
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {waiting_for}\n{diagnostics()}"
            )
        time.sleep(interval)


# --- The webhook receiver ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedRequest:
    """One POST as it reached the receiver: the exact body bytes, the headers and the answer given."""

    headers: Mapping[str, str]
    body: bytes
    answered: int

    @property
    def accepted(self) -> bool:
        return 200 <= self.answered < 300

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), None)


class WebhookReceiver:
    """A webhook receiver on 127.0.0.1 that records every request and can refuse the next ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._refusals_left = 0
        record = self._record

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(record(dict(self.headers.items()), body))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/billing-alerts"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def refuse_next(self, count: int) -> None:
        """Answer HTTP 500 to the next ``count`` requests, as a receiver that is down would."""
        with self._lock:
            self._refusals_left = count

    def _record(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            answered = 500 if self._refusals_left else 200
            self._refusals_left = max(0, self._refusals_left - 1)
            self._requests.append(ReceivedRequest(headers, body, answered))
            return answered

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# --- Long-running Dagster processes -----------------------------------------------------------------


class ProcessGroups:
    """Processes each started in a process group of its own, and all ended together.

    ``dagster-webserver`` and ``dagster-daemon`` start code servers and run workers of their own and
    may not exit promptly on SIGTERM (docs/design.md §8): every group gets SIGTERM, then, after a grace
    period shared by all of them, SIGKILL — children that outlived their leader included.
    """

    def __init__(self, logs: Path, grace_seconds: float = 10.0) -> None:
        self._logs = logs
        self._grace_seconds = grace_seconds
        self._started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> None:
        self._logs.mkdir(parents=True, exist_ok=True)
        with (self._logs / f"{name}.log").open("wb") as log:
            self._started[name] = subprocess.Popen(
                list(args),
                env=dict(env),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exited(self) -> dict[str, int]:
        """The processes that have exited already, with their exit codes."""
        return {name: code for name, process in self._started.items() if (code := process.poll()) is not None}

    def log_tails(self, lines: int = 30) -> str:
        tails = []
        for name in self._started:
            text = (self._logs / f"{name}.log").read_text(errors="replace").splitlines()
            tails.append(f"--- last {lines} lines of {name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(tails)

    def stop_all(self) -> None:
        for process in self._started.values():
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._grace_seconds
        for process in self._started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self._started.values():
            _signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=self._grace_seconds)
        self._started.clear()


def _signal_group(group: int, sig: signal.Signals) -> None:
    # start_new_session made each process the leader of a group with its own pid as the group id.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


class GraphQL:
    """The webserver's GraphQL endpoint, called as the UI calls it."""

    def __init__(self, base_url: str) -> None:
        # trust_env=False: no proxy from the environment stands between the test and 127.0.0.1.
        self._http = httpx.Client(base_url=base_url, timeout=30.0, trust_env=False)

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self._http.post("/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        payload = response.json()
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def server_answers(self) -> bool:
        try:
            return self._http.get("/server_info").status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()


# --- Headless chromium ------------------------------------------------------------------------------


def ensure_chromium() -> Path:
    """Debian's chromium, installed through apt-get when it is missing (as .ci/run does)."""
    if not CHROMIUM.exists():
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(command, env=environment, check=True, capture_output=True, timeout=900)
    assert CHROMIUM.exists(), f"{CHROMIUM} is still missing after apt-get install chromium"
    return CHROMIUM


def visit_headless(url: str, action: str, *, profile: Path, timeout: float = 90.0) -> bytes:
    """One visit of ``url`` by a fresh headless chromium doing ``action`` (``--dump-dom``,
    ``--screenshot=…``); returns what it printed on stdout."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"the browser only visits {LOOPBACK}, not {url}")
    command = [
        str(ensure_chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
        # Time the page's own timers and requests may take before the DOM or pixels are taken.
        "--virtual-time-budget=15000",
        action,
        url,
    ]
    browser = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        stdout, stderr = browser.communicate(timeout=timeout)
    finally:
        # The renderer and GPU helpers share the browser's group; none may outlive the visit.
        _signal_group(browser.pid, signal.SIGKILL)
        browser.wait(timeout=10)
    assert browser.returncode == 0, (
        f"chromium {action} exited {browser.returncode}: {stderr.decode()[-2000:]}"
    )
    return stdout


# --- What a screenshot shows ------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Bytes per pixel of the 8-bit PNG colour types chromium writes: greyscale, RGB, grey + alpha, RGBA.
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


@dataclass(frozen=True)
class Picture:
    """A decoded 8-bit, non-interlaced PNG: its size and every pixel as channel bytes."""

    width: int
    height: int
    pixels: list[bytes]

    def colour_shares(self) -> Counter[bytes]:
        """How many pixels hold each colour."""
        return Counter(self.pixels)


def read_png(data: bytes) -> Picture:
    """Decode a PNG with the standard library: its chunks, the zlib stream and the row filters."""
    if data[:8] != PNG_SIGNATURE:
        raise ValueError("not a PNG file")
    position, header, compressed = 8, None, bytearray()
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("a PNG without its IHDR chunk")
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in _CHANNELS or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour_type}, interlace {interlace}")
    step = _CHANNELS[colour_type]
    stride = width * step
    raw = zlib.decompress(bytes(compressed))
    if len(raw) != height * (stride + 1):
        raise ValueError(f"a {width}×{height} PNG holds {len(raw)} bytes of rows")
    previous, pixels = bytearray(stride), []
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up, up_left = previous[i], previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - up_left
                distances = (abs(estimate - left), abs(estimate - up), abs(estimate - up_left))
                predictor = (left, up, up_left)[distances.index(min(distances))]
                line[i] = (line[i] + predictor) & 0xFF
            elif kind != 0:
                raise ValueError(f"row {row} has the unknown PNG filter {kind}")
        pixels.extend(bytes(line[i : i + step]) for i in range(0, stride, step))
        previous = line
    return Picture(width, height, pixels)
