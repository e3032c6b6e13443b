"""The synchronous examples of README.md and docs/sync.md run as written (against a server on
an ephemeral port instead of 8765)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from helpers.sync_server import running
from tether.sync import ServerConnection

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def client_examples() -> list[tuple[str, str]]:
    examples = []
    for name in ("README.md", "docs/sync.md"):
        for block in BLOCK.findall((ROOT / name).read_text()):
            if "from tether.sync import connect" in block:
                examples.append((name, block))
    return examples


def echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "source"), client_examples(), ids=lambda v: str(v)[:20])
def test_synchronous_client_example_runs(name: str, source: str) -> None:
    assert len(source.strip().splitlines()) <= 5, f"{name}: the example grew past five lines"
    with running(echo) as server:
        code = source.replace(":8765/", f":{server.port_number}/")
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(code, name, "exec"), {})
    assert output.getvalue() == "hello\n"


def test_there_are_examples() -> None:
    assert {name for name, _ in client_examples()} == {"README.md", "docs/sync.md"}
