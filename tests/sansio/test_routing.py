"""Path matching: parameters, converters, percent-encoding, query strings, trailing slashes."""

from __future__ import annotations

import pytest

from tether.sansio.routing import Match, Miss, Router


def router() -> Router[str]:
    r: Router[str] = Router()
    r.add("/", "root")
    r.add("/chat/{room}", "chat")
    r.add("/users/{id:int}/posts/{post:int}", "post")
    r.add("/files/{rest:path}", "files")
    r.add("/docs/{name}.json", "doc")
    r.add("/dir/", "dir")
    r.add("/caf\u00e9", "cafe")
    return r


def matched(path: str) -> tuple[str, dict[str, object]]:
    found = router().resolve(path)
    assert isinstance(found, Match), found
    return found.handler, found.params


@pytest.mark.parametrize(
    ("path", "handler", "params"),
    [
        ("/", "root", {}),
        ("/chat/lobby", "chat", {"room": "lobby"}),
        ("/users/42/posts/7", "post", {"id": 42, "post": 7}),
        ("/files/a/b/c.txt", "files", {"rest": "a/b/c.txt"}),
        ("/docs/readme.json", "doc", {"name": "readme"}),
        ("/dir/", "dir", {}),
        # Query strings play no part in matching.
        ("/chat/lobby?token=abc&x=/y", "chat", {"room": "lobby"}),
        ("/?a=b", "root", {}),
        # Percent-encoding: decoded per segment; %2F stays inside its segment.
        ("/chat/caf%C3%A9", "chat", {"room": "caf\u00e9"}),
        ("/chat/a%2Fb", "chat", {"room": "a/b"}),
        ("/chat/100%25", "chat", {"room": "100%"}),
        ("/chat/a%20b", "chat", {"room": "a b"}),
        ("/%63hat/x", "chat", {"room": "x"}),
        ("/caf%C3%A9", "cafe", {}),
    ],
)
def test_matches(path: str, handler: str, params: dict[str, object]) -> None:
    assert matched(path) == (handler, params)


@pytest.mark.parametrize(
    "path",
    ["/chat", "/chat/a/b", "/users/x/posts/1", "/users/1/posts", "/files/", "/nope", "/docs/.json"],
)
def test_unknown_paths_are_404_naming_the_path(path: str) -> None:
    found = router().resolve(path + "?q=1")
    assert found == Miss(404, f"No WebSocket route for path {path}")


def test_trailing_slash_is_significant_and_redirected() -> None:
    r = router()
    assert r.resolve("/chat/lobby/?t=1") == Miss(
        308, "/chat/lobby/ moved to /chat/lobby", "/chat/lobby?t=1"
    )
    assert r.resolve("/dir") == Miss(308, "/dir moved to /dir/", "/dir/")
    assert r.match("/chat/lobby/") is None


def test_redirect_slashes_off() -> None:
    r: Router[str] = Router([("/dir/", "dir")], redirect_slashes=False)
    assert r.resolve("/dir") == Miss(404, "No WebSocket route for path /dir")


def test_invalid_utf8_is_400() -> None:
    found = router().resolve("/chat/%FF")
    assert isinstance(found, Miss) and found.status == 400
    assert "%FF" in found.text


def test_first_route_wins_and_decorator() -> None:
    r: Router[str] = Router()
    r.add("/a/{x}", "first")
    r.route("/a/b")("second")
    assert r.resolve("/a/b") == Match(r.routes[0], {"x": "b"})


@pytest.mark.parametrize(
    "pattern",
    [
        "chat",
        "/chat/{room",
        "/chat/room}",
        "/chat/{}",
        "/chat/{1x}",
        "/chat/{a}/{a}",
        "/chat/{a:float}",
        "/chat/{a:path}/x",
    ],
)
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(ValueError):
        Router[str]().add(pattern, "h")


def test_stray_brace_before_a_parameter() -> None:
    with pytest.raises(ValueError, match="unbalanced brace"):
        Router[str]().add("/a}b/{x}", "h")
