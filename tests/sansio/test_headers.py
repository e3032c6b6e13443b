"""Tests for tether.sansio.headers: the list-header tokenizer and builders.

The fixtures marked MDN are the examples of the MDN pages on Sec-WebSocket-Extensions and
Sec-WebSocket-Protocol, copied verbatim; each page says the one-line and the several-line forms
are equivalent, and so must we.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.exceptions import InvalidHeaderFormat
from tether.limits import Limits
from tether.sansio.headers import (
    build_extension_list,
    build_token_list,
    is_token,
    parse_extension_list,
    parse_token_list,
    parse_upgrade,
    quote_string,
    unquote_string,
)
from tether.sansio.http11 import Request
from tether.sansio.streams import StreamReader

# --- MDN fixtures, verbatim (lines end with LF on the page; HTTP needs CRLF) -------------------

MDN_EXTENSIONS_ONE_LINE = """\
GET /chat HTTP/1.1
Host: example.com:8000
Upgrade: websocket
Connection: Upgrade
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
Sec-WebSocket-Version: 13
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, bbf-usp-protocol
"""

MDN_EXTENSIONS_TWO_LINES = """\
GET /chat HTTP/1.1
Host: example.com:8000
Upgrade: websocket
Connection: Upgrade
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
Sec-WebSocket-Version: 13
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits
Sec-WebSocket-Extensions: bbf-usp-protocol
"""

MDN_PROTOCOL_ONE_LINE = """\
GET /chat HTTP/1.1
Host: example.com:8000
Upgrade: websocket
Connection: Upgrade
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
Sec-WebSocket-Version: 13
Sec-WebSocket-Protocol: soap, wamp
"""

MDN_PROTOCOL_TWO_LINES = """\
Sec-WebSocket-Protocol: soap
Sec-WebSocket-Protocol: wamp
"""


def parse_head(text: str) -> Request:
    """Parse an MDN example through the real HTTP parser, as the server does."""
    if not text.startswith("GET "):
        text = "GET /chat HTTP/1.1\n" + text
    data = (text.replace("\n", "\r\n") + "\r\n").encode()
    reader = StreamReader()
    reader.feed_data(data)
    parser = Request.parse(reader.read_line, Limits())
    with pytest.raises(StopIteration) as info:
        next(parser)
    request = info.value.value
    assert isinstance(request, Request)
    return request


def test_mdn_extensions_one_line_and_two_lines_are_equal() -> None:
    one = parse_head(MDN_EXTENSIONS_ONE_LINE).headers.get_all("Sec-WebSocket-Extensions")
    two = parse_head(MDN_EXTENSIONS_TWO_LINES).headers.get_all("Sec-WebSocket-Extensions")
    assert len(one) == 1
    assert len(two) == 2
    expected = [
        ("permessage-deflate", [("client_max_window_bits", None)]),
        ("bbf-usp-protocol", []),
    ]
    assert parse_extension_list(one) == expected
    assert parse_extension_list(two) == expected


def test_mdn_extensions_response() -> None:
    assert parse_extension_list(["permessage-deflate"]) == [("permessage-deflate", [])]


def test_mdn_protocol_one_line_and_two_lines_are_equal() -> None:
    one = parse_head(MDN_PROTOCOL_ONE_LINE).headers.get_all("Sec-WebSocket-Protocol")
    two = parse_head(MDN_PROTOCOL_TWO_LINES).headers.get_all("Sec-WebSocket-Protocol")
    assert one == ["soap, wamp"]
    assert two == ["soap", "wamp"]
    assert parse_token_list(one, "Sec-WebSocket-Protocol") == ["soap", "wamp"]
    assert parse_token_list(two, "Sec-WebSocket-Protocol") == ["soap", "wamp"]


def test_mdn_upgrade_connection_version() -> None:
    headers = parse_head(MDN_EXTENSIONS_ONE_LINE).headers
    assert parse_upgrade(headers.get_all("Upgrade")) == ["websocket"]
    assert parse_token_list(headers.get_all("Connection"), "Connection") == ["Upgrade"]
    versions = headers.get_all("Sec-WebSocket-Version")
    assert parse_token_list(versions, "Sec-WebSocket-Version") == ["13"]


# --- token lists -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["keep-alive, Upgrade"], ["keep-alive", "Upgrade"]),
        (["Keep-Alive,UPGRADE"], ["Keep-Alive", "UPGRADE"]),
        (["a\t,\tb"], ["a", "b"]),
        (["\t a \t"], ["a"]),
        (["a, , b"], ["a", "b"]),
        ([",a"], ["a"]),
        (["a,"], ["a"]),
        ([", ,\t,"], []),
        ([""], []),
        ([], []),
        (["a", "", "b, c"], ["a", "b", "c"]),
        (["13, 8, 7"], ["13", "8", "7"]),
        (["!#$%&'*+-.^_`|~09azAZ"], ["!#$%&'*+-.^_`|~09azAZ"]),
    ],
)
def test_parse_token_list(values: list[str], expected: list[str]) -> None:
    assert parse_token_list(values, "Connection") == expected


@pytest.mark.parametrize(
    ("value", "error", "pos"),
    [
        ("a b", "expected comma", 2),
        ("a, @", "expected token", 3),
        ("a;b", "expected comma", 1),
        ('"a"', "expected token", 0),
        ("a/1", "expected comma", 1),
        ("a, b c", "expected comma", 5),
        ("a,\x00", "expected token", 2),
        ("a\u0100", "expected comma", 1),
        ("é", "expected token", 0),
    ],
)
def test_parse_token_list_errors(value: str, error: str, pos: int) -> None:
    with pytest.raises(InvalidHeaderFormat) as info:
        parse_token_list([value], "Sec-WebSocket-Protocol")
    exc = info.value
    assert (exc.name, exc.value, exc.error, exc.pos) == (
        "Sec-WebSocket-Protocol",
        value,
        error,
        pos,
    )
    assert str(exc) == f"invalid Sec-WebSocket-Protocol header: {value} ({error} at {pos})"


def test_parse_token_list_error_names_the_offending_line() -> None:
    with pytest.raises(InvalidHeaderFormat) as info:
        parse_token_list(["soap", "wamp, x y"], "Sec-WebSocket-Protocol")
    assert info.value.value == "wamp, x y"
    assert info.value.pos == 8


# --- Upgrade -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["websocket"], ["websocket"]),
        (["WebSocket"], ["WebSocket"]),
        (["foo/1, websocket"], ["foo/1", "websocket"]),
        (
            ["HTTP/2.0, SHTTP/1.3, IRC/6.9, RTA/x11"],
            ["HTTP/2.0", "SHTTP/1.3", "IRC/6.9", "RTA/x11"],
        ),
        (["foo/1", "websocket"], ["foo/1", "websocket"]),
        ([" , websocket ,"], ["websocket"]),
    ],
)
def test_parse_upgrade(values: list[str], expected: list[str]) -> None:
    assert parse_upgrade(values) == expected


@pytest.mark.parametrize(
    ("value", "error", "pos"),
    [
        ("foo/", "expected protocol version", 4),
        ("/1", "expected token", 0),
        ("foo/1/2", "expected comma", 5),
        ("foo /1", "expected comma", 4),
        ("foo/ 1", "expected protocol version", 4),
    ],
)
def test_parse_upgrade_errors(value: str, error: str, pos: int) -> None:
    with pytest.raises(InvalidHeaderFormat) as info:
        parse_upgrade([value])
    assert (info.value.name, info.value.error, info.value.pos) == ("Upgrade", error, pos)


# --- Sec-WebSocket-Extensions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # RFC 7692 section 5 and 7 examples.
        (
            ["permessage-deflate; client_max_window_bits; server_max_window_bits=10"],
            [
                (
                    "permessage-deflate",
                    [("client_max_window_bits", None), ("server_max_window_bits", "10")],
                )
            ],
        ),
        (
            ["permessage-deflate; server_max_window_bits=10, permessage-deflate"],
            [
                ("permessage-deflate", [("server_max_window_bits", "10")]),
                ("permessage-deflate", []),
            ],
        ),
        # Mixed case is returned as written.
        (
            ["PerMessage-Deflate; Client_Max_Window_Bits=15"],
            [("PerMessage-Deflate", [("Client_Max_Window_Bits", "15")])],
        ),
        # Tabs and spaces as OWS everywhere OWS is allowed, no OWS at all too.
        (["a\t;\tb\t=\t1 ;c"], [("a", [("b", "1"), ("c", None)])]),
        (["a;b=1;c"], [("a", [("b", "1"), ("c", None)])]),
        # Quoted values are unquoted; escapes resolved.
        (['x; p="10"'], [("x", [("p", "10")])]),
        (['x; p="a\\"b"'], [("x", [("p", 'a"b')])]),
        (['x; p="a\\\\b"'], [("x", [("p", "a\\b")])]),
        (['x; p="\\a\\b"'], [("x", [("p", "ab")])]),
        (['x; p=""'], [("x", [("p", "")])]),
        (['x; p="a, b; c=d"'], [("x", [("p", "a, b; c=d")])]),
        # RFC 6455 9.1 wants a token after unquoting; we return the value and let factories decide.
        (['x; p="not a token"'], [("x", [("p", "not a token")])]),
        (['x; p="caf\xe9"'], [("x", [("p", "caf\xe9")])]),
        # Empty elements are ignored, across lines too.
        ([", a, , b ,", "", " ,c"], [("a", []), ("b", []), ("c", [])]),
        ([], []),
        # Duplicates are kept: rejecting them is negotiation, not syntax.
        (["x; p; p=1"], [("x", [("p", None), ("p", "1")])]),
    ],
)
def test_parse_extension_list(values: list[str], expected: list[object]) -> None:
    assert parse_extension_list(values) == expected


@pytest.mark.parametrize(
    ("value", "error", "pos"),
    [
        ("a;", "expected parameter name", 2),
        ("a; =1", "expected parameter name", 3),
        ("a; b=", "expected token or quoted-string", 5),
        ("a; b= ,c", "expected token or quoted-string", 6),
        ('a; b="x', "expected quoted-string", 5),
        ('a; b="x\\"', "expected quoted-string", 5),
        ('a; b="\x00"', "expected quoted-string", 5),
        ("a; b=x y", "expected comma", 7),
        ("a b=1", "expected comma", 2),
        ("; a", "expected extension name", 0),
        ("a, ;b", "expected extension name", 3),
        ('a; b="x"y', "expected comma", 8),
        ("a; b=1=2", "expected comma", 6),
        ("a; b==1", "expected token or quoted-string", 5),
        ("a; b/c", "expected comma", 4),
    ],
)
def test_parse_extension_list_errors(value: str, error: str, pos: int) -> None:
    with pytest.raises(InvalidHeaderFormat) as info:
        parse_extension_list(["ok", value])
    exc = info.value
    assert (exc.name, exc.value, exc.error, exc.pos) == (
        "Sec-WebSocket-Extensions",
        value,
        error,
        pos,
    )


def test_parse_extension_list_uses_the_given_name() -> None:
    with pytest.raises(InvalidHeaderFormat) as info:
        parse_extension_list(["a;"], "X-Ext")
    assert info.value.name == "X-Ext"


# --- builders and helpers ----------------------------------------------------------------------


def test_build_token_list() -> None:
    assert build_token_list(["soap", "wamp"]) == "soap, wamp"
    assert build_token_list(["13"]) == "13"
    assert build_token_list([]) == ""


@pytest.mark.parametrize("bad", ["a b", "", "a,b", "a\r\nX: y", "é"])
def test_build_token_list_rejects_non_tokens(bad: str) -> None:
    with pytest.raises(ValueError):
        build_token_list(["ok", bad])


def test_build_extension_list() -> None:
    extensions = [
        (
            "permessage-deflate",
            [("client_max_window_bits", "10"), ("server_no_context_takeover", None)],
        ),
    ]
    expected = "permessage-deflate; client_max_window_bits=10; server_no_context_takeover"
    assert build_extension_list(extensions) == expected
    assert build_extension_list([("a", []), ("b", [("p", None)])]) == "a, b; p"
    assert build_extension_list([]) == ""


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("a b", '"a b"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("a,b;c=d", '"a,b;c=d"'),
        ("tab\there", '"tab\there"'),
    ],
)
def test_build_extension_list_quotes_non_tokens(value: str, written: str) -> None:
    header = build_extension_list([("x", [("p", value)])])
    assert header == f"x; p={written}"
    assert parse_extension_list([header]) == [("x", [("p", value)])]


@pytest.mark.parametrize(
    "extensions",
    [
        [("a b", [])],
        [("", [])],
        [("x", [("p q", None)])],
        [("x", [("p", "line\r\nX-Injected: 1")])],
        [("x", [("p", "\x00")])],
        [("x", [("p", "\u0100")])],
    ],
)
def test_build_extension_list_rejects_what_cannot_be_written(
    extensions: list[tuple[str, list[tuple[str, str | None]]]],
) -> None:
    with pytest.raises(ValueError):
        build_extension_list(extensions)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("websocket", True),
        ("permessage-deflate", True),
        ("13", True),
        ("!#$%&'*+-.^_`|~", True),
        ("", False),
        ("a b", False),
        ("a/1", False),
        ('"a"', False),
        ("a\t", False),
        ("é", False),
        ("a,b", False),
        ("a=b", False),
    ],
)
def test_is_token(text: str, expected: bool) -> None:
    assert is_token(text) is expected


def test_quote_and_unquote_string() -> None:
    assert quote_string('a"b\\c') == '"a\\"b\\\\c"'
    assert unquote_string('"a\\"b\\\\c"') == 'a"b\\c'
    assert unquote_string('"\\x"') == "x"
    assert unquote_string('""') == ""
    with pytest.raises(ValueError):
        quote_string("a\nb")
    for bad in ["a", '"a', 'a"', '"a"b"', '"\\"', '"\x01"']:
        with pytest.raises(ValueError):
            unquote_string(bad)


# --- properties --------------------------------------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
# Everything a quoted-string can carry: HTAB, SP, VCHAR and obs-text.
quotable = st.text(
    alphabet=st.sampled_from(["\t", *map(chr, range(0x20, 0x7F)), *map(chr, range(0x80, 0x100))]),
    max_size=12,
)
extension_lists = st.lists(
    st.tuples(tokens, st.lists(st.tuples(tokens, st.none() | tokens | quotable), max_size=4)),
    max_size=5,
)
# Text biased toward the characters the grammar cares about.
header_text = st.text(
    alphabet=st.sampled_from([*' \t,;="\\/', "a", "B", "1", "-", "\x00", "\r", "é", "\u0100"]),
    max_size=40,
) | st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(extension_lists)
def test_extension_list_round_trip(
    extensions: list[tuple[str, list[tuple[str, str | None]]]],
) -> None:
    header = build_extension_list(extensions)
    assert parse_extension_list([header]) == extensions
    # Splitting the list over several header lines changes nothing (RFC 9110 section 5.3).
    lines = [build_extension_list([extension]) for extension in extensions]
    assert parse_extension_list(lines) == extensions


@settings(max_examples=200, deadline=None)
@given(st.lists(tokens, max_size=6))
def test_token_list_round_trip(items: list[str]) -> None:
    assert parse_token_list([build_token_list(items)], "Connection") == items


@settings(max_examples=300, deadline=None)
@given(st.lists(header_text, max_size=3))
def test_parsers_raise_only_invalid_header_format(values: list[str]) -> None:
    for parse in (
        lambda v: parse_token_list(v, "Connection"),
        parse_upgrade,
        parse_extension_list,
    ):
        try:
            result = parse(values)
        except InvalidHeaderFormat as exc:
            assert exc.value in values
            assert 0 <= exc.pos <= len(exc.value)
        else:
            assert isinstance(result, list)
