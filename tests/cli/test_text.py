"""printable(): what the commands print of network text; client_ssl(): --insecure."""

from __future__ import annotations

import ssl

from tether.cli.text import client_ssl, printable


def test_printable_escapes_terminal_controls_only() -> None:
    assert printable("héllo wörld ✓") == "héllo wörld ✓"
    assert printable("a\x1b[31mb\x07\n\t\x7f\x9b") == "a\\x1b[31mb\\x07\\n\\t\\x7f\\x9b"
    assert printable("abc\u202edef\u2066") == "abc\\u202edef\\u2066"


def test_client_ssl_verifies_unless_insecure() -> None:
    verified = client_ssl(False)
    assert (verified.check_hostname, verified.verify_mode) == (True, ssl.CERT_REQUIRED)
    insecure = client_ssl(True)
    assert (insecure.check_hostname, insecure.verify_mode) == (False, ssl.CERT_NONE)
