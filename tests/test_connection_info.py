"""ConnectionInfo's id and log prefix, made on first use (issue 13: no uuid4 per connection)."""

from __future__ import annotations

import logging
import uuid
from typing import Any, cast

import pytest

from tether.connection_info import ConnectionInfo, ConnectionLogger
from tether.sansio.protocol import Protocol, Side


class Info(ConnectionInfo):
    def __init__(self, peer: str = "-", given: uuid.UUID | None = None) -> None:
        self.protocol = Protocol(Side.SERVER)
        if given is not None:
            self.id = given  # before the logger, as tether.sync does
        self._set_logger(logging.getLogger("tether.test"), peer)


def extra(info: ConnectionInfo) -> dict[str, Any]:
    assert isinstance(info.logger, ConnectionLogger)
    return cast(dict[str, Any], info.logger.extra)


def test_id_is_made_on_first_use_and_is_the_log_prefix(caplog: pytest.LogCaptureFixture) -> None:
    info = Info()
    assert "uuid" not in extra(info)
    ident = info.id
    assert info.id is ident and ident.version == 4
    with caplog.at_level(logging.INFO, "tether.test"):
        info.logger.info("hello")
    assert caplog.messages == [f"[{str(ident)[:8]} -] hello"]


def test_first_line_makes_the_id_and_formats_the_peer(caplog: pytest.LogCaptureFixture) -> None:
    info = Info()
    extra(info)["peer"] = ("127.0.0.1", 8765)
    with caplog.at_level(logging.INFO, "tether.test"):
        info.logger.info("one")
        info.logger.info("two")
    prefix = f"[{str(info.id)[:8]} 127.0.0.1:8765]"
    assert caplog.messages == [f"{prefix} one", f"{prefix} two"]


def test_an_id_given_before_or_after_the_logger_is_the_one_logged() -> None:
    given = uuid.uuid4()
    assert Info(given=given).id == given
    info = Info()
    other = uuid.uuid4()
    info.id = other
    assert info.id == other
    assert extra(info)["id"] == str(other)[:8]


def test_a_replaced_logger_keeps_an_id_of_its_own() -> None:
    info = Info()
    info.logger = logging.getLogger("tether.test")
    ident = info.id
    assert info.id == ident
