"""The ``tether`` command: ``serve``, ``connect`` and ``inspect``.

::

    tether serve [--port 8765]               a demo server: page, /echo, /chat, /healthz
    tether connect ws://127.0.0.1:8765/echo  an interactive client (or a pipe: a line, a message)
    tether inspect ws://127.0.0.1:8765/      how a server negotiates, judged against the RFCs

Exit codes: 0 success; 1 the connection failed or was refused (``connect``), or the server
refused a plain handshake (``inspect``); 2 usage errors and, for ``inspect``, a server that
could not be reached at all; 130 interrupted.

The commands use the public asyncio API only (``tether.serve``, ``tether.connect``); the
inspector also uses the sans-I/O HTTP parser to read responses to requests it writes by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl as ssl_module
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from .. import (
    PRESETS,
    ClientConnection,
    ConnectionClosed,
    ConnectionClosedOK,
    ConnectionLostDuringHandshake,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    Server,
    __version__,
    connect,
)
from ..compiled import describe as core_implementation
from ..exceptions import HubError
from ..sansio.client import check_additional_headers
from ..sansio.masking import implementation as masking_implementation
from ..sansio.uri import WebSocketURI, parse_uri
from .text import client_ssl, printable

__all__ = ["main"]

COMPRESSION_CHOICES = ["deflate", "none", *PRESETS]

CONNECT_HELP = """\
commands:
  /ping [data]            send a ping and print the round-trip time
  /close [code] [reason]  close the connection (default 1000) and exit
  /binary HEX             send bytes as a binary message (spaces allowed: /binary 00 ff)
  /help                   this help
  //text                  send "/text" as a text message
Any other line is sent as a text message. Empty lines are skipped.
"""


# --- argument parsing --------------------------------------------------------------------------


def version_text() -> str:
    """What ``tether --version`` prints: the version, then which implementation runs (the
    sans-I/O core compiled with mypyc or pure Python; masking in C or pure Python)."""
    return (
        f"tether {__version__}\n"
        f"implementation: {core_implementation()}\n"
        f"masking: {masking_implementation()}\n"
    )


class _VersionAction(argparse.Action):
    """``--version``, printed as written (argparse's own would re-wrap the lines)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(version_text())
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tether",
        description="WebSocket tools: a demo server, an interactive client, a handshake inspector.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version and which implementation runs (compiled or pure Python)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the demo server (page, /echo, /chat, /healthz)",
        description="Serve the demo page on GET /, WebSocket echo on /echo (and /), a chat "
        "room on /chat and GET /healthz. Ctrl-C or SIGTERM close every connection with 1001.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8765, help="port to listen on (8765; 0 picks a free one)"
    )
    serve.add_argument(
        "--subprotocol",
        action="append",
        metavar="NAME",
        help="a supported subprotocol, repeatable (default: chat.v2 and chat, what the demo "
        "page offers); the first of the client's offers that is supported is selected",
    )
    serve.add_argument(
        "--compression",
        choices=COMPRESSION_CHOICES,
        default="deflate",
        help="permessage-deflate: deflate (the balanced preset), a preset, or none",
    )
    serve.add_argument(
        "--origin",
        action="append",
        metavar="ORIGIN",
        help="allowed Origin, repeatable (default: any); others get 403",
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="certificate chain (PEM): serve wss://")
    serve.add_argument("--tls-key", metavar="FILE", help="private key (PEM), if not in --tls-cert")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N processes sharing the port (SO_REUSEPORT); the chat spans them with --redis",
    )
    serve.add_argument(
        "--redis",
        metavar="URL",
        help="redis://host:port/db: one chat room for every worker and host on this Redis",
    )
    serve.add_argument(
        "--history",
        type=int,
        default=1000,
        metavar="N",
        help="chat messages kept for reconnecting pages (1000)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging to stderr (info: one line per connection)",
    )

    client = commands.add_parser(
        "connect",
        help="interactive client",
        description="Connect to a WebSocket server. Each line read is sent as a text message; "
        "each message received is printed (binary as hex). Works with a pipe too: the input "
        "lines are sent, replies printed, and the connection closed at the end of input.",
        epilog=CONNECT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_target_arguments(client, "")
    client.add_argument(
        "--subprotocol", action="append", metavar="NAME", help="offer a subprotocol, repeatable"
    )
    client.add_argument(
        "--origin",
        help="Origin header to send (servers with an allow-list of origins check it)",
    )
    client.add_argument(
        "--compression",
        choices=COMPRESSION_CHOICES,
        default="deflate",
        help="offer permessage-deflate (deflate, a preset) or not (none)",
    )
    client.add_argument(
        "--timeout", type=float, default=10.0, help="seconds for the opening handshake (10)"
    )
    client.add_argument(
        "--wait",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="at end of input, wait up to this long for replies before closing (2; it stops "
        "earlier once every message sent has had a reply and 0.1 s passed without another)",
    )

    inspect = commands.add_parser(
        "inspect",
        help="report how a server negotiates the handshake",
        description="Open a series of hand-written handshakes and report, topic by topic, "
        "what the server did and whether RFC 6455 and RFC 7692 allow it.",
    )
    _add_target_arguments(inspect, " for every probe")
    inspect.add_argument(
        "--subprotocol",
        action="append",
        metavar="NAME",
        help="a subprotocol the server may support, repeatable: tests support and order",
    )
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.add_argument(
        "--timeout", type=float, default=5.0, help="seconds allowed for each probe (5)"
    )
    inspect.add_argument("--origin", help="Origin header to send with every probe")
    inspect.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the report (auto: on a terminal, unless NO_COLOR is set)",
    )
    return parser


