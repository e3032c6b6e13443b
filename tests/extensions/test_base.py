"""The extension base class: what an extension that does not take part in compress-once
broadcast inherits."""

from __future__ import annotations

import pytest

from tether.extensions.base import Extension
from tether.sansio.codes import Opcode
from tether.sansio.frames import Frame
from tether.typing import ExtensionName


class Identity(Extension):
    name = ExtensionName("x-identity")

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


def test_an_extension_opts_out_of_broadcast_encoding_by_default() -> None:
    extension = Identity()
    assert extension.broadcast_key(10) is None
    frame = Frame(Opcode.TEXT, b"hello")
    with pytest.raises(NotImplementedError, match="Identity does not encode for broadcast"):
        extension.encode_for_broadcast(frame)
    assert extension.encode(frame) is frame
    assert repr(extension) == "<Identity x-identity>"
