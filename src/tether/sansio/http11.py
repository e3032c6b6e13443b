"""A strict, bounded HTTP/1.1 parser and serializer for the opening handshake (RFC 9112).

Only what a WebSocket handshake needs: a request head (server side), a response head and, for
error reporting, a bounded response body (client side). Parsers are generator coroutines over a
:class:`~tether.sansio.streams.StreamReader`; they read exactly the head (and the body, for a
non-101 response) and leave whatever follows in the reader's buffer, where the frame parser
finds it.

Strictness is on purpose. Everything a lenient parser would guess at is rejected, because two
parsers that guess differently are the root of request smuggling and of handshakes that work
with one peer and not another:

- lines end with CRLF; a bare LF is an error (RFC 9112 section 2.2 allows accepting it; we
  don't);
- the request line has exactly three parts separated by single spaces (RFC 9112 section 3);
- no whitespace between a header name and the colon (RFC 9112 section 5.1: "a server MUST
  reject, with a response status code of 400 (Bad Request), any received request message that
  contains whitespace between a header field name and colon");
- no obsolete line folding (RFC 9112 section 5.2);
- no control characters in header values except HTAB (RFC 9110 section 5.5).

Every read is bounded by a named limit of :class:`~tether.limits.Limits` and fails with 431 as
soon as the limit is crossed, without waiting for the end of the line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import TypeAlias

from ..exceptions import InvalidHTTP, LineTooLong, MultipleValuesError
from ..limits import Limits

__all__ = [
    "DEFAULT_REASONS",
    "HTTP_VERSION",
    "Headers",
    "HeadersLike",
    "MultipleValuesError",
    "Request",
    "Response",
    "normalize_headers",
    "reason_phrase",
]

#: The only HTTP version tether speaks.
HTTP_VERSION = "HTTP/1.1"

#: Reason phrases of every status registered by RFC 9110 section 15 (and 429/431 from RFC
#: 6585), so that whatever status an application answers with goes out with its phrase.
DEFAULT_REASONS: dict[int, str] = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    421: "Misdirected Request",
    422: "Unprocessable Content",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

# Statuses whose responses never have a body (RFC 9112 section 6.3, rule 1); every 1xx too.
_NO_BODY_STATUSES = frozenset({204, 304})

# Longest Content-Length or chunk size we bother converting; anything longer (leading zeros
# aside) is above any body limit. This also keeps int() away from its digit-count limit.
_MAX_SIZE_DIGITS = 18

# RFC 9110 5.6.2: token = 1*tchar
_TOKEN_RE = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_TOKEN_STR_RE = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
# RFC 9110 5.5: field-value characters are HTAB, SP, VCHAR and obs-text; no other CTL.
_FIELD_VALUE_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_FIELD_VALUE_STR_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# RFC 9112 3.2: the request-target is made of URI characters: visible ASCII, nothing else.
_TARGET_RE = re.compile(rb"[\x21-\x7e]+")
_TARGET_STR_RE = re.compile(r"[\x21-\x7e]+")
# RFC 9112 2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT
_VERSION_RE = re.compile(rb"HTTP/[0-9]\.[0-9]")
_VERSION_STR_RE = re.compile(r"HTTP/[0-9]\.[0-9]")
# RFC 3986 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then "://" authority.
_ABSOLUTE_FORM_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
# RFC 9112 7.1: chunk-size [ chunk-ext ], with chunk-ext = *( BWS ";" BWS ext [ BWS "=" ... ] ).
# Extensions are ignored; they only have to be made of field-value characters.
_CHUNK_SIZE_RE = re.compile(rb"([0-9A-Fa-f]+)(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?")
_DIGITS_RE = re.compile(r"[0-9]+")
# Header lines as the incremental parser accepts them (_parse_header_line), each with its CRLF:
# a token, a colon, field-value characters. Used to check a whole head at once.
_HEADER_LINES_RE = re.compile(rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")

_ReadLine = Callable[[int], Generator[None, None, bytes]]
_ReadExact = Callable[[int], Generator[None, None, bytes]]
_ReadToEOF = Callable[[int], Generator[None, None, bytes]]


def reason_phrase(status: int) -> str:
    """Return the standard reason phrase for ``status``, or ``""`` when we have none."""
    return DEFAULT_REASONS.get(status, "")


# --- headers -----------------------------------------------------------------------------------


class Headers:
    """Header lines, in order, looked up case-insensitively.

    Names keep the spelling they were given, for serialization and logs. ``headers[name] =
    value`` *appends* a line, like writing one more header; ``del headers[name]`` removes every
    line with that name. ``headers[name]`` insists on exactly one value; use :meth:`get_all` for
    list headers and :meth:`get` for "the first one, if any".

    Two ``Headers`` are equal when each name has the same values in the same order; the order
    between different names and the spelling of names do not matter (RFC 9110 section 5.3).

    Memory: a server keeps each connection's request for its lifetime. A parsed head is kept
    as its text (the CRLF-separated lines, one ``str``); the list of lines and the index
    by name are built on first use, and ``_compact()`` drops them again while they still say
    exactly what the text says (no line was added or removed since); the server role calls it
    once the handshake is done.
    """

    __slots__ = ("_index", "_items", "_text")

    def __init__(self, items: Iterable[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] | None = []
        self._index: dict[str, list[str]] | None = {}
        #: The header lines as text, CRLF-separated, when the lines are known to match it.
        self._text: str | None = None
        if items is not None:
            for name, value in items:
                self[name] = value

    @classmethod
    def _from_text(cls, text: str) -> Headers:
        """Headers from validated header lines (``name ":" OWS value OWS``, CRLF-separated,
        no final CRLF), parsed on first use."""
        headers = cls()
        headers._items = headers._index = None
        headers._text = text
        return headers

    def _lines(self) -> dict[str, list[str]]:
        """The index by lowercase name, building the lines and the index from the text if
        they were dropped."""
        index = self._index
        if index is not None:
            return index
        items: list[tuple[str, str]] = []
        index = {}
        text = self._text
        if text:
            for line in text.split("\r\n"):
                name, _, value = line.partition(":")
                value = value.strip(" \t")
                items.append((name, value))
                key = name.lower()
                values = index.get(key)
                if values is None:
                    index[key] = [value]
                else:
                    values.append(value)
        self._items = items
        self._index = index
        return index

    def _item_list(self) -> list[tuple[str, str]]:
        items = self._items
        if items is None:
            self._lines()
            items = self._items
            assert items is not None
        return items

    def _compact(self) -> None:
        """Keep the header lines as one ``str`` and drop the list and the index (rebuilt on
        the next lookup). Lines that would not read back the same (a value with surrounding
        blanks, a name with a colon, a CR or LF anywhere) keep the headers as they are."""
        if self._text is None:
            items = self._item_list()
            for name, value in items:
                if (
                    ":" in name
                    or "\r" in name
                    or "\n" in name
                    or "\r" in value
                    or "\n" in value
                    or value != value.strip(" \t")
                ):
                    return
            self._text = "\r\n".join([f"{name}: {value}" for name, value in items])
        self._items = self._index = None

    def __getitem__(self, name: str) -> str:
        values = self._lines().get(name.lower())
        if not values:
            raise KeyError(name)
        if len(values) > 1:
            raise MultipleValuesError(name)
        return values[0]

    def __setitem__(self, name: str, value: str) -> None:
        index = self._lines()
        self._item_list().append((name, value))
        index.setdefault(name.lower(), []).append(value)
        self._text = None

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        index = self._lines()
        if key not in index:
            raise KeyError(name)
        del index[key]
        self._items = [(n, v) for n, v in self._item_list() if n.lower() != key]
        self._text = None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lines()

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for name, _ in self._item_list():
            key = name.lower()
            if key not in seen:
                seen.add(key)
                yield name

    def __len__(self) -> int:
        return len(self._item_list())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._lines() == other._lines()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._item_list()!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of ``name``, or ``default`` when it is missing."""
        values = self._lines().get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name`` in order; ``[]`` when it is missing."""
        return list(self._lines().get(name.lower(), ()))

    def items(self) -> list[tuple[str, str]]:
        """Return every header line as ``(name, value)``, in order."""
        return list(self._item_list())

    def extend(self, items: Iterable[tuple[str, str]]) -> None:
        """Append several header lines."""
        for name, value in items:
            self[name] = value

    def copy(self) -> Headers:
        return type(self)(self._item_list())


#: Headers as tether takes them everywhere: ``Headers``, a mapping of names to values, or an
#: iterable of ``(name, value)`` pairs (which may repeat a name).
HeadersLike: TypeAlias = Headers | Mapping[str, str] | Iterable[tuple[str, str]]


def normalize_headers(headers: HeadersLike | None) -> list[tuple[str, str]]:
    """The ``(name, value)`` lines of ``headers``, checked as the serializer checks them: names
    are tokens and values are field-value characters (no CR, LF, NUL or other control
    character, which would let a value inject header lines).

    Raises:
        TypeError: ``headers`` is not one of the accepted shapes.
        ValueError: a name or a value is invalid.
    """
    if headers is None:
        return []
    if isinstance(headers, Headers):
        items = headers.items()
    elif isinstance(headers, Mapping):
        items = list(headers.items())
    elif isinstance(headers, (str, bytes)):
        raise TypeError("headers must be a mapping, a list of (name, value) pairs or Headers")
    else:
        items = []
        for item in headers:
            if not isinstance(item, tuple) or len(item) != 2:
                raise TypeError(f"headers must be (name, value) pairs, got {item!r}")
            items.append(item)
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"header names and values must be str, got {name!r}: {value!r}")
        # The serializer's own rule (_serialize_headers), applied when the headers are given.
        _check_head_text("header name", _TOKEN_STR_RE, name)
        _check_head_text(f"value for header {name}", _FIELD_VALUE_STR_RE, value)
    return items


def _as_headers(headers: HeadersLike | None) -> Headers:
    if isinstance(headers, Headers):
        return headers  # kept as given: the caller may go on adding lines to it
    return Headers(normalize_headers(headers))


# --- reading the head --------------------------------------------------------------------------


@dataclasses.dataclass
class _HeadBudget:
    """What is left of the head limits while a head is being read."""

    limits: Limits
    size: int = 0  # bytes consumed so far, line terminators included
    count: int = 0  # header lines read so far

    def read_line(
        self, read_line: _ReadLine, what: str, *, header: bool = False
    ) -> Generator[None, None, bytes]:
        """Read one line of the head, CRLF included; fail as soon as a limit is crossed.

        ``what`` names the line in error messages. For header lines (``header=True``) the
        count limit applies: once it is reached, only the empty line ending the head fits.
        """
        limits = self.limits
        # Give read_line the tightest bound, and remember which limit it is, so that the error
        # names it. The stream reader raises as soon as its buffer holds more than that many
        # bytes without a line feed, not when the line finally ends. On a tie, the first
        # candidate wins: the most specific explanation.
        candidates = [
            (
                limits.max_line_length,
                f"{what} longer than max_line_length ({limits.max_line_length} bytes)",
            ),
            (
                # What is left of the head, minus the CRLF of this line.
                limits.max_head_size - self.size - 2,
                f"head larger than max_head_size ({limits.max_head_size} bytes)",
            ),
        ]
        if header and self.count >= limits.max_header_count:
            # Only the empty line that ends the head may follow.
            candidates.insert(
                0, (0, f"more than max_header_count ({limits.max_header_count}) headers")
            )
        bound, reason = min(candidates, key=lambda candidate: candidate[0])
        if bound < 0:
            raise InvalidHTTP(reason, 431)
        try:
            line = yield from read_line(bound)
        except LineTooLong:
            raise InvalidHTTP(reason, 431) from None
        if not line.endswith(b"\r\n"):
            # read_line only returns lines ending with LF.
            raise InvalidHTTP(f"{what} ends with a bare LF; expected CRLF", 400)
        self.size += len(line)
        return line[:-2]

    def read_headers(self, read_line: _ReadLine) -> Generator[None, None, Headers]:
        """Read header lines up to and including the empty line that ends the head."""
        headers = Headers()
        while True:
            line = yield from self.read_line(read_line, "header line", header=True)
            if not line:
                return headers
            name, value = _parse_header_line(line)
            self.count += 1
            headers[name] = value


def _parse_header_line(line: bytes) -> tuple[str, str]:
    """Split ``name ":" OWS value OWS`` (RFC 9112 section 5) and check both parts."""
    if line[0] in b" \t":
        # RFC 9112 5.2: obs-fold; we reject it, which "a server that receives an obs-fold in a
        # request message ... MAY" do, and which we also do in responses.
        raise InvalidHTTP("obsolete line folding in header line", 400)
    colon = line.find(b":")
    if colon < 0:
        raise InvalidHTTP("header line without a colon", 400)
    name = line[:colon]
    if not name:
        raise InvalidHTTP("empty header name", 400)
    if name[-1] in b" \t":
        # RFC 9112 5.1: "No whitespace is allowed between the field name and colon."
        raise InvalidHTTP("whitespace before colon in header line", 400)
    if _TOKEN_RE.fullmatch(name) is None:
        raise InvalidHTTP(f"invalid header name {name!r}", 400)
    value = line[colon + 1 :].strip(b" \t")
    if _FIELD_VALUE_RE.fullmatch(value) is None:
        raise InvalidHTTP(f"invalid character in value of header {name.decode()}", 400)
    # Latin-1 maps every byte to one character, so obs-text survives a round trip.
    return name.decode("ascii"), value.decode("latin-1")


def _path_of(target: str) -> str:
    """Return the origin-form (path and query) of a request-target.

    ``"/a?b"`` stays as it is; the absolute-form ``"ws://h:1/a?b"`` gives ``"/a?b"`` and
    ``"ws://h"`` gives ``"/"`` (RFC 9112 section 3.2.2). Other forms (``*``, ``host:port``) are
    returned unchanged; they are not requests a WebSocket server accepts, and the caller says so.
    """
    if target.startswith("/"):
        return target
    match = _ABSOLUTE_FORM_RE.match(target)
    if match is None:
        return target
    rest = target[match.end() :]
    if rest.startswith("#"):
        rest = ""
    if not rest.startswith("/"):
        rest = "/" + rest
    return rest


def _check_head_text(what: str, pattern: re.Pattern[str], text: str) -> None:
    if pattern.fullmatch(text) is None:
        raise ValueError(f"invalid {what}: {text!r}")


def _serialize_headers(parts: list[str], headers: Headers) -> None:
    for name, value in headers.items():
        # A name or a value with CR, LF or NUL would let whoever controls it write extra header
        # lines or end the head early; refuse anything the parser would refuse.
        _check_head_text("header name", _TOKEN_STR_RE, name)
        _check_head_text(f"value for header {name}", _FIELD_VALUE_STR_RE, value)
        parts.append(f"{name}: {value}\r\n")
    parts.append("\r\n")


@dataclasses.dataclass(init=False)
class Request:
    """An HTTP request head. tether only ever sends or accepts ``GET`` without a body.

    ``target`` is the request-target exactly as received; ``path`` is its origin-form (path and
    query), which is what a server routes on. It is derived from ``target`` when not given.
    ``headers`` may be given as ``Headers``, a mapping or ``(name, value)`` pairs.
    """

    method: str
    target: str
    headers: Headers
    path: str = ""
    version: str = HTTP_VERSION

    def __init__(
        self,
        method: str,
        target: str,
        headers: HeadersLike | None = None,
        path: str = "",
        version: str = HTTP_VERSION,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = _as_headers(headers)
        self.path = path or _path_of(target)
        self.version = version

    @classmethod
    def parse(cls, read_line: _ReadLine, limits: Limits) -> Generator[None, None, Request]:
        """Read a request head: request line, header lines, empty line.

        Anything after the head stays in the stream reader.

        Raises:
            InvalidHTTP: the head is malformed (400), over a limit (431) or not HTTP/1.1 (505).
            EOFError: the stream ended before the end of the head.
        """
        budget = _HeadBudget(limits)
        line = yield from budget.read_line(read_line, "request line")
        method, target, version = cls._parse_request_line(line)
        headers = yield from budget.read_headers(read_line)
        return cls(method, target, headers, _path_of(target), version)

    @classmethod
    def parse_whole(cls, buffer: bytearray, limits: Limits) -> Request | None:
        """The request, if ``buffer`` starts with a whole head that :meth:`parse` would accept;
        the head is then removed from ``buffer``. ``None`` otherwise (the head is incomplete,
        or something in it is wrong or over a limit): :meth:`parse` then waits for the rest or
        gives the exact error. One pass over the head instead of one parser step per line:
        the usual case, a head that arrives in one piece.
        """
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or end + 4 > limits.max_head_size:
            return None
        line_end = buffer.find(b"\r\n")
        lines = bytes(buffer[line_end + 2 : end + 2])  # header lines, each with its CRLF
        if (
            line_end > limits.max_line_length
            or _HEADER_LINES_RE.fullmatch(lines) is None
            or lines.count(b"\n") > limits.max_header_count
        ):
            return None
        if len(lines) > limits.max_line_length + 2 and any(
            len(line) > limits.max_line_length for line in lines.split(b"\r\n")
        ):
            return None
        try:
            method, target, version = cls._parse_request_line(bytes(buffer[:line_end]))
        except InvalidHTTP:
            return None
        del buffer[: end + 4]
        headers = Headers._from_text(lines[:-2].decode("latin-1"))
        return cls(method, target, headers, _path_of(target), version)

    @staticmethod
    def _parse_request_line(line: bytes) -> tuple[str, str, str]:
        # RFC 9112 3: request-line = method SP request-target SP HTTP-version
        if not line:
            raise InvalidHTTP("empty request line", 400)
        parts = line.split(b" ")
        if len(parts) != 3:
            raise InvalidHTTP(
                f"request line has {len(parts)} space-separated parts; expected 3: "
                "method SP request-target SP HTTP-version",
                400,
            )
        method, target, version = parts
        if _TOKEN_RE.fullmatch(method) is None:
            raise InvalidHTTP("invalid method in request line", 400)
        if _TARGET_RE.fullmatch(target) is None:
            raise InvalidHTTP("invalid request target in request line", 400)
        if _VERSION_RE.fullmatch(version) is None:
            raise InvalidHTTP("invalid HTTP version in request line", 400)
        if version != b"HTTP/1.1":
            # RFC 6455 4.1: "The method of the request MUST be GET, and the HTTP version MUST be
            # at least 1.1." HTTP/2 and later are not spoken over this connection either.
            raise InvalidHTTP(
                f"unsupported HTTP version {version.decode()}; expected HTTP/1.1", 505
            )
        return method.decode("ascii"), target.decode("ascii"), version.decode("ascii")

    def serialize(self) -> bytes:
        """Return the request line, the header lines and the empty line that ends the head.

        Raises:
            ValueError: a part of the head holds a character that would break the framing
                (CR, LF, NUL, other controls) or is not well-formed (method, header names).
        """
        _check_head_text("method", _TOKEN_STR_RE, self.method)
        _check_head_text("request target", _TARGET_STR_RE, self.target)
        _check_head_text("HTTP version", _VERSION_STR_RE, self.version)
        parts = [f"{self.method} {self.target} {self.version}\r\n"]
        _serialize_headers(parts, self.headers)
        return "".join(parts).encode("latin-1")


@dataclasses.dataclass(init=False)
class Response:
    """An HTTP response: status line, headers and, for errors, a body.

    ``reason`` defaults to the status's standard phrase; ``headers`` may be given as
    ``Headers``, a mapping or ``(name, value)`` pairs: ``Response(200, headers={...},
    body=b"...")``.
    """

    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = HTTP_VERSION

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: HeadersLike | None = None,
        body: bytes = b"",
        version: str = HTTP_VERSION,
    ) -> None:
        self.status = status
        self.reason = reason_phrase(status) if reason is None else reason
        self.headers = _as_headers(headers)
        self.body = body
        self.version = version

    @classmethod
    def parse(
        cls,
        read_line: _ReadLine,
        read_exact: _ReadExact,
        read_to_eof: _ReadToEOF,
        limits: Limits,
        *,
        method: str = "GET",
    ) -> Generator[None, None, Response]:
        """Read a response head and, unless the status forbids one, its body.

        ``method`` is the request's: a 2xx answer to ``CONNECT`` has no body, whatever its
        headers say; the tunnel starts after its head (RFC 9112 section 6.3, rule 2). Proxies
        answer ``CONNECT`` in HTTP/1.0 as well (tinyproxy does), so that is accepted there.

        The body is read for error reporting only, within ``limits.max_body_size``: by
        ``Content-Length``, by chunked transfer coding, or up to the end of the stream (RFC 9112
        section 6.3). A 101 has no body: what follows its head is WebSocket frames, left in the
        stream reader.

        Raises:
            InvalidHTTP: the head or the body framing is malformed or over a limit. The status
                is informative only: a client does not answer.
            EOFError: the stream ended before the end of the head or of a delimited body.
        """
        budget = _HeadBudget(limits)
        line = yield from budget.read_line(read_line, "status line")
        versions = (b"HTTP/1.1", b"HTTP/1.0") if method == "CONNECT" else (b"HTTP/1.1",)
        status, reason, version = cls._parse_status_line(line, versions)
        headers = yield from budget.read_headers(read_line)
        if method == "CONNECT" and 200 <= status < 300:
            return cls(status, reason, headers, version=version)
        body = yield from cls._read_body(
            status, headers, read_line, read_exact, read_to_eof, limits
        )
        return cls(status, reason, headers, body, version)

    @staticmethod
    def _parse_status_line(
        line: bytes, versions: tuple[bytes, ...] = (b"HTTP/1.1",)
    ) -> tuple[int, str, str]:
        # RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
        version, _, rest = line.partition(b" ")
        if _VERSION_RE.fullmatch(version) is None:
            raise InvalidHTTP("invalid HTTP version in status line", 400)
        if version not in versions:
            raise InvalidHTTP(
                f"unsupported HTTP version {version.decode()}; expected HTTP/1.1", 400
            )
        code, _, reason = rest.partition(b" ")
        if len(code) != 3 or not code.isdigit():
            raise InvalidHTTP("invalid status code in status line", 400)
        status = int(code)
        if not 100 <= status <= 599:
            raise InvalidHTTP(f"status code {status} out of range 100-599", 400)
        # RFC 9112 4: "A client SHOULD ignore the reason-phrase content"; it only has to be made
        # of field-value characters. A missing SP before an empty reason is tolerated.
        if _FIELD_VALUE_RE.fullmatch(reason) is None:
            raise InvalidHTTP("invalid character in reason phrase", 400)
        return status, reason.decode("latin-1"), version.decode()

    @classmethod
    def _read_body(
        cls,
        status: int,
        headers: Headers,
        read_line: _ReadLine,
        read_exact: _ReadExact,
        read_to_eof: _ReadToEOF,
        limits: Limits,
    ) -> Generator[None, None, bytes]:
        # RFC 9112 6.3 rule 1: 1xx (101 included), 204 and 304 end at the empty line.
        if status < 200 or status in _NO_BODY_STATUSES:
            return b""
        # Rule 3: Transfer-Encoding overrides Content-Length; chunked, if last, frames the body.
        if "Transfer-Encoding" in headers:
            codings = [
                coding.strip(" \t").lower()
                for value in headers.get_all("Transfer-Encoding")
                for coding in value.split(",")
                if coding.strip(" \t")
            ]
            if codings and codings[-1] == "chunked":
                return (yield from cls._read_chunked(read_line, read_exact, limits))
            # Rule 4 (response): a final coding other than chunked is read until close.
            return (yield from read_to_eof(limits.max_body_size))
        # Rule 5: Content-Length.
        if "Content-Length" in headers:
            length = cls._content_length(headers.get_all("Content-Length"))
            if length > limits.max_body_size:
                raise InvalidHTTP(
                    f"response body too large: Content-Length {length} is over max_body_size "
                    f"({limits.max_body_size} bytes)",
                    400,
                )
            return (yield from read_exact(length))
        # Rule 8: otherwise, the body runs to the end of the connection.
        return (yield from read_to_eof(limits.max_body_size))

    @staticmethod
    def _content_length(values: list[str]) -> int:
        # RFC 9110 8.6: Content-Length = 1*DIGIT; a list of identical values ("42, 42") may be
        # accepted as one, anything else is an unrecoverable framing error.
        lengths = {v.strip(" \t") for value in values for v in value.split(",")}
        if len(lengths) != 1:
            raise InvalidHTTP("conflicting Content-Length values", 400)
        (text,) = lengths
        if _DIGITS_RE.fullmatch(text) is None:
            raise InvalidHTTP("invalid Content-Length", 400)
        digits = text.lstrip("0")
        if len(digits) > _MAX_SIZE_DIGITS:
            raise InvalidHTTP("response body too large: Content-Length is absurd", 400)
        return int(digits or "0")

    @staticmethod
    def _read_chunked(
        read_line: _ReadLine, read_exact: _ReadExact, limits: Limits
    ) -> Generator[None, None, bytes]:
        # RFC 9112 7.1: chunked-body = *chunk last-chunk trailer-section CRLF
        chunks: list[bytes] = []
        total = 0
        while True:
            line = yield from _HeadBudget(limits).read_line(read_line, "chunk size line")
            match = _CHUNK_SIZE_RE.fullmatch(line)
            if match is None:
                raise InvalidHTTP("invalid chunk size line", 400)
            digits = match.group(1).lstrip(b"0")
            if len(digits) > _MAX_SIZE_DIGITS:
                raise InvalidHTTP("response body too large: chunk size is absurd", 400)
            size = int(digits or b"0", 16)
            if size == 0:
                break
            total += size
            if total > limits.max_body_size:
                raise InvalidHTTP(
                    f"response body too large: over max_body_size ({limits.max_body_size} bytes)",
                    400,
                )
            chunks.append((yield from read_exact(size)))
            if (yield from read_exact(2)) != b"\r\n":
                raise InvalidHTTP("chunk data not followed by CRLF", 400)
        # The trailer section has the syntax of header lines and the same limits; we read it to
        # find the end of the message and then drop it.
        yield from _HeadBudget(limits).read_headers(read_line)
        return b"".join(chunks)

    def serialize(self) -> bytes:
        """Return the status line, the header lines, the empty line and the body.

        ``Content-Length`` is not added: the caller sets the headers it means to send.

        Raises:
            ValueError: the status is not in 100-599, or a part of the head holds a character
                that would break the framing (CR, LF, NUL, other controls).
        """
        if not 100 <= self.status <= 599:
            raise ValueError(f"invalid status code: {self.status}")
        _check_head_text("HTTP version", _VERSION_STR_RE, self.version)
        _check_head_text("reason phrase", _FIELD_VALUE_STR_RE, self.reason)
        parts = [f"{self.version} {self.status} {self.reason}\r\n"]
        _serialize_headers(parts, self.headers)
        head = "".join(parts).encode("latin-1")
        return head + self.body if self.body else head
