"""``tether inspect``: how a WebSocket server negotiates, probe by probe.

The inspector opens a series of opening handshakes against one URL. Each request is written by
hand, header line by header line, so that we control exactly what the server sees: an
unsupported version, a key of the wrong length, a ``Connection`` list split over two lines, a
permessage-deflate offer with a duplicated parameter. Each response is read with tether's strict
HTTP/1.1 parser and judged against RFC 6455 and RFC 7692.

Every judgement is a :class:`Finding`: the topic, what was sent (``probe``), what came back
(``observed``: status and the headers that matter), a ``verdict`` and the ``rule`` it was judged
by. Verdicts are:

- ``ok``: the server did what the RFC asks (or one of the things it allows);
- ``violation``: the server did something the RFC forbids, or skipped something it requires;
- ``note``: allowed, but worth knowing (a server that picks subprotocols by its own preference,
  refuses rather than declines, does not echo).

Each probe is bounded by a timeout (5 s by default) and the run reports how long it took. After
a ``101`` the inspector sends a close frame and waits briefly for the server to close, so that
servers do not log aborted connections.

Only :func:`~tether.sansio.handshake.accept_key`, the HTTP parser and the frame serializer come
from tether's sans-I/O core; the final echo round trips use the public :func:`tether.connect`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..asyncio.client import connect
from ..exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidHeaderFormat,
    InvalidHTTP,
    InvalidStatus,
)
from ..extensions.permessage_deflate import DeflateSettings
from ..limits import Limits
from ..sansio.codes import Opcode
from ..sansio.frames import Close, Frame, serialize_frame
from ..sansio.handshake import accept_key, generate_key
from ..sansio.headers import parse_extension_list, parse_token_list, parse_upgrade
from ..sansio.http11 import Headers, Request, Response
from ..sansio.streams import StreamReader
from ..sansio.uri import WebSocketURI, parse_uri
from ..typing import ExtensionParameter
from ..version import __version__
from .text import client_ssl, printable

__all__ = [
    "NOTE",
    "OK",
    "TOPICS",
    "VIOLATION",
    "CannotConnect",
    "Exchange",
    "Finding",
    "InspectOptions",
    "Inspector",
    "Report",
    "inspect",
    "report_json",
]

OK = "ok"
VIOLATION = "violation"
NOTE = "note"

#: Topics in report order, with their headings.
TOPICS: dict[str, str] = {
    "version": "Protocol version",
    "key": "Sec-WebSocket-Key",
    "upgrade": "Upgrade and Connection",
    "subprotocol": "Subprotocols",
    "extensions": "permessage-deflate",
    "echo": "Echo round trip",
}

#: A subprotocol and an extension no server supports, for the "no overlap" probes.
UNKNOWN_SUBPROTOCOL = "tether-inspect-unknown"
UNKNOWN_EXTENSION = "tether-inspect-unknown"

PMD = "permessage-deflate"

# Window-size parameters take "a decimal integer value without leading zeroes between 8 to 15"
# (RFC 7692 7.1.2.1, 7.1.2.2).
_WINDOW_BITS = {str(n) for n in range(8, 16)}
_PMD_PARAMS = {
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
}


class CannotConnect(Exception):
    """The server could not be reached at all (TCP or TLS failed, or timed out)."""


@dataclasses.dataclass
class InspectOptions:
    """What ``tether inspect`` was asked to do."""

    url: str
    #: Subprotocols the server is expected to support, in the order given on the command line.
    subprotocols: Sequence[str] = ()
    #: Seconds allowed for each probe.
    timeout: float = 5.0
    #: Accept any certificate (self-signed test servers).
    insecure: bool = False
    #: ``Origin`` header sent with every probe (servers with an allow-list need one).
    origin: str | None = None
    #: More header lines sent with every probe.
    headers: Sequence[tuple[str, str]] = ()


@dataclasses.dataclass
class Exchange:
    """One handshake request and what came back."""

    request: list[tuple[str, str]]
    key: str | None
    response: Response | None = None
    #: Why there is no (complete) response: timeout, connection closed, unparsable response.
    error: str | None = None
    #: The TCP or TLS connection itself failed.
    connect_failed: bool = False
    #: The head arrived but the body did not end before the timeout; the body is empty.
    truncated: bool = False
    elapsed: float = 0.0

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status

    def values(self, name: str) -> list[str]:
        """Every value of a response header (``[]`` without a response)."""
        return [] if self.response is None else self.response.headers.get_all(name)

    @property
    def body_line(self) -> str:
        """The first line of the response body: servers put the reason for a refusal there."""
        if self.response is None:
            return ""
        text = self.response.body[:500].decode("utf-8", "replace").strip()
        line = text.splitlines()[0].strip() if text else ""
        return line if len(line) <= 120 else line[:117] + "..."

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"request": [f"{name}: {value}" for name, value in self.request]}
        if self.response is not None:
            data["response"] = {
                "status": self.response.status,
                "reason": self.response.reason,
                "headers": [f"{n}: {v}" for n, v in self.response.headers.items()],
                "body": self.response.body[:500].decode("utf-8", "replace"),
            }
        if self.error is not None:
            data["error"] = self.error
        data["elapsed"] = round(self.elapsed, 6)
        return data


@dataclasses.dataclass
class Finding:
    """One judgement: what was sent, what came back, and what the RFC says about it."""

    topic: str
    probe: str
    observed: str
    verdict: str
    rule: str
    #: Why the verdict, in a sentence (for violations and notes; sometimes for ok).
    detail: str = ""
    exchanges: list[Exchange] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "probe": self.probe,
            "observed": self.observed,
            "verdict": self.verdict,
            "rule": self.rule,
            "detail": self.detail,
            "exchanges": [exchange.to_json() for exchange in self.exchanges],
        }


@dataclasses.dataclass
class Report:
    """Everything one run found."""

    url: str
    findings: list[Finding] = dataclasses.field(default_factory=list)
    #: Remarks that are not findings (probes skipped and why).
    remarks: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: The ``Server`` header of the first response, if any.
    server: str | None = None
    duration: float = 0.0
    #: Set when a plain, valid handshake was refused: nothing else could be judged.
    aborted: str | None = None

    def count(self, verdict: str) -> int:
        return sum(1 for finding in self.findings if finding.verdict == verdict)

    def summary(self) -> str:
        """``32 probes, 29 ok, 2 violations, 1 note in 0.41 s``."""

        def plural(n: int, word: str) -> str:
            return f"{n} {word}" if n == 1 else f"{n} {word}s"

        return (
            f"{plural(len(self.findings), 'probe')}, {self.count(OK)} ok, "
            f"{plural(self.count(VIOLATION), 'violation')}, {plural(self.count(NOTE), 'note')} "
            f"in {self.duration:.2f} s"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "tool": f"tether/{__version__}",
            "server": self.server,
            "duration": round(self.duration, 6),
            "aborted": self.aborted,
            "summary": {
                "probes": len(self.findings),
                "ok": self.count(OK),
                "violations": self.count(VIOLATION),
                "notes": self.count(NOTE),
            },
            "remarks": self.remarks,
            "findings": [finding.to_json() for finding in self.findings],
        }

    def render(self, *, color: bool = False) -> str:
        """The report for a terminal: grouped by topic, aligned, a summary line at the end."""

        def paint(text: str, code: str) -> str:
            return f"\x1b[{code}m{text}\x1b[0m" if color else text

        verdict_style = {OK: "32", VIOLATION: "1;31", NOTE: "33"}
        probe_width = min(max((len(f.probe) for f in self.findings), default=10), 44)
        rule_width = min(max((len(f.rule) for f in self.findings), default=10), 20)
        verdict_width = len(VIOLATION)
        indent = " " * (2 + verdict_width + 2)

        lines = [paint(f"tether inspect {self.url}", "1")]
        server = printable(self.server) if self.server else "(no Server header)"
        lines.append(paint(f"server: {server}", "2"))
        for topic, title in TOPICS.items():
            findings = [f for f in self.findings if f.topic == topic]
            remarks = self.remarks.get(topic, [])
            if not findings and not remarks:
                continue
            lines.append("")
            lines.append(paint(title, "1"))
            for finding in findings:
                verdict = paint(
                    finding.verdict.ljust(verdict_width), verdict_style[finding.verdict]
                )
                probe = finding.probe.ljust(probe_width)
                rule = finding.rule.ljust(rule_width)
                lines.append(f"  {verdict}  {probe}  {rule}  {printable(finding.observed)}")
                if finding.detail:
                    lines.append(paint(indent + printable(finding.detail), "2"))
            for remark in remarks:
                lines.append(paint(f"  {remark}", "2"))
        if self.aborted:
            lines.append("")
            lines.append(paint(f"stopped: {printable(self.aborted)}", "1;31"))
        lines.append("")
        lines.append(paint(self.summary(), "1"))
        return "\n".join(lines)


# --- judging responses ---------------------------------------------------------------------------


def _status_text(exchange: Exchange) -> str:
    """``101``, ``426 Upgrade Required``, or why there is no response."""
    if exchange.response is None:
        return exchange.error or "no response"
    response = exchange.response
    if response.status == 101:
        return "101"
    text = f"{response.status} {response.reason}".rstrip()
    return text + " (body cut short)" if exchange.truncated else text


#: Short names for the headers that findings show.
_LABELS = {"Sec-WebSocket-Protocol": "subprotocol", "Sec-WebSocket-Extensions": "extensions"}


def _observed(exchange: Exchange, name: str | None = None, *, missing: bool = False) -> str:
    """The status, then the values of header ``name`` (or "no ..." when ``missing`` is set
    and the header is absent)."""
    text = _status_text(exchange)
    if exchange.response is None or name is None:
        return text
    label = _LABELS.get(name, name)
    values = exchange.values(name)
    if values:
        return text + "".join(f", {label}: {value}" for value in values)
    return f"{text}, no {label}" if missing else text


def _refusal_detail(exchange: Exchange) -> str:
    line = exchange.body_line
    return f'body: "{line}"' if line else ""


def _expect_400(exchange: Exchange, accepted: str) -> tuple[str, str]:
    """Verdict for a request the RFC says to refuse "with an appropriate error code (such as
    400 Bad Request)": 400 is ok, 101 a violation (``accepted`` says what), anything else a note."""
    status = exchange.status
    if status == 400:
        return OK, ""
    if status == 101:
        return VIOLATION, accepted
    if status is None:
        return NOTE, "no answer"
    return NOTE, _join(
        f"refused with {status}; 400 Bad Request is the usual answer", _refusal_detail(exchange)
    )


