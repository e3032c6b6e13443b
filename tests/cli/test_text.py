"""printable(): what the commands print of network text."""

from __future__ import annotations

from tether.cli.text import printable


def test_printable_escapes_terminal_controls_only() -> None:
    assert printable("héllo wörld ✓") == "héllo wörld ✓"
    assert printable("a\x1b[31mb\x07\n\t\x7f\x9b") == "a\\x1b[31mb\\x07\\n\\t\\x7f\\x9b"
    assert printable("abc\u202edef\u2066") == "abc\\u202edef\\u2066"
