"""Reason phrases for every status tether sends; headers in every accepted shape; reject()."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from tether.sansio.http11 import (
    DEFAULT_REASONS,
    Headers,
    Request,
    Response,
    normalize_headers,
    reason_phrase,
)
from tether.sansio.server import ServerProtocol

SRC = Path(__file__).resolve().parents[2] / "src" / "tether"
_STATUS_CALLS = {
    "reject",
    "respond",
    "respond_json",
    "respond_html",
    "Response",
    "InvalidHTTP",
    "InvalidRequest",
    "__init__",
}


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _ints(node: ast.AST) -> set[int]:
    found = set()
    for child in ast.walk(node):
        if (
            isinstance(child, ast.Constant)
            and type(child.value) is int
            and 100 <= child.value < 600
        ):
            found.add(child.value)
    return found


def statuses_in_source() -> dict[int, list[str]]:
    """Every HTTP status that src/ passes to a response or an HTTP error, or assigns to a
    ``status``: where tether decides what status goes on the wire."""
    found: dict[int, list[str]] = {}
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            values: set[int] = set()
            if isinstance(node, ast.Call) and _name(node.func) in _STATUS_CALLS:
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    if isinstance(arg, (ast.Constant, ast.IfExp)):
                        values |= _ints(arg)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(_name(t) == "status" for t in targets) and node.value is not None:
                    values |= _ints(node.value)
            for value in values:
                found.setdefault(value, []).append(f"{path.name}:{getattr(node, 'lineno', 0)}")
    return found


def test_every_status_tether_sends_has_a_reason_phrase() -> None:
    found = statuses_in_source()
    # The scan sees the statuses we know are there (so it is not vacuous).
    assert {101, 400, 403, 405, 426, 431, 500}.issubset(found), sorted(found)
    missing = {status: where for status, where in found.items() if status not in DEFAULT_REASONS}
    assert not missing


@pytest.mark.parametrize("status", [401, 402, 407, 408, 413, 429, 502, 503, 504])
def test_statuses_applications_answer_with_have_their_phrase(status: int) -> None:
    assert reason_phrase(status)
    response = ServerProtocol().reject(status, "no")
    assert response.serialize().startswith(
        f"HTTP/1.1 {status} {reason_phrase(status)}\r\n".encode()
    )


def test_unauthorized_is_sent_with_its_phrase() -> None:
    assert (
        ServerProtocol()
        .reject(401, "token?")
        .serialize()
        .startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    )


@pytest.mark.parametrize(
    "headers",
    [
        lambda: {"X-A": "1", "X-B": "2"},
        lambda: [("X-A", "1"), ("X-B", "2")],
        lambda: Headers([("X-A", "1"), ("X-B", "2")]),
        lambda: (pair for pair in [("X-A", "1"), ("X-B", "2")]),
    ],
    ids=["mapping", "pairs", "Headers", "iterator"],
)
def test_headers_are_taken_in_every_shape(headers: Any) -> None:
    assert normalize_headers(headers()) == [("X-A", "1"), ("X-B", "2")]
    response = ServerProtocol().reject(200, "ok", headers())
    assert response.headers.get_all("X-A") == ["1"]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ("X-A: 1", TypeError),
        ([("X-A",)], TypeError),
        ({"X-A": 1}, TypeError),
        ({"X A": "1"}, ValueError),
        ({"X-A": "1\r\nInjected: yes"}, ValueError),
        ({"X-A": "\x1b[31m"}, ValueError),
        ({"X-A": "\x7f"}, ValueError),
        ({"X-A": "\u20ac"}, ValueError),
    ],
)
def test_bad_headers_are_refused(headers: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        normalize_headers(headers)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "a\tb", "caf\u00e9", "\x1b", "\x00", "\u20ac", "x\ny"])
def test_headers_are_refused_when_given_exactly_when_serializing_would_fail(value: str) -> None:
    try:
        Request("GET", "/", Headers([("X-A", value)])).serialize()
    except ValueError as exc:
        with pytest.raises(ValueError) as given:
            normalize_headers([("X-A", value)])
        assert str(given.value) == str(exc)
    else:
        assert normalize_headers([("X-A", value)]) == [("X-A", value)]


def test_reject_takes_a_content_type_and_bytes() -> None:
    protocol = ServerProtocol(server_header=None)
    html = protocol.reject(200, "<p>hi</p>", content_type="text/html; charset=utf-8")
    assert html.headers["Content-Type"] == "text/html; charset=utf-8"
    assert html.body == b"<p>hi</p>"  # no newline added to non-plain bodies
    data = protocol.reject(200, json.dumps({"a": 1}).encode(), content_type="application/json")
    assert json.loads(data.body) == {"a": 1}
    assert data.headers["Content-Length"] == str(len(data.body))
    plain = protocol.reject(404, "not here")
    assert plain.body == b"not here\n"
    assert plain.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert isinstance(plain, Response) and plain.headers["Connection"] == "close"


def test_response_and_request_take_headers_in_every_shape_and_default_the_reason() -> None:
    response = Response(401, headers={"WWW-Authenticate": "Bearer"}, body=b"token?\n")
    assert response.reason == "Unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.serialize().startswith(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer")
    assert Response(200, "Fine", [("X-A", "1")]).reason == "Fine"
    headers = Headers([("X-A", "1")])
    assert Response(204, headers=headers).headers is headers
    request = Request("GET", "/chat?x=1", {"Host": "example.com"})
    assert request.headers["Host"] == "example.com" and request.path == "/chat?x=1"
    with pytest.raises(ValueError, match="invalid header name"):
        Response(200, headers={"bad name": "x"})
