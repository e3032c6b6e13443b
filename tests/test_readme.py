"""The README's example is ``examples/readme_echo.py``, verbatim (``make dist`` runs the file
against each built wheel)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_example_is_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", readme, flags=re.MULTILINE | re.DOTALL)
    assert blocks, "README.md has no python block"
    assert blocks[0] == (ROOT / "examples" / "readme_echo.py").read_text()
