"""Server side of the opening handshake, driven with raw bytes (RFC 6455 4.2, MDN examples)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import pytest

from tether.exceptions import (
    ConnectionLostDuringHandshake,
    InvalidHTTP,
    InvalidKey,
    InvalidOrigin,
    InvalidState,
    InvalidSubprotocol,
    InvalidVersion,
    NegotiationError,
)
from tether.extensions.base import RSV2, Extension, ServerExtensionFactory
from tether.limits import Limits
from tether.sansio.events import TextMessage
from tether.sansio.frames import Frame
from tether.sansio.http11 import Request, Response
from tether.sansio.protocol import State
from tether.sansio.server import ServerProtocol
from tether.typing import ExtensionName, ExtensionParameter, Subprotocol

# The MDN examples, verbatim (Sec-WebSocket-Key/Accept, -Version, -Protocol, -Extensions pages).
MDN_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: example.com:8000\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)
MDN_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def request(*extra: bytes, base: bytes = MDN_REQUEST) -> bytes:
    return base + b"".join(line + b"\r\n" for line in extra) + b"\r\n"


def replace(header: bytes, *lines: bytes) -> bytes:
    """MDN_REQUEST with every line of ``header`` replaced by ``lines``."""
    kept = [
        line
        for line in MDN_REQUEST.split(b"\r\n")
        if line and not line.lower().startswith(header.lower() + b":")
    ]
    return b"\r\n".join([*kept, *lines]) + b"\r\n"


def handshake(raw: bytes, **kwargs: Any) -> tuple[ServerProtocol, Response]:
    server = ServerProtocol(**kwargs)
    server.receive_data(raw)
    events = server.events_received()
    if server.handshake_exc is not None and not events:
        # Rejected while parsing: the response is already written.
        assert server.response is not None
        return server, server.response
    assert len(events) == 1 and isinstance(events[0], Request), events
    response = server.accept(events[0])
    server.send_response(response)
    return server, response


def written(server: ServerProtocol) -> bytes:
    return b"".join(server.data_to_send())


def body(response: Response) -> str:
    return response.body.decode()


# --- success ---------------------------------------------------------------------------------


def test_mdn_request_gets_mdn_response() -> None:
    server, response = handshake(request(), server_header=None)
    assert response.status == 101
    assert written(server) == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )
    assert server.state is State.OPEN


def test_101_never_carries_version() -> None:
    _, response = handshake(request())
    assert "Sec-WebSocket-Version" not in response.headers
    assert response.headers["Sec-WebSocket-Accept"] == MDN_ACCEPT


def test_request_split_in_single_bytes() -> None:
    server = ServerProtocol()
    for byte in request():
        server.receive_data(bytes([byte]))
    (event,) = server.events_received()
    assert isinstance(event, Request)
    assert server.accept(event).status == 101


def test_early_frame_after_head_is_kept() -> None:
    # A masked text frame "Hello" (RFC 6455 5.7) in the same read as the request.
    frame = bytes.fromhex("818537fa213d7f9f4d5158")
    server, response = handshake(request() + frame)
    assert response.status == 101
    assert server.events_received() == [TextMessage("Hello")]


def test_request_and_response_are_kept_compact_and_read_back_after_the_handshake() -> None:
    server, response = handshake(request(b"X-Token: a b"))
    assert server.request is not None
    # Kept as text for the connection's life; read back on demand, unchanged.
    assert server.request.headers._items is None and response.headers._items is None
    assert server.request.headers["x-token"] == "a b"
    assert server.request.headers["Sec-WebSocket-Key"] == "dGhlIHNhbXBsZSBub25jZQ=="
    assert response.headers["Sec-WebSocket-Accept"] == MDN_ACCEPT


def test_nothing_received_yet_then_the_request() -> None:
    server = ServerProtocol()
    server.receive_data(b"")
    assert server.events_received() == [] and server.data_to_send() == []
    server.receive_data(request())
    (event,) = server.events_received()
    assert isinstance(event, Request)


def test_101_sent_without_a_request_opens() -> None:
    # A handshake decided elsewhere (the protocol never saw the request).
    server = ServerProtocol()
    server.send_response(Response(101, headers={"Upgrade": "websocket"}))
    assert server.state is State.OPEN and server.request is None


def test_absolute_form_target_accepted() -> None:
    raw = request(base=MDN_REQUEST.replace(b"GET /chat", b"GET ws://example.com:8000/chat?x=1"))
    server, response = handshake(raw)
    assert response.status == 101
    assert server.request is not None and server.request.path == "/chat?x=1"


@pytest.mark.parametrize(
    "lines",
    [
        (b"Connection: keep-alive, Upgrade",),
        (b"Connection: keep-alive", b"Connection: Upgrade"),
        (b"Connection: UPGRADE",),
        (b"Connection: ,\t upgrade ,",),
    ],
)
def test_connection_token_list(lines: tuple[bytes, ...]) -> None:
    _, response = handshake(replace(b"Connection", *lines) + b"\r\n")
    assert response.status == 101


@pytest.mark.parametrize(
    "lines",
    [
        (b"Upgrade: foo/1, websocket",),
        (b"Upgrade: WebSocket",),
        (b"Upgrade: h2c", b"Upgrade: websocket"),
    ],
)
def test_upgrade_token_list(lines: tuple[bytes, ...]) -> None:
    _, response = handshake(replace(b"Upgrade", *lines) + b"\r\n")
    assert response.status == 101


# --- version -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [b"8", b"14", b"7", b"0"])
def test_unsupported_version_gets_426_with_supported_list(version: bytes) -> None:
    server, response = handshake(
        replace(b"Sec-WebSocket-Version", b"Sec-WebSocket-Version: " + version) + b"\r\n"
    )
    assert response.status == 426
    assert response.headers.get_all("Sec-WebSocket-Version") == ["13"]
    assert "Sec-WebSocket-Version" in body(response)
    assert isinstance(server.handshake_exc, InvalidVersion)


@pytest.mark.parametrize(
    "lines",
    [
        (),
        (b"Sec-WebSocket-Version: 13, 8",),
        (b"Sec-WebSocket-Version: abc",),
        (b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 13"),
        (b"Sec-WebSocket-Version: 013",),
        (b"Sec-WebSocket-Version:",),
        (b"Sec-WebSocket-Version: 256",),
    ],
)
def test_missing_duplicated_or_malformed_version_gets_400(lines: tuple[bytes, ...]) -> None:
    _, response = handshake(replace(b"Sec-WebSocket-Version", *lines) + b"\r\n")
    assert response.status == 400
    assert response.headers.get_all("Sec-WebSocket-Version") == ["13"]
    assert "Sec-WebSocket-Version" in body(response)


def test_advertised_versions_are_configurable() -> None:
    raw = replace(b"Sec-WebSocket-Version", b"Sec-WebSocket-Version: 8") + b"\r\n"
    _, response = handshake(raw, versions=["13", "8"])
    assert response.status == 101
    raw = replace(b"Sec-WebSocket-Version", b"Sec-WebSocket-Version: 7") + b"\r\n"
    _, response = handshake(raw, versions=["13", "8"])
    assert response.status == 426
    assert response.headers["Sec-WebSocket-Version"] == "13, 8"


# --- key -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        (),
        (b"Sec-WebSocket-Key: not base64!",),
        (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j",),  # 15 bytes
        (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZTE=",),  # 17 bytes
        (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ",),  # no padding
        (
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ),
    ],
)
def test_bad_key_gets_400(lines: tuple[bytes, ...]) -> None:
    server, response = handshake(replace(b"Sec-WebSocket-Key", *lines) + b"\r\n")
    assert response.status == 400
    assert "Sec-WebSocket-Key" in body(response)
    assert isinstance(server.handshake_exc, InvalidKey)


# --- HTTP layer ---------------------------------------------------------------------------


def test_plain_http_request_gets_426_with_upgrade() -> None:
    server, response = handshake(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert response.status == 426
    assert response.headers["Upgrade"] == "websocket"
    assert "Upgrade" in body(response)
    assert written(server).startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert server.state is State.CLOSED


def test_only_get_can_upgrade() -> None:
    _, response = handshake(request(base=MDN_REQUEST.replace(b"GET", b"POST")))
    assert response.status == 405
    assert response.headers["Allow"] == "GET"


@pytest.mark.parametrize(
    "lines",
    [(), (b"Host: a.example", b"Host: b.example"), (b"Host: a b",)],
)
def test_missing_or_duplicated_host_gets_400(lines: tuple[bytes, ...]) -> None:
    _, response = handshake(replace(b"Host", *lines) + b"\r\n")
    assert response.status == 400
    assert "Host" in body(response)


def test_connection_without_upgrade_gets_400() -> None:
    _, response = handshake(replace(b"Connection", b"Connection: keep-alive") + b"\r\n")
    assert response.status == 400
    assert "Connection" in body(response)


def test_request_with_body_gets_400() -> None:
    _, response = handshake(request(b"Content-Length: 5"))
    assert response.status == 400


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /chat HTTP/1.0\r\nHost: x\r\n\r\n", 505),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", 400),  # TLS ClientHello-ish
        (b"garbage\r\n\r\n", 400),
        (MDN_REQUEST + b"X-Folded: a\r\n b\r\n\r\n", 400),  # obs-fold
        (MDN_REQUEST + b"X-Space : a\r\n\r\n", 400),  # whitespace before the colon
        (MDN_REQUEST.replace(b"\r\n", b"\n") + b"\n", 400),  # bare LF
    ],
)
def test_bad_http_is_answered(raw: bytes, status: int) -> None:
    server = ServerProtocol()
    server.receive_data(raw)
    assert server.events_received() == []
    assert isinstance(server.handshake_exc, InvalidHTTP)
    out = written(server)
    assert out.startswith(b"HTTP/1.1 %d " % status)
    assert out.endswith(b"\n") and b"\r\n\r\n" in out
    assert server.state is State.CLOSED


def test_head_limits_give_431() -> None:
    limits = Limits(max_header_count=10)
    server = ServerProtocol(limits=limits)
    server.receive_data(request(*[b"X-H%d: v" % i for i in range(20)]))
    assert written(server).startswith(b"HTTP/1.1 431 ")

    server = ServerProtocol(limits=Limits(max_line_length=100))
    server.receive_data(MDN_REQUEST + b"X-Long: " + b"a" * 200)  # no CRLF yet: fails early
    assert written(server).startswith(b"HTTP/1.1 431 ")

    server = ServerProtocol(limits=Limits(max_head_size=300))
    server.receive_data(request(*[b"X-H%d: %s" % (i, b"v" * 40) for i in range(10)]))
    assert written(server).startswith(b"HTTP/1.1 431 ")


def test_eof_during_request_closes_without_answer() -> None:
    server = ServerProtocol()
    server.receive_data(MDN_REQUEST)
    server.receive_eof()
    assert server.state is State.CLOSED
    exc = server.handshake_exc
    assert isinstance(exc, ConnectionLostDuringHandshake)
    assert isinstance(exc.__cause__, EOFError)
    assert exc.received == len(MDN_REQUEST)
    assert "the client closed the connection before sending a complete HTTP request" in str(exc)
    assert written(server) == b""


# --- subprotocols --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        (b"Sec-WebSocket-Protocol: soap, wamp",),
        (b"Sec-WebSocket-Protocol: soap", b"Sec-WebSocket-Protocol: wamp"),
    ],
)
def test_mdn_subprotocol_examples(lines: tuple[bytes, ...]) -> None:
    # MDN: the server selects "the first sub-protocol that it supports from the client's
    # preferences": soap, although the server prefers wamp.
    server, response = handshake(request(*lines), subprotocols=["wamp", "soap"])
    assert response.headers.get_all("Sec-WebSocket-Protocol") == ["soap"]
    assert server.handshake.offered_subprotocols == ["soap", "wamp"]
    assert server.handshake.subprotocol == "soap"


def test_subprotocol_client_order_wins() -> None:
    _, response = handshake(request(b"Sec-WebSocket-Protocol: b, a"), subprotocols=["a", "b"])
    assert response.headers["Sec-WebSocket-Protocol"] == "b"


def test_subprotocol_empty_elements_and_tabs() -> None:
    raw = request(b"Sec-WebSocket-Protocol: ,\tx ,, chat,")
    _, response = handshake(raw, subprotocols=["chat"])
    assert response.headers["Sec-WebSocket-Protocol"] == "chat"


def test_subprotocol_names_are_case_sensitive() -> None:
    _, response = handshake(request(b"Sec-WebSocket-Protocol: Chat"), subprotocols=["chat"])
    assert response.status == 101
    assert "Sec-WebSocket-Protocol" not in response.headers


def test_no_overlap_accepts_without_header() -> None:
    server, response = handshake(request(b"Sec-WebSocket-Protocol: x"), subprotocols=["chat"])
    assert response.status == 101
    assert "Sec-WebSocket-Protocol" not in response.headers
    assert server.handshake.subprotocol is None


def test_no_overlap_rejected_when_required() -> None:
    server, response = handshake(
        request(b"Sec-WebSocket-Protocol: x, y"), subprotocols=["chat"], require_subprotocol=True
    )
    assert response.status == 400
    assert "Sec-WebSocket-Protocol" in body(response) and "chat" in body(response)
    assert isinstance(server.handshake_exc, InvalidSubprotocol)
    _, response = handshake(request(), subprotocols=["chat"], require_subprotocol=True)
    assert response.status == 400


def test_subprotocol_hook_replaces_policy() -> None:
    def last(protocol: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol:
        assert protocol.subprotocols == []
        return offered[-1]

    _, response = handshake(request(b"Sec-WebSocket-Protocol: a, b, c"), select_subprotocol=last)
    assert response.headers["Sec-WebSocket-Protocol"] == "c"


def test_subprotocol_hook_cannot_pick_unoffered() -> None:
    _, response = handshake(
        request(b"Sec-WebSocket-Protocol: a"), select_subprotocol=lambda p, o: Subprotocol("z")
    )
    assert response.status == 500
    assert "z" not in body(response)


def test_malformed_subprotocol_header_gets_400() -> None:
    _, response = handshake(request(b"Sec-WebSocket-Protocol: a b"), subprotocols=["a"])
    assert response.status == 400


# --- extensions framework ----------------------------------------------------------------------


class FakeExtension(Extension):
    def __init__(self, name: str, rsv: int, params: list[ExtensionParameter]) -> None:
        self.name = ExtensionName(name)
        self.rsv_mask = rsv
        self._params = params

    @property
    def params(self) -> list[ExtensionParameter]:
        return self._params

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


class FakeFactory(ServerExtensionFactory):
    """Accepts offers without parameters or with ``ok``; declines anything else."""

    def __init__(self, name: str, rsv: int = RSV2) -> None:
        self.name = ExtensionName(name)
        self.rsv = rsv

    def process_request_params(
        self, params: Sequence[ExtensionParameter], accepted: Sequence[Extension]
    ) -> tuple[list[ExtensionParameter], Extension]:
        if any(name != "ok" for name, _ in params):
            raise NegotiationError("unknown parameter")
        return list(params), FakeExtension(self.name, self.rsv, list(params))


def test_extensions_first_acceptable_offer_in_client_order() -> None:
    raw = request(b"Sec-WebSocket-Extensions: x-b; bad, x-a, x-b; ok")
    server, response = handshake(
        raw, extensions=[FakeFactory("x-b", RSV2), FakeFactory("x-a", 0x10)]
    )
    assert response.headers.get_all("Sec-WebSocket-Extensions") == ["x-a, x-b; ok"]
    assert [e.name for e in server.extensions] == ["x-a", "x-b"]
    assert [d[0] for d in server.handshake.declined_extensions] == ["x-b"]


def test_extensions_over_several_lines_answered_once() -> None:
    raw = request(b"Sec-WebSocket-Extensions: x-a", b"Sec-WebSocket-Extensions: x-c")
    _, response = handshake(raw, extensions=[FakeFactory("x-a", 0x10), FakeFactory("x-c", 0x20)])
    assert response.headers.get_all("Sec-WebSocket-Extensions") == ["x-a, x-c"]


def test_extensions_never_share_a_reserved_bit() -> None:
    raw = request(b"Sec-WebSocket-Extensions: x-a, x-b")
    server, response = handshake(raw, extensions=[FakeFactory("x-a"), FakeFactory("x-b")])
    assert response.headers["Sec-WebSocket-Extensions"] == "x-a"
    assert server.handshake.declined_extensions[0][2] == "reserved bit already in use"


def test_extension_accepted_once() -> None:
    raw = request(b"Sec-WebSocket-Extensions: x-a, x-a")
    _, response = handshake(raw, extensions=[FakeFactory("x-a")])
    assert response.headers["Sec-WebSocket-Extensions"] == "x-a"


def test_unknown_extensions_are_declined_not_fatal() -> None:
    raw = request(b"Sec-WebSocket-Extensions: x-unknown; a=1, X-A")
    server, response = handshake(raw, extensions=[FakeFactory("x-a")])
    assert response.status == 101
    assert "Sec-WebSocket-Extensions" not in response.headers
    assert len(server.handshake.declined_extensions) == 2


def test_malformed_extension_header_gets_400() -> None:
    _, response = handshake(request(b'Sec-WebSocket-Extensions: x-a; p="unterminated'))
    assert response.status == 400
    assert "Sec-WebSocket-Extensions" in body(response)


# --- origin --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (b"Origin: https://example.com", 101),
        (b"Origin: https://app.example.org", 101),
        (b"Origin: https://evil.example", 403),
        (b"Origin: https://example.com.evil.example", 403),
        (None, 403),
    ],
)
def test_origin_allow_list(origin: bytes | None, status: int) -> None:
    allowed = ["https://example.com", re.compile(r"https://[a-z]+\.example\.org")]
    raw = request(origin) if origin else request()
    server, response = handshake(raw, origins=allowed)
    assert response.status == status
    if status == 403:
        assert isinstance(server.handshake_exc, InvalidOrigin)
        assert "Origin" in body(response)


def test_origin_none_allows_missing_header() -> None:
    _, response = handshake(request(), origins=["https://example.com", None])
    assert response.status == 101


def test_duplicated_origin_gets_400() -> None:
    _, response = handshake(request(b"Origin: https://a", b"Origin: https://b"))
    assert response.status == 400


# --- rejection shape and API ----------------------------------------------------------------


def test_rejection_is_a_complete_response() -> None:
    server, _response = handshake(replace(b"Sec-WebSocket-Key") + b"\r\n")
    out = written(server)
    head, _, payload = out.partition(b"\r\n\r\n")
    assert b"Content-Type: text/plain; charset=utf-8" in head
    assert b"Content-Length: %d" % len(payload) in head
    assert payload.count(b"\n") == 1 and b"missing Sec-WebSocket-Key header" in payload
    assert server.data_to_send() == [] and server.eof_sent


def test_send_response_twice_is_misuse() -> None:
    server, response = handshake(request())
    with pytest.raises(InvalidState):
        server.send_response(response)


def test_tls_to_plain_port_is_refused_at_once() -> None:
    server = ServerProtocol()
    server.receive_data(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # no line feed
    out = written(server)
    assert out.startswith(b"HTTP/1.1 400 ")
    assert b"TLS" in out
    assert server.state is State.CLOSED


def test_bytes_after_the_request_wait_for_the_decision() -> None:
    server = ServerProtocol()
    server.receive_data(request())
    (event,) = server.events_received()
    server.receive_data(b"\x81\x85")  # the start of a masked frame, before the 101
    assert server.events_received() == []
    before = server.state
    assert isinstance(event, Request)
    server.send_response(server.accept(event))
    assert (before, server.state) == (State.CONNECTING, State.OPEN)


def test_debug_logs_the_handshake(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tether.test.server")
    handshake(request(), logger=logging.getLogger("tether.test.server"))
    messages = [record.getMessage() for record in caplog.records]
    assert "< GET /chat HTTP/1.1" in messages
    assert "< Sec-WebSocket-Version: 13" in messages
    assert "> HTTP/1.1 101 Switching Protocols" in messages
    assert "> Sec-WebSocket-Accept: " + MDN_ACCEPT in messages


def test_debug_logs_a_refusal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tether.test.server")
    server, response = handshake(
        replace(b"Sec-WebSocket-Version", b"Sec-WebSocket-Version: 8") + b"\r\n",
        logger=logging.getLogger("tether.test.server"),
    )
    assert response.status == 426 and isinstance(server.handshake_exc, InvalidVersion)
    assert any(r.getMessage().startswith("! handshake refused: ") for r in caplog.records)


def test_origin_none_rule_does_not_allow_a_present_origin() -> None:
    server, response = handshake(request(b"Origin: https://evil.example"), origins=[None])
    assert response.status == 403 and isinstance(server.handshake_exc, InvalidOrigin)


def test_rejection_without_server_header() -> None:
    server = ServerProtocol(server_header=None)
    response = server.reject(404, "no such path")
    assert "Server" not in response.headers
    assert response.body == b"no such path\n"


def test_buffered_counts_unparsed_handshake_bytes() -> None:
    server = ServerProtocol()
    server.receive_data(b"GET /chat HTTP/1.1\r\nHost: exa")
    assert server.buffered == len(b"Host: exa")
    server.receive_data(request()[len(b"GET /chat HTTP/1.1\r\nHost: exa") :])
    assert server.buffered == 0
