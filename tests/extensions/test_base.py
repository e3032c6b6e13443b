"""The extension base class: what an extension that does not override a default gets."""

from __future__ import annotations

import pytest

from tether.extensions.base import Extension
from tether.sansio.codes import Opcode
from tether.sansio.frames import Frame
from tether.typing import ExtensionName


def test_an_extension_by_default_cannot_share_a_broadcast_encoding() -> None:
    class Identity(Extension):
        name = ExtensionName("x-identity")

        def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
            return frame

        def encode(self, frame: Frame) -> Frame:
            return frame

    extension = Identity()
    assert extension.broadcast_key(10) is None
    with pytest.raises(NotImplementedError, match="Identity does not encode for broadcast"):
        extension.encode_for_broadcast(Frame(Opcode.TEXT, b"hi"))
