"""What ``connect`` and ``inspect`` share: text from the network made safe to print on a
terminal, and the TLS context of ``--insecure``."""

from __future__ import annotations

import ssl
import unicodedata

__all__ = ["client_ssl", "printable"]

# Characters that must never reach a terminal as they are: C0 and C1 controls, DEL, and the
# bidirectional formatting characters that can make text read differently from what it is.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with terminal control characters escaped (``\\x1b``, ``\\n``, ``\\u202e``).

    Everything that comes from the network goes through this before it is printed, so that a
    peer cannot move the cursor, change colours, rewrite the title or reorder what we show.
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif unicodedata.category(char) == "Cc" or char in _BIDI or char in "\u2028\u2029":
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def client_ssl(insecure: bool) -> ssl.SSLContext:
    """The client TLS context: verified as usual, or accepting any certificate (``--insecure``)."""
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
