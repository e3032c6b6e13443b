"""Routing WebSocket requests by path, with ``{name}`` parameters (no I/O, no dependency).

A :class:`Router` maps path patterns to handlers; :meth:`Router.resolve` turns a request's
origin-form target (RFC 9112 section 3.2.1: path and query) into a :class:`Match` (the
handler and its parameters) or a :class:`Miss` (the HTTP status and text to answer with).
:meth:`Router.answer` turns a miss into the response to send, for the I/O layers, which call
``handler(ws, **params)`` on a match.

Patterns
    ``/chat/{room}`` captures one path segment (RFC 3986 section 3.3: between slashes, not
    empty). Converters: ``{id:int}`` (decimal digits, given as an ``int``), ``{name:str}``
    (the default), ``{rest:path}`` (one or more segments with their slashes; only at the
    end). Placeholders may share a segment with literal text: ``/files/{name}.json``.

Matching
    - The query is ignored (``/chat/lobby?token=x`` matches ``/chat/{room}``).
    - Segments are percent-decoded one by one after splitting on ``/`` (RFC 3986 section
      2.4: decode only after separating the components), so ``/chat/a%2Fb`` captures the
      room ``a/b`` and ``%41`` matches a literal ``A``. A segment that is not valid UTF-8
      once decoded is answered with 400.
    - Trailing slashes are significant, as in werkzeug (which websockets' router uses):
      ``/chat`` and ``/chat/`` are two paths. When a path misses but the same path with the
      trailing slash added or removed matches, the miss is a 308 redirect to that path
      (query kept), which tether's and websockets' clients follow; ``redirect_slashes=False``
      turns that into a plain 404.
    - Routes are tried in the order they were added; the first match wins.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from .http11 import Response
from .server import ServerProtocol

__all__ = ["Match", "Miss", "Route", "Router"]

H = TypeVar("H")

# {name} or {name:converter}; a name is a Python identifier (handlers get it as a keyword).
_PLACEHOLDER_RE = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")
_CONVERTERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "str": (r"[^/]+", str),
    "int": (r"[0-9]{1,18}", int),
    "path": (r".+", str),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Route(Generic[H]):
    """One pattern, compiled, and its handler."""

    pattern: str
    handler: H
    regex: re.Pattern[str]
    converters: tuple[tuple[str, Callable[[str], Any]], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Match(Generic[H]):
    """A route matched: call ``route.handler(ws, **params)``."""

    route: Route[H]
    params: dict[str, Any]

    @property
    def handler(self) -> H:
        return self.route.handler


@dataclasses.dataclass(frozen=True, slots=True)
class Miss:
    """No route matched: answer ``status`` with ``text`` (and ``location`` for a 308)."""

    status: int
    text: str
    location: str | None = None


def _compile(pattern: str) -> tuple[re.Pattern[str], tuple[tuple[str, Callable[[str], Any]], ...]]:
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern must start with '/': {pattern!r}")
    parts: list[str] = []
    converters: list[tuple[str, Callable[[str], Any]]] = []
    position = 0
    for placeholder in _PLACEHOLDER_RE.finditer(pattern):
        literal = pattern[position : placeholder.start()]
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced brace in route pattern {pattern!r}")
        parts.append(re.escape(literal.replace("%", "%25")))
        name, converter = placeholder.group(1), placeholder.group(2) or "str"
        if not name.isidentifier():
            raise ValueError(f"invalid parameter name {name!r} in route pattern {pattern!r}")
        if name in {n for n, _ in converters}:
            raise ValueError(f"parameter {name!r} appears twice in route pattern {pattern!r}")
        if converter not in _CONVERTERS:
            known = ", ".join(_CONVERTERS)
            raise ValueError(
                f"unknown converter {converter!r} in route pattern {pattern!r}; known: {known}"
            )
        if converter == "path" and placeholder.end() != len(pattern):
            raise ValueError(f"{{{name}:path}} must end the route pattern {pattern!r}")
        regex, convert = _CONVERTERS[converter]
        parts.append(f"(?P<{name}>{regex})")
        converters.append((name, convert))
        position = placeholder.end()
    literal = pattern[position:]
    if "{" in literal or "}" in literal:
        raise ValueError(f"unbalanced brace in route pattern {pattern!r}")
    parts.append(re.escape(literal.replace("%", "%25")))
    return re.compile("".join(parts), re.DOTALL), tuple(converters)


def _normalise(raw: str) -> str:
    """Percent-decode each segment, keeping ``%`` and ``/`` encoded inside segments.

    After this, a ``/`` is always a separator and every other character stands for itself, so
    a pattern (written decoded) matches with a plain regex.

    Raises:
        ValueError: a segment is not valid UTF-8 once decoded.
    """
    segments: list[str] = []
    for segment in raw.split("/"):
        try:
            decoded = urllib.parse.unquote(segment, errors="strict")
        except UnicodeDecodeError:
            raise ValueError(f"invalid percent-encoding in path segment {segment!r}") from None
        segments.append(decoded.replace("%", "%25").replace("/", "%2F"))
    return "/".join(segments)


_ESCAPED_RE = re.compile("%25|%2F")


def _unescape(value: str) -> str:
    return _ESCAPED_RE.sub(lambda m: "%" if m.group() == "%25" else "/", value)


class Router(Generic[H]):
    """Path patterns and their handlers, tried in order.

    ::

        router = Router()

        @router.route("/chat/{room}")
        async def chat(ws, room): ...

        router.add("/users/{id:int}", user)
    """

    def __init__(
        self,
        routes: Iterable[tuple[str, H]] = (),
        *,
        redirect_slashes: bool = True,
    ) -> None:
        self.routes: list[Route[H]] = []
        self.redirect_slashes = redirect_slashes
        for pattern, handler in routes:
            self.add(pattern, handler)

    def add(self, pattern: str, handler: H) -> None:
        """Add a route.

        Raises:
            ValueError: the pattern does not start with ``/``, has an unknown converter, a
                parameter name that is not an identifier or appears twice, or a stray brace.
        """
        regex, converters = _compile(pattern)
        self.routes.append(Route(pattern, handler, regex, converters))

    def route(self, pattern: str) -> Callable[[H], H]:
        """A decorator form of :meth:`add`."""

        def decorator(handler: H) -> H:
            self.add(pattern, handler)
            return handler

        return decorator

    def match(self, path: str) -> Match[H] | None:
        """The first route matching the path part of ``path`` (query ignored), or ``None``.

        Raises:
            ValueError: a segment is not valid UTF-8 once percent-decoded.
        """
        return self._match_raw(path.partition("?")[0])

    def _match_raw(self, raw: str) -> Match[H] | None:
        text = _normalise(raw)
        for route in self.routes:
            found = route.regex.fullmatch(text)
            if found is not None:
                params = {
                    name: convert(_unescape(found.group(name)))
                    for name, convert in route.converters
                }
                return Match(route, params)
        return None

    def resolve(self, path: str) -> Match[H] | Miss:
        """Route a request: a :class:`Match`, or the :class:`Miss` to answer with.

        ``path`` is the origin-form target (``Request.path``): path and query.
        """
        raw, question, query = path.partition("?")
        try:
            found = self._match_raw(raw)
            if found is not None:
                return found
            if self.redirect_slashes and raw != "/":
                other = raw[:-1] if raw.endswith("/") else raw + "/"
                if self._match_raw(other) is not None:
                    location = other + question + query
                    return Miss(308, f"{raw} moved to {other}", location)
        except ValueError as exc:
            return Miss(400, f"Bad request path {raw}: {exc}.")
        return Miss(404, f"No WebSocket route for path {raw}")

    def answer(self, protocol: ServerProtocol, path: str) -> Match[H] | Response:
        """Route a request for a server: the :class:`Match`, or the response to send instead.

        A :class:`Miss` becomes ``protocol.reject(status, text)`` (with ``Location`` on a 308),
        so the response carries the server's headers and ``Connection: close``.
        """
        found = self.resolve(path)
        if isinstance(found, Miss):
            headers = [] if found.location is None else [("Location", found.location)]
            return protocol.reject(found.status, found.text, headers)
        return found
