"""Run Node's ``ws`` package as an interop peer: an echo server, or a scripted client.

``ws`` is the WebSocket library most of the JavaScript world uses, so it is a good second
opinion on the opening handshake, subprotocols and permessage-deflate. :func:`node_ws_dir`
installs it once with npm into a cache folder (``~/.cache/tether-test/node`` by default, or
``$TETHER_NODE_CACHE``); tests then run the small scripts below with ``node``.

The scripts talk JSON, one object per line on stdout, so that tests assert on what Node saw
rather than on log text. Binary payloads travel as hex.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NodeClientResult",
    "NodeError",
    "NodeWsServer",
    "node_available",
    "node_ws_dir",
    "run_node_client",
]

#: The ``ws`` release line we test against.
WS_SPEC = "ws@8"
#: Seconds allowed for ``npm install``.
INSTALL_TIMEOUT = 180.0

PerMessageDeflate = bool | dict[str, Any]


class NodeError(RuntimeError):
    """Node or the ``ws`` package could not be set up or did not behave."""


def node_available() -> str | None:
    """Return ``None`` when ``node`` is on PATH, else the reason why it is not."""
    if shutil.which("node") is None:
        return "node not found (apt-get install -y nodejs npm)"
    return None


def _cache_dir() -> Path:
    configured = os.environ.get("TETHER_NODE_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tether-test" / "node"


def node_ws_dir() -> Path:
    """Return a folder whose ``node_modules`` holds ``ws``, installing it with npm if needed.

    Raises:
        NodeError: npm is missing or the install failed (for example, without network).
    """
    folder = _cache_dir()
    marker = folder / "node_modules" / "ws" / "package.json"
    if marker.is_file():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise NodeError(f"npm not found, so {WS_SPEC} cannot be installed into {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    # Test runs in parallel share the cache: one installs, the others wait for it.
    with open(folder / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return folder
        command = [
            npm,
            "install",
            "--no-save",
            "--no-package-lock",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
            str(folder),
            WS_SPEC,
        ]
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise NodeError(
                f"npm install {WS_SPEC} took over {INSTALL_TIMEOUT} s; is the npm registry "
                f"reachable? (or install it by hand into {folder})"
            ) from None
        if done.returncode != 0 or not marker.is_file():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise NodeError(
                f"npm install {WS_SPEC} into {folder} failed (exit {done.returncode}); "
                f"offline? Install it by hand or point TETHER_NODE_CACHE at a folder whose "
                f"node_modules holds ws.\n{tail}"
            )
    return folder


def _script(name: str, source: str) -> Path:
    """Write a script next to node_modules (so ``require("ws")`` finds it) and return it."""
    folder = node_ws_dir()
    path = folder / name
    if not path.is_file() or path.read_text() != source:
        temporary = folder / f".{name}.{os.getpid()}.tmp"
        temporary.write_text(source)
        os.replace(temporary, path)
    return path


def _encode(message: str | bytes) -> dict[str, str]:
    if isinstance(message, str):
        return {"text": message}
    return {"binary": bytes(message).hex()}


def _decode(item: dict[str, str]) -> str | bytes:
    if "text" in item:
        return item["text"]
    return bytes.fromhex(item["binary"])


# -- the echo server ------------------------------------------------------------------------

SERVER_JS = r"""
"use strict";
// Echo server for interop tests. Prints one JSON object per line:
// {"event": "listening", "port": N} once, then "connection", "close" and "error" events.
// It exits when its stdin closes, so it never outlives the test process.
const { WebSocketServer } = require("ws");
const config = JSON.parse(process.argv[2]);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");

