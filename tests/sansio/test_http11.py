"""Tests for tether.sansio.http11: Headers, and Request/Response parsing and serialization.

Every rule is checked with raw bytes, the way they arrive from a socket. Parsers are driven as
their callers drive them: feed bytes to a StreamReader, resume the generator with next(), and
read the result from StopIteration.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.exceptions import InvalidHTTP
from tether.limits import Limits
from tether.sansio.http11 import (
    DEFAULT_REASONS,
    Headers,
    MultipleValuesError,
    Request,
    Response,
    reason_phrase,
)
from tether.sansio.streams import StreamReader

NEED_DATA = object()

MDN_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: example.com:8000\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

MDN_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: soap\r\n"
    b"\r\n"
)

# A WebSocket frame that arrives in the same packet as the head: text "Hello", unmasked.
FRAME = b"\x81\x05Hello"


def step(parser: Generator[None, None, Any]) -> Any:
    """Resume a parser once: its result, or NEED_DATA when it waits for more bytes."""
    try:
        next(parser)
    except StopIteration as exc:
        return exc.value
    return NEED_DATA


def request_parser(limits: Limits) -> tuple[StreamReader, Generator[None, None, Request]]:
    reader = StreamReader()
    return reader, Request.parse(reader.read_line, limits)


def response_parser(limits: Limits) -> tuple[StreamReader, Generator[None, None, Response]]:
    reader = StreamReader()
    return reader, Response.parse(reader.read_line, reader.read_exact, reader.read_to_eof, limits)


def parse_request(
    data: bytes, limits: Limits | None = None, *, eof: bool = False
) -> tuple[Any, StreamReader]:
    """Feed ``data`` in one piece; return the result (or NEED_DATA) and the reader."""
    reader, parser = request_parser(limits or Limits())
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return step(parser), reader


def parse_response(
    data: bytes, limits: Limits | None = None, *, eof: bool = False
) -> tuple[Any, StreamReader]:
    reader, parser = response_parser(limits or Limits())
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return step(parser), reader


def request_error(data: bytes, limits: Limits | None = None) -> InvalidHTTP:
    with pytest.raises(InvalidHTTP) as info:
        parse_request(data, limits)
    return info.value


def response_error(data: bytes, limits: Limits | None = None) -> InvalidHTTP:
    with pytest.raises(InvalidHTTP) as info:
        parse_response(data, limits)
    return info.value


# --- Headers -----------------------------------------------------------------------------------


def test_headers_lookup_is_case_insensitive_and_keeps_spelling() -> None:
    headers = Headers([("Sec-WebSocket-Key", "k"), ("host", "h")])
    assert headers["sec-websocket-key"] == "k"
    assert headers["HOST"] == "h"
    assert "SEC-WEBSOCKET-KEY" in headers
    assert "Origin" not in headers
    assert 42 not in headers
    assert headers.items() == [("Sec-WebSocket-Key", "k"), ("host", "h")]


def test_headers_getitem_wants_exactly_one_value() -> None:
    headers = Headers([("Sec-WebSocket-Protocol", "soap"), ("sec-websocket-protocol", "wamp")])
    with pytest.raises(MultipleValuesError) as info:
        headers["Sec-WebSocket-Protocol"]
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "multiple values for header Sec-WebSocket-Protocol"
    with pytest.raises(KeyError) as missing:
        headers["Origin"]
    assert not isinstance(missing.value, MultipleValuesError)


def test_headers_setitem_appends_and_delitem_removes_all() -> None:
    headers = Headers()
    headers["Connection"] = "Upgrade"
    headers["Host"] = "h"
    headers["connection"] = "keep-alive"
    assert len(headers) == 3
    assert headers.get_all("CONNECTION") == ["Upgrade", "keep-alive"]
    assert list(headers) == ["Connection", "Host"]
    del headers["CONNECTION"]
    assert headers.items() == [("Host", "h")]
    assert "Connection" not in headers
    assert len(headers) == 1
    with pytest.raises(KeyError):
        del headers["Connection"]


def test_headers_get_get_all_extend() -> None:
    headers = Headers([("A", "1"), ("a", "2")])
    assert headers.get("a") == "1"
    assert headers.get("b") is None
    assert headers.get("b", "x") == "x"
    assert headers.get_all("b") == []
    headers.extend([("B", "3"), ("A", "4")])
    assert headers.get_all("A") == ["1", "2", "4"]
    # get_all returns a copy.
    headers.get_all("A").append("5")
    assert headers.get_all("A") == ["1", "2", "4"]


def test_headers_iter_gives_each_name_once_in_first_seen_order() -> None:
    headers = Headers([("B", "1"), ("a", "2"), ("b", "3"), ("A", "4"), ("C", "5")])
    assert list(headers) == ["B", "a", "C"]
    assert len(headers) == 5


def test_headers_copy_is_independent() -> None:
    headers = Headers([("A", "1")])
    copy = headers.copy()
    copy["A"] = "2"
    assert headers.get_all("A") == ["1"]
    assert copy.get_all("A") == ["1", "2"]


def test_headers_equality() -> None:
    assert Headers([("A", "1"), ("B", "2")]) == Headers([("b", "2"), ("a", "1")])
    assert Headers([("A", "1"), ("A", "2")]) != Headers([("A", "2"), ("A", "1")])
    assert Headers([("A", "1")]) != Headers([("A", "1"), ("A", "1")])
    assert Headers([("A", "x")]) != Headers([("A", "X")])
    assert Headers() != {}
    with pytest.raises(TypeError):
        hash(Headers())


def test_headers_repr() -> None:
    assert repr(Headers([("Host", "h")])) == "Headers([('Host', 'h')])"


# --- Request.parse: accepted input -------------------------------------------------------------


def test_parse_mdn_request() -> None:
    request, reader = parse_request(MDN_REQUEST)
    assert request == Request(
        "GET",
        "/chat",
        Headers(
            [
                ("Host", "example.com:8000"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ]
        ),
    )
    assert request.path == "/chat"
    assert request.version == "HTTP/1.1"
    assert reader.buffer == b""


def test_parse_request_leaves_following_bytes_in_the_reader() -> None:
    request, reader = parse_request(MDN_REQUEST + FRAME)
    assert isinstance(request, Request)
    assert reader.buffer == FRAME


def test_parse_request_byte_by_byte() -> None:
    reader, parser = request_parser(Limits())
    data = MDN_REQUEST + FRAME
    head_end = len(MDN_REQUEST)
    for i in range(head_end - 1):
        reader.feed_data(data[i : i + 1])
        assert step(parser) is NEED_DATA, i
    reader.feed_data(data[head_end - 1 :])
    request = step(parser)
    assert isinstance(request, Request)
    assert request.headers["Sec-WebSocket-Version"] == "13"
    assert reader.buffer == FRAME


def test_parse_request_strips_ows_and_keeps_obs_text() -> None:
    data = b"GET / HTTP/1.1\r\nX-A:\t value with  inner  spaces \t\r\nX-B:\r\nX-C: caf\xe9\r\n\r\n"
    request, _ = parse_request(data)
    assert request.headers["X-A"] == "value with  inner  spaces"
    assert request.headers["X-B"] == ""
    assert request.headers["X-C"] == "caf\xe9"
    # latin-1 in, latin-1 out: the byte survives.
    assert b"X-C: caf\xe9\r\n" in request.serialize()


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/chat", "/chat"),
        ("/", "/"),
        ("/a/b?c=d&e", "/a/b?c=d&e"),
        ("ws://h:1/a?b", "/a?b"),
        ("wss://example.com/chat", "/chat"),
        ("http://h", "/"),
        ("http://h?x=1", "/?x=1"),
        ("ws://h#fragment", "/"),
        ("HTTP://user@h:80/p", "/p"),
        ("*", "*"),
        ("example.com:443", "example.com:443"),
    ],
)
def test_parse_request_path(target: str, path: str) -> None:
    request, _ = parse_request(f"GET {target} HTTP/1.1\r\n\r\n".encode())
    assert request.target == target
    assert request.path == path
    # Built by hand, the same path is derived.
    assert Request("GET", target, Headers()).path == path


def test_parse_request_other_methods_are_http() -> None:
    # Rejecting them is the server's job (405), not the parser's.
    request, _ = parse_request(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert request.method == "POST"


# --- Request.parse: rejected input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        # Framing.
        (b"GET / HTTP/1.1\n\r\n", 400, "request line ends with a bare LF"),
        (b"GET / HTTP/1.1\r\nHost: h\n\r\n", 400, "header line ends with a bare LF"),
        (b"GET / HTTP/1.1\r\nHost: h\r\n\n", 400, "header line ends with a bare LF"),
        # Request line.
        (b"\r\n", 400, "empty request line"),
        (b"GET  / HTTP/1.1\r\n\r\n", 400, "has 4 space-separated parts"),
        (b"GET / HTTP/1.1 \r\n\r\n", 400, "has 4 space-separated parts"),
        (b" GET / HTTP/1.1\r\n\r\n", 400, "has 4 space-separated parts"),
        (b"GET /\r\n\r\n", 400, "has 2 space-separated parts"),
        (b"GET\r\n\r\n", 400, "has 1 space-separated parts"),
        (b"GET\t/\tHTTP/1.1\r\n\r\n", 400, "has 1 space-separated parts"),
        (b"G@T / HTTP/1.1\r\n\r\n", 400, "invalid method"),
        (b"GET /\x7f HTTP/1.1\r\n\r\n", 400, "invalid request target"),
        (b"GET /\xff HTTP/1.1\r\n\r\n", 400, "invalid request target"),
        (b"GET /\x00 HTTP/1.1\r\n\r\n", 400, "invalid request target"),
        (b"GET /a\rb HTTP/1.1\r\n\r\n", 400, "invalid request target"),
        # Version.
        (b"GET / HTTP/1.0\r\n\r\n", 505, "unsupported HTTP version HTTP/1.0"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "unsupported HTTP version HTTP/2.0"),
        (b"GET / HTTP/0.9\r\n\r\n", 505, "unsupported HTTP version HTTP/0.9"),
        (b"GET / HTTP/1.1x\r\n\r\n", 400, "invalid HTTP version"),
        (b"GET / http/1.1\r\n\r\n", 400, "invalid HTTP version"),
        (b"GET / HTTP/11\r\n\r\n", 400, "invalid HTTP version"),
        (b"GET / HTTP/2\r\n\r\n", 400, "invalid HTTP version"),
        (b"GET / HTTP/1.1\r\r\n\r\n", 400, "invalid HTTP version"),
        # Header lines.
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400, "whitespace before colon"),
        (b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400, "whitespace before colon"),
        (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400, "obsolete line folding"),
        (b"GET / HTTP/1.1\r\nHost: h\r\n\tfolded\r\n\r\n", 400, "obsolete line folding"),
        (b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400, "obsolete line folding"),
        (b"GET / HTTP/1.1\r\nHost\r\n\r\n", 400, "header line without a colon"),
        (b"GET / HTTP/1.1\r\n: h\r\n\r\n", 400, "empty header name"),
        (b"GET / HTTP/1.1\r\nHo(st: h\r\n\r\n", 400, "invalid header name"),
        (b"GET / HTTP/1.1\r\nH\xe9: h\r\n\r\n", 400, "invalid header name"),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400, "invalid character in value of header X"),
        (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400, "invalid character in value of header X"),
        (b"GET / HTTP/1.1\r\nX: a\x1bb\r\n\r\n", 400, "invalid character in value of header X"),
        (b"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", 400, "invalid character in value of header X"),
    ],
)
def test_parse_request_rejects(data: bytes, status: int, reason: str) -> None:
    exc = request_error(data)
    assert exc.status == status
    assert reason in exc.reason


@pytest.mark.parametrize(
    "first_line",
    [
        b"\r\n",
        b"GET / HTTP/1.0\r\n",
        b"\x00\x01\x02\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"PRI * HTTP/2.0\r\n",
        # The start of a TLS ClientHello: record header, handshake header, version, then a
        # "random" whose bytes 0..31 include 0x0a, which ends the "line".
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)),
    ],
)
def test_garbage_first_line_fails_as_soon_as_it_is_complete(first_line: bytes) -> None:
    # No header lines follow: the parser must not wait for them.
    exc = request_error(first_line)
    assert exc.status in (400, 505)


def test_binary_without_line_feed_fails_on_the_line_length_limit() -> None:
    limits = Limits(max_line_length=100)
    reader, parser = request_parser(limits)
    # 100 bytes and a CR could still be a valid line: wait.
    reader.feed_data(b"\x16\x03\x01" + b"\xff" * 98)
    assert step(parser) is NEED_DATA
    reader.feed_data(b"\xff")
    with pytest.raises(InvalidHTTP) as info:
        step(parser)
    assert info.value.status == 431
    assert "max_line_length (100 bytes)" in info.value.reason


# --- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["request line", "header line"])
def test_max_line_length(where: str) -> None:
    limits = Limits(max_line_length=40)

    def head(n: int) -> bytes:
        if where == "request line":
            return b"GET /" + b"a" * (n - 14) + b" HTTP/1.1\r\n\r\n"
        return b"GET / HTTP/1.1\r\nX: " + b"v" * (n - 3) + b"\r\n\r\n"

    request, _ = parse_request(head(40), limits)
    assert isinstance(request, Request)
    exc = request_error(head(41), limits)
    assert exc.status == 431
    assert exc.reason == f"{where} longer than max_line_length (40 bytes)"


def test_max_line_length_fails_before_the_line_ends() -> None:
    limits = Limits(max_line_length=40)
    reader, parser = request_parser(limits)
    reader.feed_data(b"GET / HTTP/1.1\r\nX: " + b"v" * 37 + b"\r")  # 40 bytes + CR: may be fine
    assert step(parser) is NEED_DATA
    reader.feed_data(b"v")  # the 42nd byte without LF: too long whatever follows
    with pytest.raises(InvalidHTTP) as info:
        step(parser)
    assert info.value.status == 431


def test_max_header_count() -> None:
    limits = Limits(max_header_count=3)
    three = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n"
    request, _ = parse_request(three + b"\r\n", limits)
    assert len(request.headers) == 3
    exc = request_error(three + b"D: 4\r\n\r\n", limits)
    assert exc.status == 431
    assert exc.reason == "more than max_header_count (3) headers"


def test_max_header_count_fails_as_soon_as_a_fourth_line_starts() -> None:
    limits = Limits(max_header_count=3)
    reader, parser = request_parser(limits)
    reader.feed_data(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD")
    # Only the empty line may follow. One byte without a LF could still be its CR: wait.
    assert step(parser) is NEED_DATA
    reader.feed_data(b":")
    with pytest.raises(InvalidHTTP) as info:
        step(parser)
    assert info.value.reason == "more than max_header_count (3) headers"


def test_max_head_size() -> None:
    head = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"
    limits = Limits(max_head_size=len(head))
    request, _ = parse_request(head, limits)
    assert isinstance(request, Request)
    # One more byte anywhere crosses the limit.
    exc = request_error(head.replace(b"B: 2", b"B: 22"), limits)
    assert exc.status == 431
    assert exc.reason == f"head larger than max_head_size ({len(head)} bytes)"
    exc = request_error(head.replace(b"GET /", b"GET //"), limits)
    assert exc.reason == f"head larger than max_head_size ({len(head)} bytes)"


def test_max_head_size_fails_before_the_line_ends() -> None:
    limits = Limits(max_head_size=40)
    reader, parser = request_parser(limits)
    reader.feed_data(b"GET / HTTP/1.1\r\n")  # 16 bytes, 24 left, 22 for the next line's content
    assert step(parser) is NEED_DATA
    reader.feed_data(b"X: " + b"v" * 20)  # 23 bytes: 22 and a CR would still fit
    assert step(parser) is NEED_DATA
    reader.feed_data(b"v")  # 24 bytes without LF: cannot fit
    with pytest.raises(InvalidHTTP) as info:
        step(parser)
    assert info.value.status == 431
    assert "max_head_size" in info.value.reason


def test_max_head_size_counts_many_short_lines() -> None:
    # No line is long, and there are few enough lines: only the cumulative size trips.
    limits = Limits(max_line_length=100, max_header_count=1000, max_head_size=200)
    data = b"GET / HTTP/1.1\r\n" + b"X: 0123456789\r\n" * 20 + b"\r\n"
    exc = request_error(data, limits)
    assert exc.reason == "head larger than max_head_size (200 bytes)"


# --- end of stream -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GET / HTT",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r",
    ],
)
def test_parse_request_eof_mid_head(data: bytes) -> None:
    reader, parser = request_parser(Limits())
    reader.feed_data(data)
    assert step(parser) is NEED_DATA
    reader.feed_eof()
    with pytest.raises(EOFError):
        step(parser)


# --- Request.serialize -------------------------------------------------------------------------


def test_serialize_request() -> None:
    request = Request(
        "GET",
        "/chat",
        Headers([("Host", "example.com:8000"), ("Upgrade", "websocket")]),
    )
    assert request.serialize() == (
        b"GET /chat HTTP/1.1\r\nHost: example.com:8000\r\nUpgrade: websocket\r\n\r\n"
    )


def test_serialize_parse_mdn_request_is_byte_exact() -> None:
    request, _ = parse_request(MDN_REQUEST)
    assert request.serialize() == MDN_REQUEST


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X", "a\r\nX-Injected: 1"),
        ("X", "a\nb"),
        ("X", "a\rb"),
        ("X", "a\x00b"),
        ("X", "a\x7f"),
        ("X", "\u0100"),
        ("X\r\nY", "1"),
        ("X: Y", "1"),
        ("X Y", "1"),
        ("", "1"),
        ("X\x00", "1"),
    ],
)
def test_serialize_rejects_header_injection(name: str, value: str) -> None:
    headers = Headers([("Host", "h"), (name, value)])
    with pytest.raises(ValueError):
        Request("GET", "/", headers).serialize()
    with pytest.raises(ValueError):
        Response(400, "Bad Request", headers).serialize()


@pytest.mark.parametrize(
    ("method", "target", "version"),
    [
        ("GET /x", "/", "HTTP/1.1"),
        ("", "/", "HTTP/1.1"),
        ("GET", "/a b", "HTTP/1.1"),
        ("GET", "/a\r\nX: 1", "HTTP/1.1"),
        ("GET", "", "HTTP/1.1"),
        ("GET", "/", "HTTP/1.1\r\nX: 1"),
        ("GET", "/", "HTTP/11"),
    ],
)
def test_serialize_rejects_bad_request_line(method: str, target: str, version: str) -> None:
    with pytest.raises(ValueError):
        Request(method, target, Headers(), version=version).serialize()


# --- Response.parse ----------------------------------------------------------------------------


def test_parse_mdn_response_leaves_frames_in_the_reader() -> None:
    response, reader = parse_response(MDN_RESPONSE + FRAME)
    assert response.status == 101
    assert response.reason == "Switching Protocols"
    assert response.headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert response.body == b""
    assert reader.buffer == FRAME


def test_101_never_has_a_body() -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 7\r\n\r\n"
    response, reader = parse_response(data + FRAME)
    assert response.body == b""
    assert reader.buffer == FRAME


def test_parse_response_byte_by_byte() -> None:
    reader, parser = response_parser(Limits())
    data = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!" + FRAME
    end = len(data) - len(FRAME)
    for i in range(end - 1):
        reader.feed_data(data[i : i + 1])
        assert step(parser) is NEED_DATA, i
    reader.feed_data(data[end - 1 :])
    response = step(parser)
    assert (response.status, response.body) == (404, b"nope!")
    assert reader.buffer == FRAME


@pytest.mark.parametrize(
    ("line", "status", "reason"),
    [
        (b"HTTP/1.1 200 OK", 200, "OK"),
        (b"HTTP/1.1 404 Not Found Here", 404, "Not Found Here"),
        (b"HTTP/1.1 204 ", 204, ""),
        (b"HTTP/1.1 204", 204, ""),
        (b"HTTP/1.1 599 \xe9t\xe9", 599, "\xe9t\xe9"),
        (b"HTTP/1.1 100 Continue", 100, "Continue"),
        (b"HTTP/1.1 426 Upgrade\tRequired", 426, "Upgrade\tRequired"),
    ],
)
def test_parse_status_line(line: bytes, status: int, reason: str) -> None:
    response, _ = parse_response(line + b"\r\nContent-Length: 0\r\n\r\n")
    assert (response.status, response.reason) == (status, reason)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"HTTP/1.0 200 OK\r\n\r\n", "unsupported HTTP version HTTP/1.0"),
        (b"HTTP/2.0 200 OK\r\n\r\n", "unsupported HTTP version HTTP/2.0"),
        (b"HTTP/2 200 OK\r\n\r\n", "invalid HTTP version"),
        (b"ICY 200 OK\r\n\r\n", "invalid HTTP version"),
        (b"\r\n", "invalid HTTP version"),
        (b"HTTP/1.1 99 Low\r\n\r\n", "invalid status code"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "invalid status code"),
        (b"HTTP/1.1 20x OK\r\n\r\n", "invalid status code"),
        (b"HTTP/1.1  200 OK\r\n\r\n", "invalid status code"),
        (b"HTTP/1.1 +20 OK\r\n\r\n", "invalid status code"),
        (b"HTTP/1.1 600 Nope\r\n\r\n", "status code 600 out of range"),
        (b"HTTP/1.1 099 Nope\r\n\r\n", "status code 99 out of range"),
        (b"HTTP/1.1 200 O\x00K\r\n\r\n", "invalid character in reason phrase"),
        (b"HTTP/1.1 200 OK\n\r\n", "status line ends with a bare LF"),
        (b"HTTP/1.1 200 OK\r\nA: 1\n\r\n", "header line ends with a bare LF"),
        (b"HTTP/1.1 200 OK\r\nA : 1\r\n\r\n", "whitespace before colon"),
        (b"HTTP/1.1 200 OK\r\nA: 1\r\n 2\r\n\r\n", "obsolete line folding"),
        (b"HTTP/1.1 200 OK\r\nA: \x001\r\n\r\n", "invalid character in value"),
    ],
)
def test_parse_response_rejects(data: bytes, reason: str) -> None:
    exc = response_error(data)
    assert exc.status == 400
    assert reason in exc.reason


def test_parse_response_limits() -> None:
    limits = Limits(max_line_length=30, max_header_count=2, max_head_size=60)
    assert response_error(b"HTTP/1.1 200 " + b"x" * 30 + b"\r\n", limits).status == 431
    exc = response_error(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits)
    assert exc.reason == "more than max_header_count (2) headers"
    exc = response_error(b"HTTP/1.1 200 OK\r\nA: " + b"1" * 25 + b"\r\nB: " + b"2" * 25, limits)
    assert exc.reason == "head larger than max_head_size (60 bytes)"


def test_parse_response_eof_mid_head() -> None:
    reader, parser = response_parser(Limits())
    reader.feed_data(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
    assert step(parser) is NEED_DATA
    reader.feed_eof()
    with pytest.raises(EOFError):
        step(parser)


# --- Response body -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [100, 101, 103, 204, 304])
def test_statuses_without_body(status: int) -> None:
    data = f"HTTP/1.1 {status} X\r\nContent-Length: 4\r\n\r\n".encode()
    response, reader = parse_response(data + b"body")
    assert response.body == b""
    assert reader.buffer == b"body"


@pytest.mark.parametrize(
    "content_length",
    [
        [b"Content-Length: 5"],
        [b"Content-Length: 5, 5"],
        [b"content-length: 5", b"CONTENT-LENGTH:5"],
        [b"Content-Length: 0005"],
    ],
)
def test_content_length(content_length: list[bytes]) -> None:
    head = b"HTTP/1.1 400 Bad Request\r\n" + b"".join(h + b"\r\n" for h in content_length)
    response, reader = parse_response(head + b"\r\nhello" + b"after")
    assert response.body == b"hello"
    assert reader.buffer == b"after"


def test_content_length_zero() -> None:
    response, reader = parse_response(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\nX")
    assert response.body == b""
    assert reader.buffer == b"X"


@pytest.mark.parametrize(
    ("content_length", "reason"),
    [
        ([b"Content-Length: 5, 6"], "conflicting Content-Length"),
        ([b"Content-Length: 5", b"Content-Length: 6"], "conflicting Content-Length"),
        ([b"Content-Length: abc"], "invalid Content-Length"),
        ([b"Content-Length: -1"], "invalid Content-Length"),
        ([b"Content-Length: +5"], "invalid Content-Length"),
        ([b"Content-Length: 0x10"], "invalid Content-Length"),
        ([b"Content-Length: "], "invalid Content-Length"),
        ([b"Content-Length: 5,"], "conflicting Content-Length"),
        ([b"Content-Length: \xd9\xa5"], "invalid Content-Length"),  # Arabic-Indic digit 5
        ([b"Content-Length: 65537"], "response body too large"),
        ([b"Content-Length: " + b"9" * 5000], "response body too large"),
    ],
)
def test_content_length_rejects(content_length: list[bytes], reason: str) -> None:
    head = b"HTTP/1.1 400 Bad Request\r\n" + b"".join(h + b"\r\n" for h in content_length)
    limits = Limits(max_line_length=8192, max_head_size=16384)
    exc = response_error(head + b"\r\n", limits)
    assert exc.status == 400
    assert reason in exc.reason


def test_content_length_over_limit_fails_without_reading_the_body() -> None:
    limits = Limits(max_body_size=10)
    response, _ = parse_response(b"HTTP/1.1 500 X\r\nContent-Length: 10\r\n\r\n0123456789", limits)
    assert response.body == b"0123456789"
    # No body bytes fed at all: the error comes from the head alone.
    exc = response_error(b"HTTP/1.1 500 X\r\nContent-Length: 11\r\n\r\n", limits)
    assert "over max_body_size (10 bytes)" in exc.reason


def test_content_length_eof_mid_body() -> None:
    reader, parser = response_parser(Limits())
    reader.feed_data(b"HTTP/1.1 500 X\r\nContent-Length: 10\r\n\r\n01234")
    assert step(parser) is NEED_DATA
    reader.feed_eof()
    with pytest.raises(EOFError):
        step(parser)


@pytest.mark.parametrize(
    ("transfer_encoding", "chunks"),
    [
        (b"chunked", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        (b"Chunked", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        (b"gzip, chunked", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        (b"chunked", b"B\r\nhello world\r\n000\r\n\r\n"),
        (b"chunked", b"b;name=value\r\nhello world\r\n0\r\n\r\n"),
        (b"chunked", b"0b ; name\r\nhello world\r\n0;last\r\n\r\n"),
        (b"chunked", b"5\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: 1\r\nOther: 2\r\n\r\n"),
    ],
)
def test_chunked(transfer_encoding: bytes, chunks: bytes) -> None:
    head = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: " + transfer_encoding + b"\r\n\r\n"
    response, reader = parse_response(head + chunks + b"after")
    assert response.body == b"hello world"
    assert reader.buffer == b"after"


def test_chunked_overrides_content_length() -> None:
    data = (
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    response, _ = parse_response(data)
    assert response.body == b"hello"


def test_chunked_byte_by_byte() -> None:
    data = b"HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n"
    reader, parser = response_parser(Limits())
    for i in range(len(data) - 1):
        reader.feed_data(data[i : i + 1])
        assert step(parser) is NEED_DATA, i
    reader.feed_data(data[-1:])
    assert step(parser).body == b"abcd"


@pytest.mark.parametrize(
    ("chunks", "status", "reason"),
    [
        (b"x\r\n", 400, "invalid chunk size line"),
        (b"\r\n", 400, "invalid chunk size line"),
        (b"-5\r\n", 400, "invalid chunk size line"),
        (b"5 5\r\n", 400, "invalid chunk size line"),
        (b"5;\x00\r\n", 400, "invalid chunk size line"),
        (b"5\n", 400, "chunk size line ends with a bare LF"),
        (b"5\r\nhelloXY", 400, "chunk data not followed by CRLF"),
        (b"41\r\n", 400, "response body too large"),
        (b"20\r\n" + b"x" * 32 + b"\r\n21\r\n", 400, "response body too large"),
        (b"f" * 40 + b"\r\n", 400, "response body too large"),
        (b"0\r\nT: 1\r\nT: 2\r\nT: 3\r\n", 431, "max_header_count"),
        (b"0\r\nT : 1\r\n", 400, "whitespace before colon"),
        (b"5" * 70 + b"\r\n", 431, "chunk size line longer than max_line_length"),
    ],
)
def test_chunked_rejects(chunks: bytes, status: int, reason: str) -> None:
    limits = Limits(max_line_length=64, max_header_count=2, max_body_size=64)
    head = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
    exc = response_error(head + chunks, limits)
    assert exc.status == status
    assert reason in exc.reason


def test_chunked_eof() -> None:
    reader, parser = response_parser(Limits())
    reader.feed_data(b"HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    assert step(parser) is NEED_DATA
    reader.feed_eof()
    with pytest.raises(EOFError):
        step(parser)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 500 Internal Server Error\r\n\r\n",
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    ],
)
def test_body_to_end_of_stream(head: bytes) -> None:
    reader, parser = response_parser(Limits(max_body_size=8))
    reader.feed_data(head + b"it broke")
    assert step(parser) is NEED_DATA
    reader.feed_data(b" badly")
    assert step(parser) is NEED_DATA
    reader.feed_eof()
    response = step(parser)
    assert response.body == b"it broke"  # truncated to max_body_size


# --- Response.serialize ------------------------------------------------------------------------


def test_serialize_response() -> None:
    response = Response(
        426,
        "Upgrade Required",
        Headers([("Sec-WebSocket-Version", "13"), ("Content-Length", "9")]),
        b"try again",
    )
    assert response.serialize() == (
        b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
        b"Content-Length: 9\r\n\r\ntry again"
    )


def test_serialize_response_does_not_add_content_length() -> None:
    data = Response(400, "Bad Request", Headers(), b"oops").serialize()
    assert data == b"HTTP/1.1 400 Bad Request\r\n\r\noops"


def test_serialize_response_empty_reason_keeps_the_space() -> None:
    assert Response(299, "", Headers()).serialize() == b"HTTP/1.1 299 \r\n\r\n"


def test_serialize_parse_mdn_response_is_byte_exact() -> None:
    response, _ = parse_response(MDN_RESPONSE)
    assert response.serialize() == MDN_RESPONSE


@pytest.mark.parametrize(
    ("status", "reason"), [(99, "X"), (600, "X"), (200, "OK\r\nX: 1"), (200, "\x00")]
)
def test_serialize_rejects_bad_status_line(status: int, reason: str) -> None:
    with pytest.raises(ValueError):
        Response(status, reason, Headers()).serialize()


def test_default_reasons() -> None:
    for status in (101, 200, 204, 301, 302, 303, 307, 308, 400, 403, 404, 405, 426, 431, 500):
        assert DEFAULT_REASONS[status]
    assert DEFAULT_REASONS[101] == "Switching Protocols"
    assert DEFAULT_REASONS[426] == "Upgrade Required"
    assert reason_phrase(505) == "HTTP Version Not Supported"
    assert reason_phrase(503) == "Service Unavailable"
    assert reason_phrase(299) == ""


# --- properties --------------------------------------------------------------------------------

SMALL_LIMITS = Limits(max_line_length=64, max_header_count=4, max_head_size=200, max_body_size=32)

VALID_HEADS = [
    MDN_REQUEST,
    MDN_RESPONSE + FRAME,
    b"GET ws://h/a?b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HTTP/1.1 400 Bad\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\n\r\nno such page",
]
INTERESTING_BYTES = b" \t\r\n:;,\x00\x7f\x80\xff0aZ/"


@st.composite
def mutated_heads(draw: st.DrawFn) -> bytes:
    """A valid head with a few bytes inserted, deleted or replaced."""
    data = bytearray(draw(st.sampled_from(VALID_HEADS)))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(data)))
        byte = draw(st.sampled_from(INTERESTING_BYTES) | st.integers(0, 255))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        if action == "insert":
            data.insert(i, byte)
        elif i < len(data):
            if action == "delete":
                del data[i]
            else:
                data[i] = byte
    return bytes(data)


def chunked(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def drive(parser: Generator[None, None, Any], reader: StreamReader, pieces: list[bytes]) -> Any:
    """Feed pieces until the parser finishes; then EOF. Return the result or raise."""
    result = step(parser)
    for piece in pieces:
        if result is not NEED_DATA:
            return result
        reader.feed_data(piece)
        result = step(parser)
    if result is NEED_DATA:
        reader.feed_eof()
        try:
            result = step(parser)
        except EOFError:
            raise
        except Exception as exc:  # pragma: no cover - reported as a failure below
            raise AssertionError(f"after EOF: {exc!r}") from exc
        assert result is not NEED_DATA, "parser still wants data after EOF"
    return result


any_input = st.binary(max_size=300) | mutated_heads()
cut_points = st.lists(st.integers(0, 300), max_size=8)


@settings(max_examples=400, deadline=None)
@given(any_input, cut_points)
def test_request_parse_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    reader, parser = request_parser(SMALL_LIMITS)
    try:
        request = drive(parser, reader, chunked(data, cuts))
    except (InvalidHTTP, EOFError):
        return
    assert isinstance(request, Request)
    # Whatever was accepted serializes to a head that parses back to the same request.
    again, _ = parse_request(request.serialize())
    assert again == request


@settings(max_examples=400, deadline=None)
@given(any_input, cut_points)
def test_response_parse_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    reader, parser = response_parser(SMALL_LIMITS)
    try:
        response = drive(parser, reader, chunked(data, cuts))
    except (InvalidHTTP, EOFError):
        return
    assert isinstance(response, Response)
    assert len(response.body) <= SMALL_LIMITS.max_body_size


TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=10)
field_chars = ["\t", *map(chr, range(0x20, 0x7F)), *map(chr, range(0x80, 0x100))]
# Field values as a parser returns them: no OWS at either end.
field_values = st.text(alphabet=st.sampled_from(field_chars), max_size=20).map(
    lambda s: s.strip(" \t")
)
header_names = tokens.filter(lambda n: n.lower() not in ("content-length", "transfer-encoding"))
header_lists = st.lists(st.tuples(header_names, field_values), max_size=8).map(Headers)
targets = st.text(alphabet=st.sampled_from([chr(c) for c in range(0x21, 0x7F)]), max_size=20).map(
    lambda s: "/" + s
) | st.sampled_from(["ws://example.com/chat?x=1", "*", "h:80"])


@settings(max_examples=200, deadline=None)
@given(tokens, targets, header_lists, st.binary(max_size=10))
def test_request_round_trip(method: str, target: str, headers: Headers, tail: bytes) -> None:
    request = Request(method, target, headers)
    parsed, reader = parse_request(request.serialize() + tail)
    assert parsed == request
    assert parsed.headers.items() == headers.items()
    assert reader.buffer == tail


@settings(max_examples=200, deadline=None)
@given(
    st.integers(100, 599),
    st.text(alphabet=st.sampled_from(field_chars), max_size=20),
    header_lists,
    st.binary(max_size=20),
)
def test_response_round_trip(status: int, reason: str, headers: Headers, body: bytes) -> None:
    if status < 200 or status in (204, 304):
        body = b""
    else:
        headers["Content-Length"] = str(len(body))
    response = Response(status, reason, headers, body)
    parsed, reader = parse_response(response.serialize() + FRAME)
    assert parsed == response
    assert parsed.headers.items() == headers.items()
    assert reader.buffer == FRAME


# --- Request.parse_whole: the one-pass path agrees with the line-by-line parser ----------------


def _both_ways(data: bytes, limits: Limits) -> tuple[Request | None, object, bytes, bytes]:
    """parse_whole's answer and what is left after it; the incremental parser's answer (a
    Request, NEED_DATA or the InvalidHTTP/EOFError raised) and what is left after it."""
    buffer = bytearray(data)
    whole = Request.parse_whole(buffer, limits)
    try:
        slow, reader = parse_request(data, limits)
        rest = bytes(reader.buffer)
    except (InvalidHTTP, EOFError) as exc:
        slow, rest = exc, b""
    return whole, slow, bytes(buffer), rest


def _assert_agree(data: bytes, limits: Limits) -> None:
    whole, slow, left, rest = _both_ways(data, limits)
    if whole is None:
        assert left == data  # nothing consumed: the incremental parser starts from scratch
        return
    assert isinstance(slow, Request), (data, slow)
    assert (whole.method, whole.target, whole.path, whole.version) == (
        slow.method,
        slow.target,
        slow.path,
        slow.version,
    )
    assert whole.headers.items() == slow.headers.items()
    assert left == rest


_VALID_HEADS = [
    MDN_REQUEST,
    MDN_REQUEST + FRAME,
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET ws://h:1/a?b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nX:\r\nY: \t a b \t\r\nX: 2\r\n\r\nrest",
    b"GET / HTTP/1.1\r\nX: caf\xe9\r\n\r\n",
]


@pytest.mark.parametrize("data", _VALID_HEADS)
def test_parse_whole_takes_a_whole_valid_head_as_the_line_parser_does(data: bytes) -> None:
    buffer = bytearray(data)
    assert Request.parse_whole(buffer, Limits()) is not None
    _assert_agree(data, Limits())


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: h\r\n",  # incomplete
        b"GET / HTTP/1.1\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\n\r\n",
        b"\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost\r\n\r\n",
        b"GET / HTTP/1.1\r\n: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00\r\n\r\n",
    ],
)
def test_parse_whole_leaves_anything_else_to_the_line_parser(data: bytes) -> None:
    buffer = bytearray(data)
    assert Request.parse_whole(buffer, Limits()) is None
    assert buffer == data


@pytest.mark.parametrize("over", [False, True])
@pytest.mark.parametrize("limit", ["max_line_length", "max_head_size", "max_header_count"])
def test_parse_whole_limits_are_the_line_parsers(limit: str, over: bool) -> None:
    data = b"GET /abc HTTP/1.1\r\nA: 1\r\nBb: 22\r\nCcc: 333\r\n\r\n"
    exact = {"max_line_length": 17, "max_head_size": len(data), "max_header_count": 3}[limit]
    limits = Limits(**{limit: exact - 1 if over else exact})
    whole, slow, _, _ = _both_ways(data, limits)
    assert (whole is None) == over
    assert isinstance(slow, InvalidHTTP if over else Request)
    _assert_agree(data, limits)


def test_parse_whole_checks_each_line_of_a_long_head() -> None:
    # Longer than max_line_length in all, each line within it: taken; one line over: not.
    limits = Limits(max_line_length=20)
    lines = b"".join(b"H%d: %s\r\n" % (i, b"v" * 10) for i in range(5))
    _assert_agree(b"GET / HTTP/1.1\r\n" + lines + b"\r\n", limits)
    assert Request.parse_whole(bytearray(b"GET / HTTP/1.1\r\n" + lines + b"\r\n"), limits)
    long = b"GET / HTTP/1.1\r\n" + lines + b"Long: " + b"v" * 20 + b"\r\n\r\n"
    assert Request.parse_whole(bytearray(long), limits) is None
    _assert_agree(long, limits)


_PIECES = [
    b"GET",
    b" ",
    b"/",
    b"/a?b",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"\r\n",
    b"\n",
    b"\r",
    b":",
    b"Host",
    b"X-A",
    b" \t",
    b"v",
    b"\xe9",
    b"\x00",
    b"\x7f",
    b"(",
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), max_size=30),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=0, max_value=4),
    st.integers(min_value=0, max_value=120),
)
def test_parse_whole_agrees_with_the_line_parser_on_anything(
    pieces: list[bytes], line: int, count: int, size: int
) -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(pieces) + b"\r\n\r\n"
    tight = Limits(max_line_length=line, max_header_count=count, max_head_size=size)
    for limits in (Limits(), tight):
        _assert_agree(data, limits)
        _assert_agree(b"".join(pieces), limits)


def test_headers_kept_as_text_are_built_on_first_use_and_compacted_again() -> None:
    buffer = bytearray(b"GET / HTTP/1.1\r\nHost: h\r\nX:  a \r\nx: b\r\n\r\n")
    request = Request.parse_whole(buffer, Limits())
    assert request is not None
    headers = request.headers
    assert headers._items is None and headers._index is None  # nothing built yet
    assert headers.get_all("X") == ["a", "b"]
    assert headers.items() == [("Host", "h"), ("X", "a"), ("x", "b")]
    headers._compact()
    assert headers._items is None
    assert len(headers) == 3 and "host" in headers and list(headers) == ["Host", "X"]
    assert headers == Headers([("host", "h"), ("X", "a"), ("X", "b")])
    assert repr(headers) == "Headers([('Host', 'h'), ('X', 'a'), ('x', 'b')])"
    # A change makes the lines the truth: compacting again keeps them as they are now.
    headers["Y"] = "c"
    headers._compact()
    assert headers.items()[-1] == ("Y", "c") and headers["y"] == "c"
    del headers["x"]
    headers._compact()
    assert headers.items() == [("Host", "h"), ("Y", "c")]
    empty = Headers._from_text("")
    assert empty.items() == [] and len(empty) == 0
    assert empty.copy() == Headers()


@pytest.mark.parametrize(
    "items",
    [[("X", " a")], [("X", "a\t")], [("X", "a\r\nY: b")], [("X:Y", "a")], [("X\n", "a")]],
)
def test_headers_that_would_not_read_back_the_same_stay_as_they_are(
    items: list[tuple[str, str]],
) -> None:
    headers = Headers(items)
    headers._compact()
    assert headers._items is not None
    assert headers.items() == items


def test_compacted_built_headers_read_back_the_same() -> None:
    items = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Server", "a b")]
    headers = Headers(items)
    headers._compact()
    assert headers._items is None
    assert headers.items() == items
    empty = Headers()
    empty._compact()
    assert empty.items() == [] and empty._text == ""
