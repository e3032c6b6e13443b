"""Evidence for the compile decision: the same tether source, pure Python or compiled.

Builds scratch copies of ``src/tether`` (never touching the source tree) under
``~/.cache/tether-bench/variants/`` and measures them:

- ``pure``: today's tree as it is (pure Python plus the C masking helper, if built in place);
- ``mypyc``: the sans-I/O modules compiled with mypyc (``masking.py`` left out: its
  ``MaskSource`` needs ``__weakref__``; ``http11.MultipleValuesError`` marked non-native, since
  mypyc cannot compile a native subclass of ``KeyError``; both are patches to the scratch copy);
- ``cython``: the same modules compiled unchanged by Cython in pure-Python mode (``cythonize``
  on the ``.py`` files);
- ``cython-io``: ``cython`` plus ``asyncio/connection.py`` and ``asyncio/server.py``, to see
  what compiling the asyncio layer would give.

Measures (``callgrind``: instructions, deterministic on a busy machine; needs valgrind):
instructions per echoed message (``echo_micro.py --fixed``) at 16 B, 1 KiB and 64 KiB, and per
connection opened and closed by the sans-I/O server (``handshake_micro.py --fixed``), with and
without permessage-deflate.

Usage::

    python bench/compile_variants.py build [VARIANT ...]      # default: all
    python bench/compile_variants.py callgrind [VARIANT ...]  # prints the table
    python bench/compile_variants.py callgrind pure=src compiled=DIR   # any two trees
    python bench/compile_variants.py path VARIANT             # the directory, for --tether-src
    python bench/compile_variants.py test VARIANT             # the test suite against it

A variant's directory is importable: ``python bench/compare.py --tether-alt $(python
bench/compile_variants.py path cython)`` runs the end-to-end table with it as an extra column.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "tether"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tether-bench"
ROOT = CACHE / "variants"
BIN = Path(sys.executable).parent

SANSIO = [
    "sansio/frames.py",
    "sansio/protocol.py",
    "sansio/http11.py",
    "sansio/headers.py",
    "sansio/handshake.py",
    "sansio/server.py",
    "sansio/client.py",
    "sansio/events.py",
    "sansio/codes.py",
    "sansio/streams.py",
]
CYTHON_EXTRA = ["sansio/masking.py"]
IO = ["asyncio/connection.py", "asyncio/server.py"]
VARIANTS = ("pure", "mypyc", "cython", "cython-io")

ECHO_SIZES = ("16", "1k", "64k")
ROUND_TRIPS = 2000
CONNECTIONS = 1000


def variant_dir(name: str) -> Path:
    return ROOT / name


def build(name: str) -> None:
    target = variant_dir(name)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copytree(SRC, target / "tether", ignore=shutil.ignore_patterns("__pycache__"))
    if name == "pure":
        return
    if name == "mypyc":
        http11 = target / "tether/sansio/http11.py"
        text = http11.read_text()
        text = text.replace(
            "class MultipleValuesError(KeyError):",
            "from mypy_extensions import mypyc_attr\n\n\n"
            "@mypyc_attr(native_class=False)\nclass MultipleValuesError(KeyError):",
        )
        http11.write_text(text)
        modules = [f"tether/{m}" for m in SANSIO]
        run([str(BIN / "mypyc"), *modules], cwd=target)
    else:
        modules = [f"tether/{m}" for m in SANSIO + CYTHON_EXTRA]
        if name == "cython-io":
            modules += [f"tether/{m}" for m in IO]
        run([str(BIN / "cythonize"), "-i", "-3", "-j", "2", *modules], cwd=target)
    shutil.rmtree(target / "build", ignore_errors=True)
    for module in modules:  # the compiled module must be what is imported, not the .py
        compiled = list((target / Path(module).parent).glob(Path(module).stem + ".*.so"))
        if not compiled:
            raise SystemExit(f"{name}: {module} was not compiled")


def run(args: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(args), file=sys.stderr)
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def instructions(args: list[str]) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", out.stderr)
    if not match:
        raise RuntimeError(out.stderr[-2000:])
    return int(match.group(1))


def per_unit(script: str, src: Path, extra: list[str], n: int) -> float:
    base = [str(HERE / script), "--tether-src", str(src), *extra]
    return (instructions([*base, "--fixed", str(n)]) - instructions([*base, "--fixed", "0"])) / n


def callgrind(names: list[str]) -> None:
    rows = []
    for name in names:
        if "=" in name:  # LABEL=DIR: a tree given by the caller (the installed compiled wheel)
            name, _, where = name.partition("=")
            src = Path(where).resolve()
        else:
            src = variant_dir(name)
            if not src.exists():
                build(name)
        row = [name]
        for size in ECHO_SIZES:
            row.append(per_unit("echo_micro.py", src, ["--sizes", size], ROUND_TRIPS))
        row.append(per_unit("handshake_micro.py", src, [], CONNECTIONS))
        row.append(per_unit("handshake_micro.py", src, ["--deflate"], CONNECTIONS))
        rows.append(row)
        print(f"  {name}: {', '.join(f'{v:,.0f}' for v in row[1:])}", file=sys.stderr)
    head = ["variant", *(f"echo {s}" for s in ECHO_SIZES), "open+close", "open+close deflate"]
    print("instructions per echoed message / per connection (callgrind; lower is better)")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    pure = rows[0] if rows[0][0] == "pure" else None
    for row in rows:
        cells = []
        for i, value in enumerate(row[1:], 1):
            cell = f"{value:,.0f}"
            if pure is not None and row is not pure:
                cell += f" ({value / pure[i] - 1:+.0%})"
            cells.append(cell)
        print(f"| {row[0]} | " + " | ".join(cells) + " |")


def test(name: str) -> None:
    """The whole test suite with the variant's tether first on the path."""
    src = variant_dir(name)
    if not src.exists():
        build(name)
    env = dict(os.environ, PYTHONPATH=str(src))
    check = "import tether.sansio.protocol as p; print('testing', p.__file__)"
    subprocess.run([sys.executable, "-c", check], env=env, check=True)
    code = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        env=env,
        cwd=HERE.parent,
    ).returncode
    raise SystemExit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "callgrind", "path", "test"))
    parser.add_argument("variants", nargs="*")
    args = parser.parse_args()
    names = args.variants or list(VARIANTS)
    for name in names:
        if name not in VARIANTS and not (args.command == "callgrind" and "=" in name):
            parser.error(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    if args.command == "build":
        for name in names:
            build(name)
    elif args.command == "callgrind":
        callgrind(names)
    elif args.command == "path":
        print(variant_dir(names[0]))
    else:
        test(names[0])


if __name__ == "__main__":
    main()
