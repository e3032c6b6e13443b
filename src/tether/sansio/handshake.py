"""The pieces of the opening handshake both roles share (RFC 6455 section 4, RFC 7692 section 5).

Everything here is a pure function of header values: key and accept, version, the
``Upgrade``/``Connection`` token lists, subprotocol selection and extension negotiation.
:mod:`tether.sansio.server` and :mod:`tether.sansio.client` put them in order.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from collections.abc import Sequence

from ..exceptions import (
    InvalidExtension,
    InvalidHeader,
    InvalidKey,
    InvalidUpgrade,
    InvalidVersion,
    NegotiationError,
)
from ..extensions.base import ClientExtensionFactory, Extension, ServerExtensionFactory
from ..typing import ExtensionParameter, Subprotocol
from .headers import build_extension_list, parse_extension_list, parse_token_list, parse_upgrade
from .http11 import Headers

__all__ = [
    "GUID",
    "SUPPORTED_VERSIONS",
    "Handshake",
    "accept_key",
    "check_connection",
    "check_key",
    "check_upgrade",
    "check_version",
    "generate_key",
    "negotiate_extensions",
    "parse_subprotocols",
    "process_extensions_response",
    "select_subprotocol",
    "single_value",
]

#: 1.3: the GUID appended to the key before hashing.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Protocol versions tether speaks (4.1: "The value of this header field MUST be 13").
SUPPORTED_VERSIONS: tuple[str, ...] = ("13",)


def generate_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64 (4.1, item 7)."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a key: base64(SHA-1(key + GUID)) (4.2.2, item 5.4)."""
    digest = hashlib.sha1((key + GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def single_value(headers: Headers, name: str, error: type[InvalidHeader] = InvalidHeader) -> str:
    """The value of a header that must appear exactly once; ``error`` names what is wrong."""
    values = headers.get_all(name)
    if not values:
        raise error(name)
    if len(values) > 1:
        raise error(name, ", ".join(values), "more than one header line")
    return values[0]


def check_key(headers: Headers) -> str:
    """Return the request's key if it is exactly one base64 encoding of 16 bytes."""
    key = single_value(headers, "Sec-WebSocket-Key", InvalidKey)
    try:
        raw = base64.b64decode(key.encode("latin-1"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey("Sec-WebSocket-Key", key, "not base64") from None
    if len(raw) != 16:
        raise InvalidKey("Sec-WebSocket-Key", key, f"decodes to {len(raw)} bytes, not 16")
    return key


def check_version(headers: Headers, supported: Sequence[str] = SUPPORTED_VERSIONS) -> str:
    """Return the requested version if it is supported.

    4.2.1 item 6 and 4.4: the header appears exactly once; a version the server does not
    speak gets 426 and the list of versions it does; anything malformed gets 400 and the list.
    """
    supported = tuple(supported)
    values = headers.get_all("Sec-WebSocket-Version")
    if not values:
        raise InvalidVersion(None, "the request must name version 13", supported=supported)
    if len(values) > 1:
        raise InvalidVersion(", ".join(values), "more than one header line", supported=supported)
    value = values[0]
    # version = DIGIT / (NZDIGIT DIGIT) / ("1" DIGIT DIGIT) / ("2" DIGIT-0-4 DIGIT) / ("25" 0-5)
    if not value.isascii() or not value.isdigit() or (len(value) > 1 and value[0] == "0"):
        raise InvalidVersion(value, "not a version number", supported=supported)
    if int(value) > 255:
        raise InvalidVersion(value, "not a version number (0-255)", supported=supported)
    if value not in supported:
        raise InvalidVersion(
            value,
            f"unsupported version; supported: {', '.join(supported)}",
            supported=supported,
            unsupported=True,
        )
    return value


def check_upgrade(headers: Headers) -> None:
    """``Upgrade`` must list ``websocket`` and ``Connection`` must list ``upgrade``, both
    compared case-insensitively, anywhere in their lists (4.2.1 items 3 and 4)."""
    upgrade = parse_upgrade(headers.get_all("Upgrade"))
    if not any(p.lower() == "websocket" for p in upgrade):
        value = ", ".join(headers.get_all("Upgrade")) if upgrade else None
        raise InvalidUpgrade("Upgrade", value, "expected websocket")
    check_connection(headers)


def check_connection(headers: Headers) -> None:
    """``Connection`` must list ``upgrade``, case-insensitively (4.2.1 item 4, 4.2.2 item 5.3;
    the client checks it in the response too, 4.1)."""
    connection = parse_token_list(headers.get_all("Connection"), "Connection")
    if not any(t.lower() == "upgrade" for t in connection):
        value = ", ".join(headers.get_all("Connection")) if connection else None
        raise InvalidUpgrade("Connection", value, "expected upgrade")


def parse_subprotocols(headers: Headers) -> list[Subprotocol]:
    """The subprotocols of every ``Sec-WebSocket-Protocol`` line, as one list in order."""
    values = headers.get_all("Sec-WebSocket-Protocol")
    return [Subprotocol(p) for p in parse_token_list(values, "Sec-WebSocket-Protocol")]


def select_subprotocol(
    offered: Sequence[Subprotocol], supported: Sequence[Subprotocol]
) -> Subprotocol | None:
    """The first subprotocol of the client's list that the server supports.

    The reference pages say the server selects "the first sub-protocol that it supports from
    the list provided in the request header": the client's order decides, not the server's.
    Names are compared exactly (they are tokens, and case-sensitive in the IANA registry).
    """
    supported_set = set(supported)
    for subprotocol in offered:
        if subprotocol in supported_set:
            return subprotocol
    return None


@dataclasses.dataclass
class Handshake:
    """What was offered and what was agreed in the opening handshake, for logs and users."""

    #: Subprotocols the client offered, in its order.
    offered_subprotocols: list[Subprotocol] = dataclasses.field(default_factory=list)
    #: The subprotocol agreed, if any.
    subprotocol: Subprotocol | None = None
    #: Extension offers of the client, in its order: (name, parameters).
    offered_extensions: list[tuple[str, list[ExtensionParameter]]] = dataclasses.field(
        default_factory=list
    )
    #: Extensions agreed, as the response listed them: (name, parameters).
    accepted_extensions: list[tuple[str, list[ExtensionParameter]]] = dataclasses.field(
        default_factory=list
    )
    #: Offers the server declined, with the reason (server side only).
    declined_extensions: list[tuple[str, list[ExtensionParameter], str]] = dataclasses.field(
        default_factory=list
    )
    #: The protocol version in use.
    version: str = "13"

    def describe(self) -> str:
        """One line: ``subprotocol=chat extensions=permessage-deflate; ...``."""
        extensions = build_extension_list(self.accepted_extensions) or "none"
        return f"subprotocol={self.subprotocol or 'none'} extensions={extensions}"


def negotiate_extensions(
    offers: Sequence[tuple[str, list[ExtensionParameter]]],
    factories: Sequence[ServerExtensionFactory],
    record: Handshake,
) -> tuple[str | None, list[Extension]]:
    """The server's side of extension negotiation (9.1, RFC 7692 5).

    Walks the client's offers in the client's order. For each, the factory of the same name
    may accept it or decline it by raising ``NegotiationError``; an offer that no factory
    knows, that repeats an extension already agreed, or whose extension claims a reserved bit
    already taken, is declined. Declining is never an error. Returns the value of the single
    ``Sec-WebSocket-Extensions`` response header (``None`` for none) and the extensions in
    the order they apply.
    """
    by_name: dict[str, ServerExtensionFactory] = {f.name: f for f in factories}
    extensions: list[Extension] = []
    answers: list[tuple[str, list[ExtensionParameter]]] = []
    rsv_taken = 0
    for name, params in offers:
        factory = by_name.get(name)
        if factory is None:
            record.declined_extensions.append((name, params, "not supported"))
            continue
        if any(ext.name == name for ext in extensions):
            record.declined_extensions.append((name, params, "already accepted"))
            continue
        try:
            answer, extension = factory.process_request_params(params, extensions)
        except NegotiationError as exc:
            record.declined_extensions.append((name, params, str(exc)))
            continue
        if extension.rsv_mask & rsv_taken:
            record.declined_extensions.append((name, params, "reserved bit already in use"))
            continue
        rsv_taken |= extension.rsv_mask
        extensions.append(extension)
        answers.append((name, answer))
    record.accepted_extensions = answers
    return (build_extension_list(answers) if answers else None), extensions


def process_extensions_response(
    headers: Headers,
    factories: Sequence[ClientExtensionFactory],
    record: Handshake,
) -> list[Extension]:
    """The client's side: every extension in the response must be one it offered, with
    parameters that fit the offer, each at most once, with no reserved bit claimed twice
    (9.1: "the client MUST _Fail the WebSocket Connection_" otherwise)."""
    values = headers.get_all("Sec-WebSocket-Extensions")
    answers = parse_extension_list(values) if values else []
    header = ", ".join(values)
    if answers and not factories:
        raise InvalidExtension("Sec-WebSocket-Extensions", header, "no extension was offered")
    by_name: dict[str, ClientExtensionFactory] = {f.name: f for f in factories}
    extensions: list[Extension] = []
    rsv_taken = 0
    for name, params in answers:
        factory = by_name.get(name)
        if factory is None:
            raise InvalidExtension("Sec-WebSocket-Extensions", header, f"{name} was not offered")
        if any(ext.name == name for ext in extensions):
            raise InvalidExtension(
                "Sec-WebSocket-Extensions", header, f"{name} accepted more than once"
            )
        try:
            extension = factory.process_response_params(params, extensions)
        except NegotiationError as exc:
            raise InvalidExtension("Sec-WebSocket-Extensions", header, str(exc)) from exc
        if extension.rsv_mask & rsv_taken:
            raise InvalidExtension(
                "Sec-WebSocket-Extensions", header, f"{name} claims a reserved bit already in use"
            )
        rsv_taken |= extension.rsv_mask
        extensions.append(extension)
    record.accepted_extensions = [(name, list(params)) for name, params in answers]
    return extensions