def _add_target_arguments(command: argparse.ArgumentParser, scope: str) -> None:
    """What ``connect`` and ``inspect`` share: the URL, ``--header`` and ``--insecure``."""
    command.add_argument("url", help="ws:// or wss:// URL")
    command.add_argument(
        "--header",
        action="append",
        metavar="'NAME: VALUE'",
        help=f"an extra request header{scope}, repeatable",
    )
    command.add_argument(
        "--insecure", action="store_true", help="accept any TLS certificate (self-signed)"
    )


def _target(parser: argparse.ArgumentParser, args: argparse.Namespace) -> WebSocketURI:
    """The parsed URL of ``connect`` or ``inspect``, checked against ``--insecure``."""
    try:
        uri = parse_uri(args.url)
    except InvalidURI as exc:
        parser.error(str(exc))
    if args.insecure and not uri.secure:
        parser.error("--insecure only applies to wss:// URLs")
    return uri


def _headers(
    parser: argparse.ArgumentParser, values: Sequence[str] | None
) -> list[tuple[str, str]]:
    headers = []
    for value in values or ():
        name, colon, rest = value.partition(":")
        if not colon:
            parser.error(f"--header {value!r}: expected 'Name: value'")
        try:
            # What connect() checks of additional headers: a name that is not a token,
            # control characters in the value, a Sec-WebSocket-* name (the handshake sets it).
            headers += check_additional_headers([(name, rest.strip())])
        except ValueError as exc:
            parser.error(f"--header {value!r}: {exc}")
    return headers


def _compression(value: str) -> str | None:
    return None if value == "none" else value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tether`` command; return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(parser, args)
        if args.command == "connect":
            return _connect(parser, args)
        return _inspect(parser, args)
    except KeyboardInterrupt:
        return 130


# --- serve -------------------------------------------------------------------------------------