def _join(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def _tokens(values: Sequence[str], name: str) -> list[str] | None:
    """Parse a token-list header; ``None`` when it breaks the grammar."""
    try:
        return parse_token_list(values, name)
    except InvalidHeaderFormat:
        return None


def _extensions(exchange: Exchange) -> list[tuple[str, list[ExtensionParameter]]] | None:
    """The extensions of a 101 response; ``None`` when the header breaks the grammar."""
    values = exchange.values("Sec-WebSocket-Extensions")
    if not values:
        return []
    try:
        return parse_extension_list(values)
    except InvalidHeaderFormat:
        return None


def _handshake_problems(exchange: Exchange) -> list[str]:
    """What is wrong with a 101 as a WebSocket handshake answer (RFC 6455 4.2.2 item 5)."""
    problems = []
    upgrade = exchange.values("Upgrade")
    try:
        upgrade_ok = any(p.lower() == "websocket" for p in parse_upgrade(upgrade))
    except InvalidHeaderFormat:
        upgrade_ok = False
    if not upgrade_ok:
        problems.append(f"Upgrade is {', '.join(upgrade) or 'missing'}, expected websocket")
    connection = _tokens(exchange.values("Connection"), "Connection") or []
    if not any(t.lower() == "upgrade" for t in connection):
        problems.append("Connection does not list Upgrade")
    accepts = exchange.values("Sec-WebSocket-Accept")
    if exchange.key is not None:
        expected = accept_key(exchange.key)
        if not accepts:
            problems.append("no Sec-WebSocket-Accept")
        elif accepts != [expected]:
            problems.append(f"Sec-WebSocket-Accept is {', '.join(accepts)}, expected {expected}")
    return problems


def _check_deflate_answer(
    offer: list[ExtensionParameter], answer: list[ExtensionParameter]
) -> list[str]:
    """What is wrong with a permessage-deflate answer to ``offer`` (RFC 7692 7.1)."""
    problems = []
    names = [name for name, _ in answer]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{name} appears twice")
    offered = dict(offer)
    for name, value in answer:
        if name not in _PMD_PARAMS:
            problems.append(f"unknown parameter {name}")
        elif name.endswith("no_context_takeover"):
            if value is not None:
                problems.append(f"{name} must have no value (7.1.1)")
        elif value is None:
            problems.append(f"{name} needs a value in a response (7.1.2)")
        elif value not in _WINDOW_BITS:
            problems.append(f"{name}={value} is not 8-15 (7.1.2)")
    answered = dict(answer)
    if "client_max_window_bits" in answered and "client_max_window_bits" not in offered:
        # 7.1.2.2: "If a received extension negotiation offer doesn't have the
        # "client_max_window_bits" extension parameter, the corresponding extension negotiation
        # response to the offer MUST NOT include the "client_max_window_bits" extension
        # parameter."
        problems.append("client_max_window_bits answered but not offered (7.1.2.2)")
    if "server_no_context_takeover" in offered and "server_no_context_takeover" not in answered:
        # 7.1.1.1: a server that accepts the offer includes the parameter in its response.
        problems.append("server_no_context_takeover offered but not in the answer (7.1.1.1)")
    requested = offered.get("server_max_window_bits")
    if requested is not None and requested in _WINDOW_BITS:
        got = answered.get("server_max_window_bits")
        # 7.1.2.1: the response MUST include server_max_window_bits "with the same or smaller
        # value as the offer".
        if got is None:
            problems.append(f"server_max_window_bits={requested} offered but not in the answer")
        elif got in _WINDOW_BITS and int(got) > int(requested):
            problems.append(f"server_max_window_bits={got} is larger than the {requested} offered")
    requested = offered.get("client_max_window_bits")
    got = answered.get("client_max_window_bits")
    if requested is not None and got in _WINDOW_BITS and int(str(got)) > int(requested):
        problems.append(f"client_max_window_bits={got} is larger than the {requested} offered")
    return problems


# --- the inspector -------------------------------------------------------------------------------


class Inspector:
    """Runs the probes against one server and collects the findings."""

    def __init__(self, options: InspectOptions) -> None:
        self.options = options
        self.uri: WebSocketURI = parse_uri(options.url)
        self.timeout = options.timeout
        self.limits = Limits()
        self.report = Report(str(self.uri))
        self._semaphore = asyncio.Semaphore(4)
        self._ssl = client_ssl(options.insecure) if self.uri.secure else None
        # Fail now, not in the middle of the run, if a header given by the user cannot be
        # sent (a control character, a name that is not a token).
        Request("GET", self.uri.resource_name, Headers(self.request()[0])).serialize()

    # --- building and sending requests ----------------------------------------------------------

    def request(
        self,
        *,
        version: Sequence[str] = ("13",),
        key: str | None = "",
        upgrade: Sequence[str] = ("websocket",),
        connection: Sequence[str] = ("Upgrade",),
        protocols: Sequence[str] | None = None,
        extensions: Sequence[str] = (),
    ) -> tuple[list[tuple[str, str]], str | None]:
        """Header lines of a handshake request. Each sequence is a list of header *lines*
        (two items send the header twice); ``key=""`` makes a fresh key, ``None`` sends none.

        ``protocols=None`` offers the subprotocols given on the command line, if any, since
        some servers refuse clients that agree none: probes about other topics then still
        reach the part of the handshake they are about.
        """
        if key == "":
            key = generate_key()
        if protocols is None:
            protocols = self._protocols()
        lines: list[tuple[str, str]] = [("Host", self.uri.host_header)]
        lines += [("Upgrade", value) for value in upgrade]
        lines += [("Connection", value) for value in connection]
        if key is not None:
            lines.append(("Sec-WebSocket-Key", key))
        lines += [("Sec-WebSocket-Version", value) for value in version]
        lines += [("Sec-WebSocket-Protocol", value) for value in protocols]
        lines += [("Sec-WebSocket-Extensions", value) for value in extensions]
        if self.options.origin is not None:
            lines.append(("Origin", self.options.origin))
        if self.uri.user_info is not None:
            credentials = ":".join(self.uri.user_info).encode()
            lines.append(("Authorization", "Basic " + base64.b64encode(credentials).decode()))
        lines.append(("User-Agent", f"tether-inspect/{__version__}"))
        lines += list(self.options.headers)
        return lines, key

    async def send(self, request: tuple[list[tuple[str, str]], str | None]) -> Exchange:
        """Send one handshake request on a fresh connection and read the response."""
        async with self._semaphore:
            return await self._send(*request)

    async def _send(self, lines: list[tuple[str, str]], key: str | None) -> Exchange:
        exchange = Exchange(request=lines, key=key)
        data = Request("GET", self.uri.resource_name, Headers(lines)).serialize()
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                reader, writer = await asyncio.open_connection(
                    self.uri.host,
                    self.uri.port,
                    ssl=self._ssl,
                    server_hostname=self.uri.host if self._ssl is not None else None,
                )
        except TimeoutError:
            exchange.error = f"could not connect within {self.timeout:g} s"
            exchange.connect_failed = True
            return exchange
        except (OSError, ssl_module.SSLError) as exc:
            exchange.error = f"could not connect: {exc}"
            exchange.connect_failed = True
            return exchange
        received = bytearray()
        try:
            async with asyncio.timeout_at(deadline):
                writer.write(data)
                exchange.response = await self._read_response(reader, received)
            exchange.elapsed = time.perf_counter() - started
            if exchange.response.status == 101:
                await self._close_politely(reader, writer, min(1.0, self.timeout))
        except TimeoutError:
            exchange.elapsed = time.perf_counter() - started
            head = self._head_only(bytes(received))
            if head is None:
                exchange.error = f"no response within {self.timeout:g} s"
            else:
                exchange.response = head
                exchange.truncated = True
        except EOFError:
            exchange.error = "connection closed before a complete response"
        except InvalidHTTP as exc:
            exchange.error = f"invalid HTTP response: {exc}"
        except (OSError, ssl_module.SSLError) as exc:
            exchange.error = f"connection error: {exc}"
        finally:
            if not exchange.elapsed:
                exchange.elapsed = time.perf_counter() - started
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()
        return exchange

    async def _read_response(self, reader: asyncio.StreamReader, received: bytearray) -> Response:
        stream = StreamReader()
        parser = Response.parse(
            stream.read_line, stream.read_exact, stream.read_to_eof, self.limits
        )
        while True:
            try:
                next(parser)
            except StopIteration as stop:
                response: Response = stop.value
                return response
            if stream.eof:
                raise EOFError("connection closed")
            chunk = await reader.read(65536)
            if chunk:
                received += chunk
                stream.feed_data(chunk)
            else:
                stream.feed_eof()

    def _head_only(self, data: bytes) -> Response | None:
        """The response head alone, when its body never ended (a server that keeps an error
        response open without Content-Length): drop the framing headers and parse the head."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        kept = [
            line
            for line in data[:end].split(b"\r\n")
            if not line.lower().startswith((b"content-length:", b"transfer-encoding:"))
        ]
        stream = StreamReader()
        stream.feed_data(b"\r\n".join(kept) + b"\r\n\r\n")
        stream.feed_eof()
        parser = Response.parse(
            stream.read_line, stream.read_exact, stream.read_to_eof, self.limits
        )
        try:
            while True:
                next(parser)
        except StopIteration as stop:
            response: Response = stop.value
            return response
        except (InvalidHTTP, EOFError):
            return None

    async def _close_politely(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        """Send a close frame (1000) and wait a little for the server to close the connection."""
        frame = Frame(Opcode.CLOSE, Close(1000, "").serialize())
        with contextlib.suppress(Exception):
            writer.write(serialize_frame(frame, mask=True))
            async with asyncio.timeout(timeout):
                while await reader.read(65536):
                    pass

    # --- running ---------------------------------------------------------------------------------

    def add(
        self,
        topic: str,
        probe: str,
        observed: str,
        verdict: str,
        rule: str,
        detail: str = "",
        *exchanges: Exchange,
    ) -> None:
        self.report.findings.append(
            Finding(topic, probe, observed, verdict, rule, detail, list(exchanges))
        )

    def remark(self, topic: str, text: str) -> None:
        self.report.remarks.setdefault(topic, []).append(text)

    async def gather(self, *requests: tuple[list[tuple[str, str]], str | None]) -> list[Exchange]:
        return list(await asyncio.gather(*(self.send(request) for request in requests)))

    async def run(self) -> Report:
        """Run every probe; raise :class:`CannotConnect` if the server cannot be reached."""
        started = time.perf_counter()
        try:
            baseline = await self.send(self.request())
            if baseline.connect_failed:
                raise CannotConnect(baseline.error or "could not connect")
            servers = baseline.values("Server")
            self.report.server = servers[0] if servers else None
            if not self.version_13(baseline):
                return self.report
            steps: list[Callable[[], Awaitable[None]]] = [
                self.versions,
                self.keys,
                self.upgrade,
                self.subprotocols,
                self.extensions,
                self.echo,
            ]
            for step in steps:
                await step()
        finally:
            self.report.duration = time.perf_counter() - started
        return self.report

    # --- version ---------------------------------------------------------------------------------

    def version_13(self, exchange: Exchange) -> bool:
        """Judge the plain handshake; return whether the rest of the run makes sense."""
        probe = "version 13 (valid request)"
        rule = "RFC 6455 4.2.2"
        if exchange.status != 101:
            verdict = VIOLATION if exchange.response is None else NOTE
            detail = _join("a valid request was not accepted", _refusal_detail(exchange))
            self.add("version", probe, _observed(exchange), verdict, rule, detail, exchange)
            self.report.aborted = (
                "the server did not accept a valid handshake request, so nothing else can be "
                "judged (wrong path? does it need --origin, --header or --subprotocol?)"
            )
            return False
        problems = _handshake_problems(exchange)
        if problems:
            self.add("version", probe, "101", VIOLATION, rule, "; ".join(problems), exchange)
        else:
            self.add("version", probe, "101, Sec-WebSocket-Accept valid", OK, rule, "", exchange)
        # 11.3.5: the header goes from server to client "on WebSocket handshake error"; the
        # reference pages: "The header should not be sent in responses if the server
        # understands the version specified by the client."
        listed = exchange.values("Sec-WebSocket-Version")
        observed = _observed(exchange, "Sec-WebSocket-Version", missing=True)
        probe = "version 13: headers of the 101"
        if listed:
            detail = "Sec-WebSocket-Version belongs in error responses only"
            self.add("version", probe, observed, NOTE, "RFC 6455 11.3.5", detail, exchange)
        else:
            self.add("version", probe, observed, OK, "RFC 6455 11.3.5", "", exchange)
        return True

    async def versions(self) -> None:
        v8, v14, missing = await self.gather(
            self.request(version=["8"]), self.request(version=["14"]), self.request(version=[])
        )
        # 4.2.2 /version/ and 4.4: "If this version does not match a version understood by the
        # server, the server MUST abort the WebSocket handshake [...] and instead send an
        # appropriate HTTP error code (such as 426 Upgrade Required) and a
        # |Sec-WebSocket-Version| header field indicating the version(s) the server is capable
        # of understanding."
        for version, exchange in (("8", v8), ("14", v14)):
            status = exchange.status
            listed = exchange.values("Sec-WebSocket-Version")
            if status == 101 and version == "8":
                verdict = NOTE
                detail = "accepted draft version 8 (hybi-08): fine only if it speaks that draft"
            elif status == 101:
                verdict, detail = VIOLATION, f"accepted version {version}, which does not exist"
            elif status is None:
                verdict, detail = NOTE, "no answer"
            elif not listed:
                verdict = VIOLATION
                detail = _join(
                    "refused without listing its versions in Sec-WebSocket-Version",
                    _refusal_detail(exchange),
                )
            elif status in (426, 400):
                verdict, detail = OK, ""
            else:
                verdict = NOTE
                detail = _join(
                    f"refused with {status}; 426 Upgrade Required is the usual answer",
                    _refusal_detail(exchange),
                )
            observed = _observed(exchange, "Sec-WebSocket-Version", missing=status != 101)
            self.add(
                "version", f"version {version}", observed, verdict, "RFC 6455 4.4", detail, exchange
            )

        # 4.2.1 item 6: the request must carry the version; without it, "an appropriate error
        # code (such as 400 Bad Request)".
        verdict, detail = _expect_400(missing, "accepted a request without Sec-WebSocket-Version")
        observed = _observed(missing, "Sec-WebSocket-Version")
        self.add("version", "no version", observed, verdict, "RFC 6455 4.2.1", detail, missing)

    # --- key -------------------------------------------------------------------------------------

    async def keys(self) -> None:
        # 4.2.1 item 5: "A |Sec-WebSocket-Key| header field with a base64-encoded [...] value
        # that, when decoded, is 16 bytes in length." A request that does not match "MUST" be
        # answered with "an appropriate error code (such as 400 Bad Request)".
        cases = [
            ("no key", None),
            ("key of 15 bytes", base64.b64encode(os.urandom(15)).decode()),
            ("key not base64", "not*base64*at*all*!!!!=="),
        ]
        exchanges = await self.gather(*(self.request(key=key) for _, key in cases))
        for (probe, _), exchange in zip(cases, exchanges, strict=True):
            verdict, detail = _expect_400(exchange, "accepted an invalid key")
            observed = _observed(exchange)
            self.add("key", probe, observed, verdict, "RFC 6455 4.2.1", detail, exchange)

    # --- Upgrade and Connection ----------------------------------------------------------------

    async def upgrade(self) -> None:
        # 4.2.1 items 3 and 4: Upgrade *contains* "websocket" and Connection *includes* the
        # token "Upgrade", both ASCII case-insensitive; RFC 9110 5.3: several lines of a list
        # header are one comma-separated list.
        cases: list[tuple[str, str, dict[str, Any]]] = [
            (
                "Connection: keep-alive, Upgrade",
                "RFC 6455 4.2.1",
                {"connection": ["keep-alive, Upgrade"]},
            ),
            ("Upgrade: WebSocket", "RFC 6455 4.2.1", {"upgrade": ["WebSocket"]}),
            (
                "Connection: keep-alive / Upgrade",
                "RFC 9110 5.3",
                {"connection": ["keep-alive", "Upgrade"]},
            ),
            (
                "Upgrade: tether-probe/1 / websocket",
                "RFC 6455 4.2.1",
                {"upgrade": ["tether-probe/1", "websocket"]},
            ),
        ]
        exchanges = await self.gather(*(self.request(**kwargs) for _, _, kwargs in cases))
        for (probe, rule, _), exchange in zip(cases, exchanges, strict=True):
            if exchange.status == 101:
                problems = _handshake_problems(exchange)
                verdict = VIOLATION if problems else OK
                detail = "; ".join(problems)
            else:
                verdict = VIOLATION if exchange.response is not None else NOTE
                detail = _join("a valid request was refused", _refusal_detail(exchange))
            self.add("upgrade", probe, _observed(exchange), verdict, rule, detail, exchange)

    # --- subprotocols ----------------------------------------------------------------------------

    def _chosen(self, exchange: Exchange) -> tuple[str | None, str]:
        """The subprotocol a 101 selected, and what is wrong with the header, if anything."""
        values = exchange.values("Sec-WebSocket-Protocol")
        if not values:
            return None, ""
        if len(values) > 1:
            # 11.3.4: it "MUST NOT appear more than once in an HTTP response".
            return values[0], "Sec-WebSocket-Protocol appears more than once (RFC 6455 11.3.4)"
        tokens = _tokens(values, "Sec-WebSocket-Protocol")
        if tokens is None or len(tokens) != 1:
            return values[0], "Sec-WebSocket-Protocol must hold a single token"
        return tokens[0], ""

    async def subprotocols(self) -> None:
        topic = "subprotocol"
        header = "Sec-WebSocket-Protocol"
        given = list(dict.fromkeys(self.options.subprotocols))
        singles = await self.gather(*(self.request(protocols=[p]) for p in given))
        supported: list[str] = []
        # 4.2.2 /subprotocol/: the value "MUST be derived from the client's handshake,
        # specifically by selecting one of the values from the |Sec-WebSocket-Protocol| field".
        for name, exchange in zip(given, singles, strict=True):
            chosen, problem = self._chosen(exchange)
            if exchange.status != 101:
                verdict = NOTE
                detail = _join(f"refused when offered only {name}", _refusal_detail(exchange))
            elif problem:
                verdict, detail = VIOLATION, problem
            elif chosen is None:
                verdict, detail = OK, "not supported: accepted without a subprotocol"
            elif chosen == name:
                verdict, detail = OK, ""
                supported.append(name)
            else:
                verdict, detail = VIOLATION, f"answered {chosen}, which was not offered"
            observed = _observed(exchange, header, missing=exchange.status == 101)
            self.add(topic, f"offer {name}", observed, verdict, "RFC 6455 4.2.2", detail, exchange)

        if len(supported) >= 2:
            # 4.1 item 10 and 4.2.1 item 8: the client lists subprotocols "ordered by
            # preference"; the reference pages: the server selects "the first sub-protocol that
            # it supports from the list provided in the request header".
            first, second = supported[0], supported[1]
            forward, backward = await self.gather(
                self.request(protocols=[f"{first}, {second}"]),
                self.request(protocols=[f"{second}, {first}"]),
            )
            picks = (self._chosen(forward)[0], self._chosen(backward)[0])
            observed = f"picked {picks[0] or 'none'}, then {picks[1] or 'none'}"
            if picks == (first, second):
                verdict, detail = OK, "follows the client's order of preference"
            elif picks[0] == picks[1] and picks[0] is not None:
                verdict = NOTE
                detail = f"picks {picks[0]} whatever the client's order (server preference)"
            else:
                verdict, detail = NOTE, "unexpected choice"
            probe = f"offer {first}, {second} / {second}, {first}"
            self.add(topic, probe, observed, verdict, "RFC 6455 4.1", detail, forward, backward)
        if supported:
            # 11.3.4: the header "MAY appear multiple times in an HTTP request (which is
            # logically the same as a single |Sec-WebSocket-Protocol| header field that
            # contains all values)".
            (split,) = await self.gather(
                self.request(protocols=[UNKNOWN_SUBPROTOCOL, supported[0]])
            )
            chosen, problem = self._chosen(split)
            if split.status == 101 and chosen == supported[0] and not problem:
                verdict, detail = OK, ""
            elif split.status == 101 and chosen is None:
                verdict = VIOLATION
                detail = f"ignored the second header line, which offered {supported[0]}"
            else:
                verdict = VIOLATION if split.response is not None else NOTE
                detail = _join(problem, _refusal_detail(split))
            probe = f"offer on two lines: unknown / {supported[0]}"
            observed = _observed(split, header, missing=split.status == 101)
            self.add(topic, probe, observed, verdict, "RFC 6455 11.3.4", detail, split)
        elif not given:
            self.remark(
                topic,
                "pass --subprotocol NAME (repeatable) to test support, order and header lines",
            )

        # No offer, and an offer the server cannot support: no header back ("the only
        # acceptable value is null"), or a refusal if the server insists on a subprotocol.
        none, unknown = await self.gather(
            self.request(protocols=[]), self.request(protocols=[UNKNOWN_SUBPROTOCOL])
        )
        for probe, exchange in (("no offer", none), ("offer only an unknown one", unknown)):
            chosen, problem = self._chosen(exchange)
            if exchange.status == 101 and chosen is None:
                verdict, detail = OK, ""
            elif exchange.status == 101:
                verdict = VIOLATION
                detail = _join(f"answered {chosen}, which was not offered", problem)
            elif exchange.response is not None:
                verdict = NOTE
                detail = _join("refused: requires a subprotocol", _refusal_detail(exchange))
            else:
                verdict, detail = NOTE, "no answer"
            observed = _observed(exchange, header, missing=exchange.status == 101)
            self.add(topic, probe, observed, verdict, "RFC 6455 4.2.2", detail, exchange)

    # --- permessage-deflate ----------------------------------------------------------------------

    def _protocols(self) -> list[str]:
        """The subprotocols given on the command line, as one header line (or none)."""
        return [", ".join(self.options.subprotocols)] if self.options.subprotocols else []

    def _deflate_answer(
        self, exchange: Exchange, offered: Sequence[str]
    ) -> tuple[list[ExtensionParameter] | None, list[str]]:
        """The permessage-deflate parameters accepted (``None``: not accepted) and what is wrong
        with the extensions header, judged against the offer."""
        problems = []
        if len(exchange.values("Sec-WebSocket-Extensions")) > 1:
            # 11.3.2: it "MUST NOT appear more than once in an HTTP response".
            problems.append("Sec-WebSocket-Extensions appears more than once (RFC 6455 11.3.2)")
        answers = _extensions(exchange)
        if answers is None:
            return None, [*problems, "Sec-WebSocket-Extensions breaks the grammar (RFC 6455 9.1)"]
        offers = parse_extension_list(offered) if offered else []
        offered_names = {name for name, _ in offers}
        accepted: list[ExtensionParameter] | None = None
        for name, params in answers:
            if name not in offered_names:
                # 4.2.2 /extensions/: "Extensions not listed by the client MUST NOT be listed."
                problems.append(f"answered {name}, which was not offered (RFC 6455 4.2.2)")
            elif name == PMD:
                if accepted is not None:
                    problems.append("permessage-deflate accepted twice")
                    continue
                accepted = params
                # Judge against the offer it fits best (the client may offer several).
                judged = [_check_deflate_answer(p, params) for n, p in offers if n == PMD]
                if judged:
                    best: list[str] = min(judged, key=len)
                    problems.extend(best)
        return accepted, problems

    async def extensions(self) -> None:
        topic = "extensions"
        header = "Sec-WebSocket-Extensions"

        def offer(*lines: str) -> tuple[list[tuple[str, str]], str | None]:
            return self.request(extensions=list(lines))

        (plain,) = await self.gather(offer(PMD))
        answer, problems = self._deflate_answer(plain, [PMD])
        supported = plain.status == 101 and answer is not None
        if plain.status != 101:
            verdict = NOTE
            detail = _join("refused a plain permessage-deflate offer", _refusal_detail(plain))
        elif problems:
            verdict, detail = VIOLATION, "; ".join(problems)
        elif answer is None:
            verdict, detail = NOTE, "permessage-deflate not supported"
        else:
            verdict, detail = OK, ""
        observed = _observed(plain, header, missing=plain.status == 101)
        self.add(
            topic, "offer permessage-deflate", observed, verdict, "RFC 7692 7.1", detail, plain
        )

        # Valid offers: accept and honour the parameter, or decline (101 without it).
        valid = [
            ("client_max_window_bits", "RFC 7692 7.1.2.2"),
            ("server_max_window_bits=10", "RFC 7692 7.1.2.1"),
            ("server_no_context_takeover", "RFC 7692 7.1.1.1"),
            ("client_no_context_takeover", "RFC 7692 7.1.1.2"),
        ]
        if supported:
            lines = [f"{PMD}; {param}" for param, _ in valid]
            exchanges = await self.gather(*(offer(line) for line in lines))
            for (param, rule), line, exchange in zip(valid, lines, exchanges, strict=True):
                answer, problems = self._deflate_answer(exchange, [line])
                if exchange.status != 101:
                    verdict = VIOLATION if exchange.response is not None else NOTE
                    detail = _join("refused a valid offer", _refusal_detail(exchange))
                elif problems:
                    verdict, detail = VIOLATION, "; ".join(problems)
                elif answer is None:
                    verdict, detail = NOTE, "declined this offer (allowed)"
                else:
                    verdict, detail = OK, ""
                observed = _observed(exchange, header, missing=exchange.status == 101)
                self.add(topic, f"+ {param}", observed, verdict, rule, detail, exchange)
        else:
            self.remark(topic, "parameter probes skipped: the server does not negotiate it")

        # Invalid offers: RFC 7692 7, "A server MUST decline an extension negotiation offer for
        # this extension if [...] an extension parameter not defined for use in an offer [...]
        # an extension parameter with an invalid value [...] multiple extension parameters with
        # the same name." Declining means answering without it; refusing the whole handshake
        # is not what the RFC asks for, but it is safe.
        invalid = [
            ("+ server_max_window_bits=7 (invalid)", "server_max_window_bits=7"),
            ("+ tether_unknown=1 (unknown)", "tether_unknown=1"),
            (
                "+ server_max_window_bits=10 twice",
                "server_max_window_bits=10; server_max_window_bits=10",
            ),
        ]
        lines = [f"{PMD}; {params}" for _, params in invalid]
        exchanges = await self.gather(*(offer(line) for line in lines))
        for (probe, _), line, exchange in zip(invalid, lines, exchanges, strict=True):
            answer, problems = self._deflate_answer(exchange, [line])
            status = exchange.status
            if status == 101 and answer is None and not problems:
                verdict, detail = OK, ""
            elif status == 101:
                verdict = VIOLATION
                detail = _join("accepted an invalid offer" if answer is not None else "", *problems)
            elif status is not None and 400 <= status < 500:
                verdict = NOTE
                detail = _join(
                    "refused the handshake instead of declining the offer",
                    _refusal_detail(exchange),
                )
            else:
                verdict = VIOLATION if status is not None else NOTE
                detail = _join("failed instead of declining the offer", _refusal_detail(exchange))
            observed = _observed(exchange, header, missing=status == 101)
            self.add(topic, probe, observed, verdict, "RFC 7692 7", detail, exchange)

        if supported:
            # A declined offer must not stop the server from considering the next one (RFC
            # 7692 5: the client lists offers in order of preference), and two header lines
            # are one list (RFC 6455 9.1: "this header field MAY be split or combined across
            # multiple lines").
            fallback_line = f"{PMD}; server_max_window_bits=7, {PMD}"
            fallback, split = await self.gather(offer(fallback_line), offer(UNKNOWN_EXTENSION, PMD))
            cases = [
                (
                    "invalid offer, then plain",
                    fallback,
                    [fallback_line],
                    "RFC 7692 5",
                    NOTE,
                    "did not fall back to the second, valid offer",
                ),
                (
                    "offer on two lines: unknown / pmd",
                    split,
                    [UNKNOWN_EXTENSION, PMD],
                    "RFC 6455 9.1",
                    VIOLATION,
                    "ignored the second header line",
                ),
            ]
            for probe, exchange, sent, rule, missed, failure in cases:
                answer, problems = self._deflate_answer(exchange, sent)
                if exchange.status != 101:
                    verdict = VIOLATION if exchange.response is not None else NOTE
                    detail = _join("refused a valid request", _refusal_detail(exchange))
                elif problems:
                    verdict, detail = VIOLATION, "; ".join(problems)
                elif answer is None:
                    verdict, detail = missed, failure
                else:
                    verdict, detail = OK, ""
                observed = _observed(exchange, header, missing=exchange.status == 101)
                self.add(topic, probe, observed, verdict, rule, detail, exchange)

        # The pre-standard name: "Any extension-token used MUST be a registered token" (RFC 6455
        # 9.1); the registered name is permessage-deflate (RFC 7692 7).
        (draft,) = await self.gather(offer("x-permessage-deflate"))
        names = [name for name, _ in _extensions(draft) or []]
        if draft.status != 101:
            verdict = NOTE
            detail = _join("refused the handshake", _refusal_detail(draft))
        elif "x-permessage-deflate" in names:
            verdict, detail = VIOLATION, "accepted the unregistered draft name"
        elif names:
            verdict, detail = VIOLATION, f"answered {', '.join(names)}, which was not offered"
        else:
            verdict, detail = OK, ""
        observed = _observed(draft, header, missing=draft.status == 101)
        self.add(
            topic, "offer x-permessage-deflate", observed, verdict, "RFC 7692 7", detail, draft
        )

    # --- echo ------------------------------------------------------------------------------------

    async def echo(self) -> None:
        # Long and compressible, so that it is compressed when permessage-deflate is agreed.
        text = "tether inspect echo probe " + "0123456789abcdef" * 64
        self.report.findings.append(await self._echo("text, no compression", None, text[:64]))
        settings = DeflateSettings(
            server_max_window_bits=None, client_max_window_bits=None, compress_threshold=0
        )
        self.report.findings.append(await self._echo("text, permessage-deflate", settings, text))

    async def _echo(self, probe: str, compression: DeflateSettings | None, text: str) -> Finding:
        rule = "RFC 6455 6" if compression is None else "RFC 7692 6"

        def finding(observed: str, verdict: str, detail: str = "", rule: str = rule) -> Finding:
            return Finding("echo", probe, observed, verdict, rule, detail)

        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                async with connect(
                    str(self.uri),
                    origin=self.options.origin,
                    subprotocols=list(self.options.subprotocols) or None,
                    compression=compression,
                    additional_headers=list(self.options.headers) or None,
                    user_agent=f"tether-inspect/{__version__}",
                    ssl=self._ssl,
                    open_timeout=self.timeout,
                    ping_interval=None,
                    close_timeout=min(1.0, self.timeout),
                    max_redirects=0,
                ) as ws:
                    agreed = [name for name, _ in ws.handshake.accepted_extensions]
                    sent_at = time.perf_counter()
                    await ws.send(text)
                    reply = await ws.recv()
                    rtt = (time.perf_counter() - sent_at) * 1000
        except TimeoutError:
            return finding(
                f"no reply within {self.timeout:g} s",
                NOTE,
                "no echo: nothing came back (not an echo server?)",
            )
        except InvalidStatus as exc:
            return finding(f"refused: {_status_text(Exchange([], None, exc.response))}", NOTE)
        except InvalidHandshake as exc:
            return finding(
                "tether's client rejected the response", VIOLATION, str(exc), "RFC 6455 4.1"
            )
        except ConnectionClosed as exc:
            if exc.code in (1000, 1001):
                return finding(f"closed: {exc}", NOTE, "no echo: closed without replying")
            return finding(f"closed: {exc}", VIOLATION, "the connection failed")
        except OSError as exc:
            return finding(f"connection error: {exc}", NOTE)
        if reply != text:
            shown = reply if isinstance(reply, str) else reply.hex(" ")
            shown = shown if len(shown) <= 50 else shown[:47] + "..."
            elapsed = time.perf_counter() - started
            return finding(
                f"another message: {shown!r}",
                NOTE,
                f"no echo (not an echo server?); first message after {elapsed:.2f} s",
            )
        with_what = ", ".join(agreed) if agreed else "no extension"
        observed = f"{len(text)} bytes back in {rtt:.1f} ms, {with_what}"
        if compression is not None and PMD not in agreed:
            return finding(observed, NOTE, "permessage-deflate was not agreed")
        return finding(observed, OK)


async def inspect(options: InspectOptions) -> Report:
    """Run every probe against ``options.url`` and return the report.

    Raises:
        CannotConnect: the server could not be reached at all.
        ValueError: the URL is not a ws:// or wss:// URL (``InvalidURI``), or an extra header
            cannot be sent.
    """
    return await Inspector(options).run()


def report_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False)
