"""Parse and build the list headers of the opening handshake (RFC 9110 section 5.6).

``Connection``, ``Upgrade``, ``Sec-WebSocket-Protocol``, ``Sec-WebSocket-Version`` and
``Sec-WebSocket-Extensions`` are all comma-separated lists. RFC 9110 section 5.3 says that
several header lines with the same name form one list, in order, so every parser here takes
*all* the values of a header (``headers.get_all(name)``) and returns one list.

There is one scanner. It walks each header line with a position and, at each position, either
checks a single character (``,``, ``;``, ``=``, ``/``) or applies a compiled regular expression
with ``pattern.match(line, pos)`` for a token, optional whitespace or a quoted-string. An error
reports the header line and the position where the scanner stopped, so a log line such as
``invalid Sec-WebSocket-Extensions header: foo; =1 (expected parameter name at 5)`` points at the
offending character.

The grammars, in RFC 9110 ABNF:

- list (section 5.6.1): ``#element => [ element ] *( OWS "," OWS [ element ] )``. A recipient
  "MUST accept empty list elements", so ``"a, , b"``, ``",a"`` and ``"a,"`` are three, one and
  one element(s) respectively.
- token (section 5.6.2): ``1*tchar``.
- quoted-string (section 5.6.4): ``DQUOTE *( qdtext / quoted-pair ) DQUOTE``.
- Upgrade (section 7.8): ``protocol = protocol-name ["/" protocol-version]``, both tokens.
- Sec-WebSocket-Extensions (RFC 6455 section 9.1):
  ``extension = token *( OWS ";" OWS param )``, ``param = token [ OWS "=" OWS value ]``, with
  ``value = token / quoted-string``.

Parsers return the list elements exactly as written: comparing case-insensitively where the RFC
says so (``Upgrade: WebSocket``) is the caller's job, because it is not the same for every
header (subprotocol names are case-sensitive).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..exceptions import InvalidHeaderFormat
from ..typing import ExtensionParameter

__all__ = [
    "build_extension_list",
    "build_token_list",
    "is_token",
    "parse_extension_list",
    "parse_token_list",
    "parse_upgrade",
    "quote_string",
    "unquote_string",
]

T = TypeVar("T")

# RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_"
#                         / "`" / "|" / "~" / DIGIT / ALPHA
_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)

# RFC 9110 5.6.3: OWS = *( SP / HTAB )
_OWS_RE = re.compile(r"[ \t]*")

# RFC 9110 5.6.4: qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
#                 quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
# Header values are decoded as latin-1, so obs-text (%x80-FF) is U+0080 to U+00FF here.
_QUOTED_STRING_RE = re.compile(
    r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
)
_QUOTED_PAIR_RE = re.compile(r"\\([\t \x21-\x7e\x80-\xff])")

# What quote_string can carry: everything a quoted-string can hold once escaped.
_QUOTABLE_RE = re.compile(r"[\t \x21-\x7e\x80-\xff]*")
_NEEDS_ESCAPE_RE = re.compile(r'(["\\])')


def is_token(s: str) -> bool:
    """Tell whether ``s`` is a token (RFC 9110 section 5.6.2): one or more tchar."""
    return _TOKEN_RE.fullmatch(s) is not None


def quote_string(s: str) -> str:
    """Build a quoted-string (RFC 9110 section 5.6.4) that carries ``s``.

    Raises:
        ValueError: ``s`` holds a control character other than HTAB, or a character above
            U+00FF; neither can be written in a header.
    """
    if _QUOTABLE_RE.fullmatch(s) is None:
        raise ValueError(f"cannot quote {s!r}: control or non-latin-1 character")
    return '"' + _NEEDS_ESCAPE_RE.sub(r"\\\1", s) + '"'


def unquote_string(s: str) -> str:
    """Return the text a quoted-string carries: drop the quotes, resolve the backslash escapes.

    Raises:
        ValueError: ``s`` is not exactly one quoted-string.
    """
    if _QUOTED_STRING_RE.fullmatch(s) is None:
        raise ValueError(f"not a quoted-string: {s!r}")
    return _QUOTED_PAIR_RE.sub(r"\1", s[1:-1])


# --- the scanner -------------------------------------------------------------------------------


def _skip_ows(line: str, pos: int) -> int:
    match = _OWS_RE.match(line, pos)
    assert match is not None  # *( SP / HTAB ) matches the empty string
    return match.end()


def _token(line: str, pos: int, name: str, expected: str = "expected token") -> tuple[str, int]:
    match = _TOKEN_RE.match(line, pos)
    if match is None:
        raise InvalidHeaderFormat(name, line, expected, pos)
    return match.group(), match.end()


def _parse_list(
    parse_element: Callable[[str, int, str], tuple[T, int]],
    values: Sequence[str],
    name: str,
) -> list[T]:
    """Walk every header line of a list header and collect its elements.

    ``parse_element(line, pos, name)`` parses one element starting at ``pos`` (never at OWS, a
    comma or the end of the line) and returns it with the position just after it.
    """
    elements: list[T] = []
    for line in values:
        end = len(line)
        pos = 0
        while True:
            # Any number of empty elements, with OWS around them, may come before an element.
            pos = _skip_ows(line, pos)
            while pos < end and line[pos] == ",":
                pos = _skip_ows(line, pos + 1)
            if pos == end:
                break
            element, pos = parse_element(line, pos, name)
            elements.append(element)
            pos = _skip_ows(line, pos)
            if pos == end:
                break
            if line[pos] != ",":
                raise InvalidHeaderFormat(name, line, "expected comma", pos)
    return elements


def _parse_token(line: str, pos: int, name: str) -> tuple[str, int]:
    return _token(line, pos, name)


def _parse_protocol(line: str, pos: int, name: str) -> tuple[str, int]:
    # RFC 9110 7.8: protocol = protocol-name ["/" protocol-version]
    start = pos
    _, pos = _token(line, pos, name)
    if pos < len(line) and line[pos] == "/":
        _, pos = _token(line, pos + 1, name, "expected protocol version")
    return line[start:pos], pos


def _parse_extension(
    line: str, pos: int, name: str
) -> tuple[tuple[str, list[ExtensionParameter]], int]:
    # RFC 6455 9.1: extension = extension-token *( ";" extension-param ), with OWS around ";"
    # and "=" as RFC 7692 section 5 examples and real clients write them.
    extension, pos = _token(line, pos, name, "expected extension name")
    params: list[ExtensionParameter] = []
    end = len(line)
    while True:
        after = _skip_ows(line, pos)
        if after == end or line[after] != ";":
            return (extension, params), pos
        pos = _skip_ows(line, after + 1)
        param, pos = _token(line, pos, name, "expected parameter name")
        after = _skip_ows(line, pos)
        value: str | None = None
        if after < end and line[after] == "=":
            pos = _skip_ows(line, after + 1)
            if pos < end and line[pos] == '"':
                match = _QUOTED_STRING_RE.match(line, pos)
                if match is None:
                    raise InvalidHeaderFormat(name, line, "expected quoted-string", pos)
                # RFC 6455 9.1: "When using the quoted-string syntax variant, the value after
                # quoted-string unescaping MUST conform to the 'token' ABNF." We do not enforce
                # that here: a value that breaks it is an offer the extension factory declines,
                # not a malformed header that fails the whole handshake.
                value = _QUOTED_PAIR_RE.sub(r"\1", match.group()[1:-1])
                pos = match.end()
            else:
                value, pos = _token(line, pos, name, "expected token or quoted-string")
        params.append((param, value))


# --- public parsers ----------------------------------------------------------------------------


def parse_token_list(values: Sequence[str], name: str) -> list[str]:
    """Parse a header whose value is a list of tokens, such as ``Connection``.

    ``values`` are all the header lines with that name, in order; they form one list. Empty
    elements are skipped. An empty result is returned as is: whether a header may be empty
    is for the caller to decide.

    Raises:
        InvalidHeaderFormat: a line does not follow ``#token``. The error carries the line and the
            position where parsing stopped.
    """
    return _parse_list(_parse_token, values, name)


def parse_upgrade(values: Sequence[str], name: str = "Upgrade") -> list[str]:
    """Parse ``Upgrade`` (RFC 9110 section 7.8): a list of ``token ["/" token]``.

    Elements are returned as written, for example ``["foo/1", "websocket"]``.

    Raises:
        InvalidHeaderFormat: a line does not follow ``#protocol``.
    """
    return _parse_list(_parse_protocol, values, name)


def parse_extension_list(
    values: Sequence[str], name: str = "Sec-WebSocket-Extensions"
) -> list[tuple[str, list[ExtensionParameter]]]:
    """Parse ``Sec-WebSocket-Extensions`` (RFC 6455 section 9.1).

    Returns one ``(extension name, [(parameter name, value or None), ...])`` pair per list
    element, in order. Quoted values come back unquoted. Duplicate or unknown parameters are not
    checked here: that is negotiation, done by the extension factories.

    Raises:
        InvalidHeaderFormat: a line does not follow the grammar.
    """
    return _parse_list(_parse_extension, values, name)


# --- builders ----------------------------------------------------------------------------------


def build_token_list(tokens: Sequence[str]) -> str:
    """Join tokens into one header value: ``["a", "b"]`` gives ``"a, b"``.

    Raises:
        ValueError: an element is not a token, so the list could not be parsed back.
    """
    for token in tokens:
        if not is_token(token):
            raise ValueError(f"not a token: {token!r}")
    return ", ".join(tokens)


def build_extension_list(extensions: Sequence[tuple[str, Sequence[ExtensionParameter]]]) -> str:
    """Build a ``Sec-WebSocket-Extensions`` value, the inverse of :func:`parse_extension_list`.

    For example ``permessage-deflate; client_max_window_bits=10; server_no_context_takeover``.
    Values that are not tokens are written as quoted-strings.

    Raises:
        ValueError: a name is not a token, or a value holds a character no header can carry.
    """
    elements: list[str] = []
    for extension, params in extensions:
        if not is_token(extension):
            raise ValueError(f"extension name is not a token: {extension!r}")
        parts = [extension]
        for param, value in params:
            if not is_token(param):
                raise ValueError(f"parameter name is not a token: {param!r}")
            if value is None:
                parts.append(param)
            elif is_token(value):
                parts.append(f"{param}={value}")
            else:
                parts.append(f"{param}={quote_string(value)}")
        elements.append("; ".join(parts))
    return ", ".join(elements)