def _serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .demo import DEFAULT_SUBPROTOCOLS, DemoServer, ServeOptions, run, urls

    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key needs --tls-cert")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: expected 0-65535")
    logging.basicConfig(
        level=args.log_level.upper(),
        # With workers, each line says which process wrote it (tether-worker-N or MainProcess).
        format="%(asctime)s %(levelname)s "
        + ("[%(processName)s] " if args.workers > 1 else "")
        + "%(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    options = ServeOptions(
        host=args.host,
        port=args.port,
        subprotocols=args.subprotocol if args.subprotocol else DEFAULT_SUBPROTOCOLS,
        compression=_compression(args.compression),
        origins=args.origin,
        certfile=args.tls_cert,
        keyfile=args.tls_key,
        workers=args.workers,
        redis=args.redis,
        history=args.history,
    )
    secure = options.certfile is not None
    if args.workers < 1 or args.history < 1:
        parser.error("--workers and --history must be >= 1")
    if args.redis and not args.redis.startswith(("redis://", "rediss://", "unix://")):
        parser.error(f"--redis {args.redis}: expected redis://host:port/db (or rediss://, unix://)")
    if args.workers > 1:
        from .demo import serve_workers

        if not hasattr(socket, "SO_REUSEPORT"):
            parser.error("--workers needs SO_REUSEPORT, which this platform lacks")

        return serve_workers(options, banner=lambda bases: _banner(args, options, bases, secure))

    def ready(server: Server, demo: DemoServer) -> None:
        _banner(args, options, urls(server, secure), secure)

    try:
        asyncio.run(run(options, ready=ready))
    except (OSError, ValueError, HubError) as exc:  # ssl.SSLError is an OSError
        print(f"tether serve: error: {exc}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        return 130
    print("Server stopped.", flush=True)
    return 0


def _banner(args: argparse.Namespace, options: Any, bases: list[str], secure: bool) -> None:
    ws = "wss" if secure else "ws"
    base = bases[0]
    socket_base = ws + base[base.index(":") :]
    compression = args.compression if args.compression != "deflate" else "deflate (balanced)"
    print(f"tether {__version__} serving on {base}/  (open it in a browser)")
    for other in bases[1:]:
        print(f"  also on {other}/")
    print(f"  echo     {socket_base}/echo")
    print(f"  chat     {socket_base}/chat")
    print(f"  health   {base}/healthz")
    print(f"  subprotocols: {', '.join(options.subprotocols) or 'none'}")
    print(f"  compression:  {compression}")
    if options.origins:
        print(f"  origins:      {', '.join(options.origins)}")
    if options.workers > 1:
        print(f"  workers:      {options.workers} (SO_REUSEPORT)")
    if options.redis:
        print(f"  hub:          {_redacted(options.redis)}")
    elif options.workers > 1:
        print("  hub:          in-process: each worker has its own chat room (use --redis)")
    print("Press Ctrl-C to stop.", flush=True)


def _redacted(url: str) -> str:
    from ..hub.redis_backend import _redact

    return _redact(url)


# --- connect -----------------------------------------------------------------------------------


def _info(text: str) -> None:
    print(f"* {text}", file=sys.stderr, flush=True)


def _show(text: str, stream: TextIO | None = None) -> None:
    out = stream if stream is not None else sys.stdout
    out.write(text + "\n")
    out.flush()


def _describe_extensions(ws: ClientConnection) -> str:
    parts = []
    for name, params in ws.handshake.accepted_extensions:
        rendered = [name, *(key if value is None else f"{key}={value}" for key, value in params)]
        parts.append("; ".join(rendered))
    return ", ".join(parts) or "none"


class _StdinReader:
    """Lines of standard input, read by a daemon thread with ``os.read`` and handed to the
    event loop. ``os.read`` holds no lock of the ``sys.stdin`` object, so a thread still blocked
    on a terminal at exit does not hold up the interpreter; it simply ends with it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="tether-stdin", daemon=True)
        self._thread.start()

    def _put(self, item: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def _run(self) -> None:
        pending = b""
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            self._put(None)
            return
        while True:
            try:
                chunk = os.read(fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                if pending:
                    self._put(pending)
                self._put(None)
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._put(line)


class _Session:
    """One ``tether connect`` session: input lines to messages, messages to output lines."""

    def __init__(self, ws: ClientConnection, args: argparse.Namespace) -> None:
        self.ws = ws
        self.args = args
        self.sent = 0
        self.received = 0
        self.arrived = asyncio.Event()

    async def receive(self) -> None:
        """Print messages until the connection closes or nobody reads our output."""
        try:
            async for message in self.ws:
                self.received += 1
                self.arrived.set()
                if isinstance(message, str):
                    _show(f"< {printable(message)}")
                else:
                    _show(f"< [binary, {len(message)} bytes] {message.hex(' ')}")
        except ConnectionClosed:
            pass
        except BrokenPipeError:
            # `tether connect ... | head -1`: the reader is gone. Point stdout at /dev/null so
            # that the final flush at exit does not fail too, and end the session.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)
        self.sent += 1

    async def command(self, line: str) -> bool:
        """Run one input line; return ``False`` when the session should end."""
        if line.startswith("//"):
            await self.send_text(line[1:])
            return True
        if not line.startswith("/"):
            await self.send_text(line)
            return True
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        if name == "ping":
            waiter = await self.ws.ping(rest if rest else None)
            try:
                rtt = await asyncio.wait_for(waiter, self.args.timeout)
            except TimeoutError:
                _info(f"no pong within {self.args.timeout:g} s")
            else:
                _info(f"pong: round trip {rtt * 1000:.2f} ms")
            return True
        if name == "close":
            code_text, _, reason = rest.partition(" ")
            code = 1000
            if code_text:
                try:
                    code = int(code_text)
                except ValueError:
                    _info(f"not a close code: {code_text!r}; usage: /close [code] [reason]")
                    return True
            try:
                await self.ws.close(code, reason.strip())
            except Exception as exc:  # an invalid code, say: report and stay connected
                _info(f"cannot close with {code}: {exc}")
                return True
            return False
        if name == "binary":
            try:
                data = bytes.fromhex(rest)
            except ValueError:
                _info("usage: /binary HEX, for example /binary 00ff10 or /binary 00 ff 10")
                return True
            await self.ws.send(data)
            self.sent += 1
            return True
        if name == "help":
            sys.stderr.write(CONNECT_HELP)
            sys.stderr.flush()
            return True
        _info(f"unknown command /{printable(name)}; /help lists the commands, //text sends /text")
        return True

    async def linger(self) -> None:
        """At end of input: wait for replies still on their way, ``--wait`` seconds at most.

        Once as many messages came back as were sent, 0.1 s without a message is enough.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.args.wait
        while (remaining := deadline - loop.time()) > 0:
            quiet = 0.1 if self.received >= self.sent else remaining
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), min(quiet, remaining))
            except TimeoutError:
                if self.received >= self.sent:
                    return


