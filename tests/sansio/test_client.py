"""Client side of the opening handshake, driven with raw bytes (RFC 6455 4.1, 4.2.2)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from tether.exceptions import (
    ConnectionLostDuringHandshake,
    InvalidAccept,
    InvalidExtension,
    InvalidHTTP,
    InvalidState,
    InvalidStatus,
    InvalidSubprotocol,
    InvalidUpgrade,
    NegotiationError,
)
from tether.extensions.base import RSV2, ClientExtensionFactory, Extension
from tether.sansio.client import ClientProtocol
from tether.sansio.events import BinaryMessage
from tether.sansio.frames import Frame
from tether.sansio.handshake import accept_key
from tether.sansio.http11 import Response
from tether.sansio.protocol import State
from tether.sansio.uri import parse_uri
from tether.typing import ExtensionName, ExtensionParameter

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

MDN_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
)


def client(uri: str = "ws://example.com:8000/chat", **kwargs: Any) -> ClientProtocol:
    protocol = ClientProtocol(parse_uri(uri), **kwargs)
    request = protocol.connect()
    # Use the key of the MDN example so that the MDN response fits.
    del request.headers["Sec-WebSocket-Key"]
    request.headers["Sec-WebSocket-Key"] = KEY
    protocol.send_request(request)
    return protocol


def respond(protocol: ClientProtocol, *extra: bytes, base: bytes = MDN_RESPONSE) -> None:
    protocol.receive_data(base + b"".join(line + b"\r\n" for line in extra) + b"\r\n")


def test_accept_key_of_the_rfc_and_mdn() -> None:
    assert accept_key(KEY) == ACCEPT


def test_request_is_correct() -> None:
    protocol = ClientProtocol(
        parse_uri("ws://example.com:8000/chat?room=1"),
        origin="https://example.com",
        subprotocols=["soap", "wamp"],
        additional_headers=[("X-Token", "abc")],
    )
    request = protocol.connect()
    protocol.send_request(request)
    raw = b"".join(protocol.data_to_send())
    assert raw.startswith(b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8000\r\n")
    headers = request.headers
    assert headers["Upgrade"] == "websocket"
    assert headers["Connection"] == "Upgrade"
    assert headers["Sec-WebSocket-Version"] == "13"
    assert headers["Origin"] == "https://example.com"
    assert headers["Sec-WebSocket-Protocol"] == "soap, wamp"
    assert headers["X-Token"] == "abc"
    assert raw.endswith(b"\r\n\r\n")


def test_fresh_key_every_time() -> None:
    protocol = ClientProtocol(parse_uri("ws://example.com/"))
    keys = {protocol.connect().headers["Sec-WebSocket-Key"] for _ in range(20)}
    assert len(keys) == 20
    assert all(len(k) == 24 for k in keys)


def test_host_header_omits_default_port_and_brackets_ipv6() -> None:
    assert ClientProtocol(parse_uri("ws://h/")).connect().headers["Host"] == "h"
    assert ClientProtocol(parse_uri("wss://h:443/")).connect().headers["Host"] == "h"
    assert ClientProtocol(parse_uri("ws://[::1]:9000/")).connect().headers["Host"] == "[::1]:9000"


def test_sec_websocket_headers_cannot_be_injected() -> None:
    with pytest.raises(ValueError):
        ClientProtocol(parse_uri("ws://h/"), additional_headers=[("Sec-WebSocket-Key", "x")])


def test_mdn_response_opens() -> None:
    protocol = client()
    respond(protocol)
    (event,) = protocol.events_received()
    assert isinstance(event, Response) and event.status == 101
    assert protocol.state is State.OPEN
    assert protocol.handshake_exc is None


def test_early_frame_after_101_is_kept() -> None:
    protocol = client()
    protocol.receive_data(MDN_RESPONSE + b"\r\n" + b"\x82\x02hi")
    events = protocol.events_received()
    assert events[1:] == [BinaryMessage(b"hi")]


@pytest.mark.parametrize(
    ("base", "extra", "error"),
    [
        (MDN_RESPONSE.replace(b"Upgrade: websocket\r\n", b""), (), InvalidUpgrade),
        (MDN_RESPONSE.replace(b"Upgrade: websocket", b"Upgrade: h2c"), (), InvalidUpgrade),
        (MDN_RESPONSE.replace(b"Connection: Upgrade", b"Connection: close"), (), InvalidUpgrade),
        (MDN_RESPONSE.replace(ACCEPT.encode(), ACCEPT.lower().encode()), (), InvalidAccept),
        (
            MDN_RESPONSE.replace(b"Sec-WebSocket-Accept: " + ACCEPT.encode() + b"\r\n", b""),
            (),
            InvalidAccept,
        ),
        (MDN_RESPONSE, (b"Sec-WebSocket-Accept: " + ACCEPT.encode(),), InvalidAccept),
    ],
)
def test_response_checks(base: bytes, extra: tuple[bytes, ...], error: type[Exception]) -> None:
    protocol = client()
    respond(protocol, *extra, base=base)
    assert isinstance(protocol.handshake_exc, error), protocol.handshake_exc
    assert protocol.state is State.CLOSED
    assert protocol.data_to_send()[-1] == b""  # the client closes the connection


def test_case_insensitive_upgrade_and_connection_lists() -> None:
    protocol = client()
    base = MDN_RESPONSE.replace(b"Upgrade: websocket", b"Upgrade: WebSocket").replace(
        b"Connection: Upgrade", b"Connection: keep-alive, UPGRADE"
    )
    respond(protocol, base=base)
    assert protocol.state is State.OPEN


def test_non_101_is_a_clear_error_with_the_response() -> None:
    protocol = client()
    protocol.receive_data(
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\n"
        b"origin not allowed\n"
    )
    exc = protocol.handshake_exc
    assert isinstance(exc, InvalidStatus)
    assert exc.response.status == 403
    assert exc.response.body == b"origin not allowed\n"
    assert "403" in str(exc) and "origin not allowed" in str(exc)


def test_426_names_supported_versions() -> None:
    protocol = client()
    protocol.receive_data(
        b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13, 8\r\n"
        b"Sec-WebSocket-Version: 7\r\nContent-Length: 0\r\n\r\n"
    )
    exc = protocol.handshake_exc
    assert isinstance(exc, InvalidStatus)
    assert exc.supported_versions == ["13", "8", "7"]
    assert "13, 8, 7" in str(exc)


def test_redirect_exposes_location() -> None:
    protocol = client()
    protocol.receive_data(
        b"HTTP/1.1 302 Found\r\nLocation: ws://other.example/x\r\nContent-Length: 0\r\n\r\n"
    )
    exc = protocol.handshake_exc
    assert isinstance(exc, InvalidStatus) and exc.location == "ws://other.example/x"


def test_malformed_response_is_invalid_http() -> None:
    protocol = client()
    protocol.receive_data(b"HTTP/1.0 101 OK\r\n\r\n")
    assert isinstance(protocol.handshake_exc, InvalidHTTP)


def test_eof_before_response() -> None:
    protocol = client()
    protocol.receive_eof()
    exc = protocol.handshake_exc
    assert isinstance(exc, ConnectionLostDuringHandshake)
    assert str(exc) == (
        "the server closed the connection before sending a complete HTTP response "
        "(0 bytes received)"
    )
    assert protocol.state is State.CLOSED


# --- subprotocols --------------------------------------------------------------------------


def test_subprotocol_selected_from_offer() -> None:
    protocol = client(subprotocols=["soap", "wamp"])
    respond(protocol, b"Sec-WebSocket-Protocol: soap")  # the MDN example
    assert protocol.subprotocol == "soap"
    assert protocol.handshake.offered_subprotocols == ["soap", "wamp"]


@pytest.mark.parametrize(
    ("offer", "lines"),
    [
        (["soap"], (b"Sec-WebSocket-Protocol: wamp",)),
        ([], (b"Sec-WebSocket-Protocol: soap",)),
        (["soap", "wamp"], (b"Sec-WebSocket-Protocol: soap, wamp",)),
        (["soap", "wamp"], (b"Sec-WebSocket-Protocol: soap", b"Sec-WebSocket-Protocol: soap")),
        (["soap"], (b"Sec-WebSocket-Protocol: SOAP",)),
    ],
)
def test_bad_subprotocol_answers(offer: list[str], lines: tuple[bytes, ...]) -> None:
    protocol = client(subprotocols=offer)
    respond(protocol, *lines)
    assert isinstance(protocol.handshake_exc, InvalidSubprotocol)


def test_required_subprotocol() -> None:
    protocol = client(subprotocols=["soap"], require_subprotocol=True)
    respond(protocol)
    assert isinstance(protocol.handshake_exc, InvalidSubprotocol)
    protocol = client(subprotocols=["soap"])
    respond(protocol)
    assert protocol.state is State.OPEN and protocol.subprotocol is None


# --- extensions ----------------------------------------------------------------------------


class FakeExtension(Extension):
    def __init__(self, name: str, rsv: int) -> None:
        self.name = ExtensionName(name)
        self.rsv_mask = rsv

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


class FakeClientFactory(ClientExtensionFactory):
    def __init__(self, name: str, rsv: int = RSV2) -> None:
        self.name = ExtensionName(name)
        self.rsv = rsv

    def get_request_params(self) -> list[ExtensionParameter]:
        return [("p", "1")]

    def process_response_params(
        self, params: Sequence[ExtensionParameter], accepted: Sequence[Extension]
    ) -> Extension:
        if list(params) not in ([], [("p", "1")]):
            raise NegotiationError("unexpected parameters")
        return FakeExtension(self.name, self.rsv)


def test_extension_offer_and_acceptance() -> None:
    protocol = client(extensions=[FakeClientFactory("x-a"), FakeClientFactory("x-b", 0x10)])
    assert protocol.request is not None
    assert protocol.request.headers["Sec-WebSocket-Extensions"] == "x-a; p=1, x-b; p=1"
    respond(protocol, b"Sec-WebSocket-Extensions: x-b", b"Sec-WebSocket-Extensions: x-a; p=1")
    assert protocol.state is State.OPEN
    assert [e.name for e in protocol.extensions] == ["x-b", "x-a"]
    assert protocol.handshake.accepted_extensions == [("x-b", []), ("x-a", [("p", "1")])]


@pytest.mark.parametrize(
    "lines",
    [
        (b"Sec-WebSocket-Extensions: x-other",),
        (b"Sec-WebSocket-Extensions: x-a; q=2",),
        (b"Sec-WebSocket-Extensions: x-a, x-a",),
        (b"Sec-WebSocket-Extensions: x-a", b"Sec-WebSocket-Extensions: x-c"),  # same RSV bit
        (b'Sec-WebSocket-Extensions: x-a; p="1',),
    ],
)
def test_bad_extension_answers(lines: tuple[bytes, ...]) -> None:
    protocol = client(extensions=[FakeClientFactory("x-a"), FakeClientFactory("x-c")])
    respond(protocol, *lines)
    assert protocol.state is State.CLOSED
    assert protocol.handshake_exc is not None
    assert "Sec-WebSocket-Extensions" in str(protocol.handshake_exc)


def test_extension_answer_without_offer() -> None:
    protocol = client()
    respond(protocol, b"Sec-WebSocket-Extensions: permessage-deflate")
    assert isinstance(protocol.handshake_exc, InvalidExtension)


def test_request_sent_twice_is_misuse() -> None:
    protocol = client()
    assert protocol.request is not None
    with pytest.raises(InvalidState):
        protocol.send_request(protocol.request)


@pytest.mark.parametrize(
    "header", [("Bad Name", "x"), ("X-Ok", "a\r\nInjected: 1"), ("", "x"), ("X-Nul", "a\0")]
)
def test_invalid_additional_headers_are_refused_before_connecting(header: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        ClientProtocol(parse_uri("ws://h/"), additional_headers=[header])


def test_user_info_becomes_basic_authorization() -> None:
    request = ClientProtocol(parse_uri("ws://al%20ice:s%3Ame@h/")).connect()
    assert request.headers["Authorization"] == "Basic YWwgaWNlOnM6bWU="  # "al ice:s:me"


def test_user_agent_from_extra_headers_or_none() -> None:
    own = ClientProtocol(
        parse_uri("ws://h/"), additional_headers=[("User-Agent", "mine/1")]
    ).connect()
    assert own.headers.get_all("User-Agent") == ["mine/1"]
    anonymous = ClientProtocol(parse_uri("ws://h/"), user_agent=None).connect()
    assert "User-Agent" not in anonymous.headers


def test_response_bytes_before_the_request_is_sent_are_kept() -> None:
    protocol = ClientProtocol(parse_uri("ws://example.com:8000/chat"))
    protocol.receive_data(MDN_RESPONSE + b"\r\n")  # nothing to parse yet: no request
    assert protocol.events_received() == []
    request = protocol.connect()
    del request.headers["Sec-WebSocket-Key"]
    request.headers["Sec-WebSocket-Key"] = KEY
    protocol.send_request(request)
    (event,) = protocol.events_received()
    assert isinstance(event, Response) and event.status == 101
    assert protocol.state is State.OPEN


def test_debug_logs_the_handshake(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tether.test.client")
    protocol = client(logger=logging.getLogger("tether.test.client"))
    respond(protocol, b"X-Extra: 1")
    messages = [record.getMessage() for record in caplog.records]
    assert "> GET /chat HTTP/1.1" in messages
    assert "> Sec-WebSocket-Key: " + KEY in messages
    assert "< HTTP/1.1 101 Switching Protocols" in messages
    assert "< X-Extra: 1" in messages


def test_debug_logs_a_failed_handshake(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tether.test.client")
    protocol = client(logger=logging.getLogger("tether.test.client"))
    protocol.receive_data(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(protocol.handshake_exc, InvalidStatus)
    assert any(r.getMessage().startswith("! handshake failed: ") for r in caplog.records)


def test_handshake_failure_after_eof_sent_sends_no_second_eof() -> None:
    protocol = client()
    protocol.data_to_send()
    protocol.send_eof()
    assert protocol.data_to_send() == [b""]
    respond(protocol, base=b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n")
    assert isinstance(protocol.handshake_exc, InvalidStatus)
    assert protocol.state is State.CLOSED
    assert protocol.data_to_send() == []


def test_empty_subprotocol_header_fails() -> None:
    protocol = client(subprotocols=["chat"])
    respond(protocol, b"Sec-WebSocket-Protocol: ")
    assert isinstance(protocol.handshake_exc, InvalidSubprotocol)
    assert "empty" in str(protocol.handshake_exc)
