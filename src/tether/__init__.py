"""tether: a correct, fast and observable WebSocket library (RFC 6455, RFC 7692)."""

from __future__ import annotations

__version__ = "0.1.0"