const server = new WebSocketServer({
  host: config.host,
  port: 0,
  perMessageDeflate: config.perMessageDeflate,
  // Server preference: the first of our protocols that the client offered.
  handleProtocols: (offered) => config.protocols.find((p) => offered.has(p)) ?? false,
});
server.on("headers", (headers, request) => { request.tetherResponseHeaders = headers; });
server.on("connection", (ws, request) => {
  const extensions = (request.tetherResponseHeaders || [])
    .filter((line) => /^sec-websocket-extensions:/i.test(line))
    .map((line) => line.slice(line.indexOf(":") + 1).trim())
    .join(", ");
  out({
    event: "connection",
    path: request.url,
    protocol: ws.protocol,
    extensions: extensions,
    request_protocols: request.headers["sec-websocket-protocol"] ?? null,
    request_extensions: request.headers["sec-websocket-extensions"] ?? null,
  });
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on("close", (code, reason) => out({ event: "close", code: code, reason: reason.toString() }));
  ws.on("error", (error) => out({ event: "error", message: String(error.message) }));
});
server.on("listening", () => out({ event: "listening", port: server.address().port }));
server.on("error", (error) => {
  out({ event: "fatal", message: String(error.message) });
  process.exit(1);
});
process.stdin.on("end", () => {
  for (const client of server.clients) client.terminate();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
});
process.stdin.resume();
"""


class NodeWsServer:
    """A ``ws`` echo server in a Node subprocess, listening on an ephemeral port.

    Args:
        protocols: Subprotocols the server supports, in its order of preference.
        per_message_deflate: ``ws``'s ``perMessageDeflate`` option (``True``, ``False`` or
            an options object such as ``{"serverMaxWindowBits": 10}``).
        host: Address to listen on.
        timeout: Seconds allowed for the server to start.
    """

    def __init__(
        self,
        *,
        protocols: Iterable[str] = (),
        per_message_deflate: PerMessageDeflate = True,
        host: str = "127.0.0.1",
        timeout: float = 15.0,
    ) -> None:
        self.host = host
        self.port = 0
        self._config = {
            "host": host,
            "protocols": list(protocols),
            "perMessageDeflate": per_message_deflate,
        }
        self._timeout = timeout
        self._process: subprocess.Popen[str] | None = None
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stderr: list[str] = []

    def __enter__(self) -> NodeWsServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        script = _script("tether-echo-server.js", SERVER_JS)
        self._process = subprocess.Popen(
            ["node", str(script), json.dumps(self._config)],
            cwd=script.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_events, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            event = self.next_event(self._timeout)
            if event.get("event") != "listening":
                raise NodeError(f"node ws server failed to start: {event}")
            self.port = int(event["port"])
        except BaseException:
            self.close()
            raise

    def _read_events(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            with contextlib.suppress(ValueError):
                self._events.put(json.loads(line))
        self._events.put({"event": "exit"})

    def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line.rstrip())

    def url(self, path: str = "/") -> str:
        """The ``ws://`` URL of ``path`` on this server."""
        return f"ws://{self.host}:{self.port}{path}"

    def next_event(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next JSON event the server printed (``connection``, ``close``, ...).

        Raises:
            NodeError: Nothing arrived within ``timeout`` seconds.
        """
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            raise NodeError(
                f"no event from the node ws server within {timeout} s; stderr:\n"
                + "\n".join(self._stderr[-20:])
            ) from None

    def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """Skip events until one named ``kind`` arrives, and return it."""
        while True:
            event = self.next_event(timeout)
            if event.get("event") == kind:
                return event
            if event.get("event") in ("exit", "fatal"):
                raise NodeError(f"node ws server stopped while waiting for {kind!r}: {event}")

    def close(self) -> None:
        """Stop the server: close its stdin, then terminate, then kill, each bounded."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# -- the scripted client --------------------------------------------------------------------

CLIENT_JS = r"""
"use strict";
// Connects, sends every message, waits for `expect` replies, closes with 1000 and prints
// one JSON object with everything it observed. Always exits within timeout_ms.
const WebSocket = require("ws");
const config = JSON.parse(process.argv[2]);
const result = {
  status: null, protocol: null, extensions: null, response_headers: null,
  received: [], close: null, error: null, body: null,
};
let finished = false;
const finish = () => {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
};
setTimeout(() => { result.error = result.error || "timeout"; finish(); }, config.timeout_ms);

const ws = new WebSocket(config.url, config.protocols, {
  perMessageDeflate: config.perMessageDeflate,
  handshakeTimeout: config.timeout_ms,
});
ws.binaryType = "nodebuffer";
ws.on("upgrade", (response) => {
  result.status = response.statusCode;
  result.response_headers = response.headers;
  result.extensions = response.headers["sec-websocket-extensions"] ?? null;
});
ws.on("unexpected-response", (request, response) => {
  result.status = response.statusCode;
  result.response_headers = response.headers;
  result.error = "unexpected response " + response.statusCode;
  const chunks = [];
  response.on("data", (chunk) => chunks.push(chunk));
  response.on("end", () => {
    result.body = Buffer.concat(chunks).toString();
    request.destroy();
    finish();
  });
});
ws.on("open", () => {
  result.protocol = ws.protocol;
  for (const message of config.messages) {
    if ("text" in message) ws.send(message.text);
    else ws.send(Buffer.from(message.binary, "hex"), { binary: true });
  }
  if (config.expect === 0) ws.close(1000, "done");
});
ws.on("message", (data, isBinary) => {
  result.received.push(isBinary ? { binary: data.toString("hex") } : { text: data.toString() });
  if (result.received.length === config.expect) ws.close(1000, "done");
});
ws.on("error", (error) => { result.error = result.error || String(error.message); });
ws.on("close", (code, reason) => {
  result.close = { code: code, reason: reason.toString() };
  finish();
});
"""


@dataclass
class NodeClientResult:
    """What the ``ws`` client observed; ``error`` is ``None`` when all went well."""

    status: int | None
    protocol: str | None
    extensions: str | None
    received: list[str | bytes]
    close_code: int | None
    close_reason: str | None
    error: str | None
    body: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)


def run_node_client(
    url: str,
    messages: Iterable[str | bytes] = (),
    *,
    protocols: Iterable[str] = (),
    per_message_deflate: PerMessageDeflate = True,
    expect: int | None = None,
    timeout: float = 10.0,
) -> NodeClientResult:
    """Connect a ``ws`` client to ``url``, send ``messages`` and collect the replies.

    The client waits for ``expect`` messages (default: as many as it sent), then closes with
    1000. Handshake failures are reported in the result (``status``, ``error``, ``body``).

    Raises:
        NodeError: Node crashed or printed no result within ``timeout`` (plus a margin).
    """
    outgoing = [_encode(message) for message in messages]
    config = {
        "url": url,
        "protocols": list(protocols),
        "perMessageDeflate": per_message_deflate,
        "messages": outgoing,
        "expect": len(outgoing) if expect is None else expect,
        "timeout_ms": int(timeout * 1000),
    }
    script = _script("tether-client.js", CLIENT_JS)
    try:
        done = subprocess.run(
            ["node", str(script), json.dumps(config)],
            cwd=script.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout + 10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise NodeError(f"node ws client did not exit within {timeout + 10} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise NodeError(
            f"node ws client failed (exit {done.returncode}):\n{done.stderr.strip()[-2000:]}"
        )
    raw = json.loads(lines[-1])
    close = raw["close"] or {}
    return NodeClientResult(
        status=raw["status"],
        protocol=raw["protocol"],
        extensions=raw["extensions"],
        received=[_decode(item) for item in raw["received"]],
        close_code=close.get("code"),
        close_reason=close.get("reason"),
        error=raw["error"],
        body=raw["body"],
        response_headers=raw["response_headers"] or {},
    )