def _connect(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    headers = _headers(parser, args.header)
    uri = _target(parser, args)
    try:
        return asyncio.run(_connect_session(args, headers, uri.secure))
    except ValueError as exc:  # e.g. a header tether sets itself
        print(f"tether connect: error: {exc}", file=sys.stderr)
        return 2


async def _connect_session(
    args: argparse.Namespace, headers: list[tuple[str, str]], secure: bool
) -> int:
    try:
        ws = await connect(
            args.url,
            origin=args.origin,
            subprotocols=args.subprotocol,
            compression=_compression(args.compression),
            additional_headers=headers or None,
            ssl=client_ssl(args.insecure) if secure else None,
            open_timeout=args.timeout,
        )
    except InvalidStatus as exc:
        response = exc.response
        print(
            f"tether connect: the server refused the WebSocket handshake: HTTP "
            f"{response.status} {printable(response.reason)}".rstrip(),
            file=sys.stderr,
        )
        body = response.body[:500].decode("utf-8", "replace").strip()
        if body:
            print(f"  reason: {printable(body.splitlines()[0])}", file=sys.stderr)
        if exc.supported_versions:
            print(f"  supported versions: {', '.join(exc.supported_versions)}", file=sys.stderr)
        return 1
    except ConnectionLostDuringHandshake as exc:
        print(f"tether connect: {exc}", file=sys.stderr)
        return 1
    except InvalidHandshake as exc:
        print(f"tether connect: invalid handshake response: {printable(str(exc))}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"tether connect: no handshake within {args.timeout:g} s", file=sys.stderr)
        return 1
    except (OSError, ssl_module.SSLError) as exc:
        print(f"tether connect: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1

    _info(f"connected to {args.url}")
    _info(f"subprotocol: {ws.subprotocol or 'none'}")
    _info(f"extensions: {_describe_extensions(ws)}")
    session = _Session(ws, args)
    loop = asyncio.get_running_loop()
    stdin = _StdinReader(loop)
    receiver = asyncio.create_task(session.receive())
    interrupted = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupted.set)

    try:
        while True:
            line_task = asyncio.ensure_future(stdin.queue.get())
            interrupt_task = asyncio.ensure_future(interrupted.wait())
            done, _ = await asyncio.wait(
                [line_task, receiver, interrupt_task], return_when=asyncio.FIRST_COMPLETED
            )
            interrupt_task.cancel()
            if receiver in done or interrupted.is_set():
                line_task.cancel()
                if interrupted.is_set():
                    _info("interrupted: closing")
                break
            item = line_task.result()
            if item is None:  # end of input
                await session.linger()
                break
            line = item.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                continue
            try:
                if not await session.command(line):
                    break
            except ConnectionClosed:
                break
        await ws.close()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        await ws.wait_closed()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(receiver, 1)
    return _report_close(ws)


def _report_close(ws: ClientConnection) -> int:
    """Print how the connection closed; 0 for a clean close we asked for or a normal one
    (1000, 1001) from the server, 1 otherwise."""
    closed = ws.protocol.close_exc
    _info(f"connection closed: {printable(str(closed))}")
    if closed.rcvd is None:
        return 1
    if closed.rcvd_then_sent is False:  # we closed first, and the server answered
        return 0
    return 0 if isinstance(closed, ConnectionClosedOK) else 1


# --- inspect -----------------------------------------------------------------------------------


def _inspect(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .inspect import CannotConnect, InspectOptions, inspect, report_json

    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    uri = _target(parser, args)
    options = InspectOptions(
        url=args.url,
        subprotocols=args.subprotocol or (),
        timeout=args.timeout,
        insecure=args.insecure,
        origin=args.origin,
        headers=_headers(parser, args.header),
    )
    started = time.perf_counter()
    try:
        report = asyncio.run(inspect(options))
    except CannotConnect as exc:
        elapsed = time.perf_counter() - started
        print(f"tether inspect: cannot reach {uri}: {exc} (after {elapsed:.2f} s)", file=sys.stderr)
        return 2
    except ValueError as exc:  # a --header that cannot be sent
        print(f"tether inspect: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(report_json(report))
    else:
        if args.color == "always":
            color = True
        elif args.color == "never":
            color = False
        else:
            color = (
                sys.stdout.isatty()
                and not os.environ.get("NO_COLOR")
                and os.environ.get("TERM") != "dumb"
            )
        print(report.render(color=color))
    return 1 if report.aborted else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
