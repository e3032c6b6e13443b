"""Run uvicorn's own WebSocket tests against tether's protocol class, beside uvicorn's two.

What it does, every run:

1. downloads the pinned uvicorn source distribution from PyPI once (``pip download
   --no-binary :all: --no-deps``) into ``asgi_conformance/.cache/``;
2. builds (once per requirement set) a virtualenv there with the test requirements below,
   pinned;
3. extracts the sdist into a temporary folder and makes one mechanical edit: in
   ``tests/conftest.py`` the ``ws_protocol_cls`` fixture gets a third parameter,
   ``pytest.param("tether.asgi:UvicornProtocol", id="tether")``, beside ``wsproto`` and
   ``websockets-sansio``. No test is edited;
4. runs ``tests/protocols/test_websocket.py`` with this tree's ``src/`` first on
   ``PYTHONPATH`` (the tether under test), and reads pytest's JUnit XML;
5. prints passed/failed/skipped per WebSocket protocol class, lists every tether test that did
   not pass with the reason it cannot apply, and exits non-zero when a tether test fails that
   is not on that list, or when a listed test does not fail for the stated reason.

Usage: ``python asgi_conformance/run.py [-k EXPR] [-n WORKERS]`` (``make asgi-conformance``).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
import xml.etree.ElementTree as ET
from pathlib import Path

UVICORN_VERSION = "0.55.0"

#: What uvicorn's conftest.py and tests/protocols/test_websocket.py import, pinned to the
#: versions this was last run with (uvicorn's own dev group pins some of the same).
REQUIREMENTS = [
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",
    "pytest-mock==3.17.0",
    "anyio==4.16.0",
    "httpx2==2.16.2",
    "websockets==17.4",
    "wsproto==1.3.2",
    "h11==0.16.0",
    "httptools==0.9.0",
    "zttp==0.0.35",
    "click==8.5.1",
    "trustme==1.2.1",
    "cryptography==50.0.2",
]

WS_CLASSES = ("tether", "websockets-sansio", "wsproto")
TETHER_PARAM = '        pytest.param("tether.asgi:UvicornProtocol", id="tether"),\n'
SANSIO_PARAM = re.compile(
    r'^( *)pytest\.param\(\s*"uvicorn\.protocols\.websockets\.websockets_sansio_impl:'
    r'WebSocketsSansIOProtocol",\s*id="websockets-sansio"\s*\),\n',
    re.MULTILINE,
)

#: Tests that cannot apply to a third-party class, with the reason and a text that must
#: appear in the failure (so a failure for any other reason is still reported).
NOT_APPLICABLE = {
    "test_server_keepalive_ping_pong": (
        "asserts isinstance(protocol, (WSProtocol, WebSocketsSansIOProtocol)), uvicorn's own "
        "classes, before looking at the keepalive "
        "(tests/asgi/test_asgi_uvicorn.py checks tether's)",
        "isinstance(",
    ),
    "test_server_keepalive_disabled": (
        "same isinstance check against uvicorn's own classes "
        "(tests/asgi/test_asgi_uvicorn.py checks tether's)",
        "isinstance(",
    ),
}

#: Tests of the file that are not parametrized over ws_protocol_cls (they never run tether).
HARD_WIRED = {
    "test_unparseable_upgrade_closes_connection": "uses WebSocketsSansIOProtocol only "
    "(tests/asgi/test_asgi_uvicorn.py: the same requests against tether: 431 and 400)",
    "test_send_binary_data_to_server_bigger_than_default_on_websockets": "uses "
    "WebSocketsSansIOProtocol only (tests/asgi/test_asgi_uvicorn.py: ws_max_size against tether)",
}

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
LOG = CACHE / "last-run.log"


def _run(cmd: list[str], **kwargs: object) -> None:
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def fetch_sdist() -> Path:
    target = CACHE / f"uvicorn-{UVICORN_VERSION}.tar.gz"
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"uvicorn=={UVICORN_VERSION}",
                "-d",
                str(CACHE),
            ]
        )
    return target


def ensure_venv() -> Path:
    """A virtualenv with the test requirements (rebuilt when they change)."""
    key = hashlib.sha256("\n".join([sys.version, *REQUIREMENTS]).encode()).hexdigest()[:12]
    env = CACHE / "venv"
    stamp = env / f".installed-{key}"
    python = env / "bin" / "python"
    if not stamp.exists():
        shutil.rmtree(env, ignore_errors=True)
        venv.EnvBuilder(with_pip=True).create(env)
        _run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS])
        stamp.touch()
    return python


def extract(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    tree = into / f"uvicorn-{UVICORN_VERSION}"
    conftest = tree / "tests" / "conftest.py"
    text = conftest.read_text()
    found = SANSIO_PARAM.findall(text)
    if len(found) != 1:
        raise SystemExit(
            f"{conftest}: expected one websockets-sansio parameter of ws_protocol_cls, found "
            f"{len(found)}; uvicorn {UVICORN_VERSION}'s conftest changed, update this script"
        )
    conftest.write_text(SANSIO_PARAM.sub(lambda m: m.group(0) + TETHER_PARAM, text, count=1))
    return tree


def run_tests(python: Path, tree: Path, junit: Path, workers: str, select: str | None) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [
        str(python),
        "-m",
        "pytest",
        "tests/protocols/test_websocket.py",
        # uvicorn's addopts (-n 8, -rxXs, strict markers) with our worker count.
        "-o",
        f"addopts=-rxXs --strict-config --strict-markers -n {workers}",
        "-p",
        "no:cacheprovider",
        "-q",
        "--tb=short",
        f"--junitxml={junit}",
    ]
    if select:
        cmd += ["-k", select]
    # pytest's own summary ("6 failed, 660 passed": the not-applicable tests count as
    # failures there) goes to a log; the report below is what this run says.
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("w") as log:
        code = subprocess.run(
            cmd, cwd=tree, env=env, check=False, stdout=log, stderr=subprocess.STDOUT
        ).returncode
    print(f"pytest's output is in {LOG} (it exited {code})")
    return code


def classify(name: str) -> str:
    match = re.search(r"\[(.*)\]$", name)
    params = match.group(1) if match else ""
    for cls in WS_CLASSES:
        if (
            params == cls
            or params.startswith(cls + "-")
            or params.endswith("-" + cls)
            or f"-{cls}-" in params
        ):
            return cls
    return "not parametrized"


def report(junit: Path) -> int:
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    problems: list[str] = []
    not_applicable: dict[str, list[str]] = collections.defaultdict(list)
    hard_wired: set[str] = set()
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        base = name.split("[", 1)[0]
        cls = classify(name)
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        outcome = "passed"
        if failure is not None:
            outcome = "failed"
        elif skipped is not None:
            outcome = "skipped"
        counts[cls][outcome] += 1
        if cls == "not parametrized":
            hard_wired.add(base)
            continue
        if cls != "tether":
            continue
        if base in NOT_APPLICABLE:
            marker = NOT_APPLICABLE[base][1]
            text = "" if failure is None else (failure.get("message", "") + (failure.text or ""))
            if outcome != "failed" or marker not in text:
                problems.append(f"{name}: listed as not applicable ({marker}) but {outcome}")
            else:
                not_applicable[base].append(name)
        elif outcome != "passed":
            detail = ""
            if failure is not None:
                detail = failure.get("message", "").splitlines()[0][:200]
            elif skipped is not None:
                detail = skipped.get("message", "")
            problems.append(f"{name}: {outcome} {detail}")

    print(f"\nuvicorn {UVICORN_VERSION} tests/protocols/test_websocket.py, per WebSocket class:")
    print(f"  {'class':<20} {'passed':>7} {'failed':>7} {'skipped':>8}")
    for cls in (*WS_CLASSES, "not parametrized"):
        c = counts.get(cls, collections.Counter())
        print(f"  {cls:<20} {c['passed']:>7} {c['failed']:>7} {c['skipped']:>8}")
    print("\ntether tests that cannot apply (they fail for the reason given, checked):")
    for base, names in sorted(not_applicable.items()):
        print(f"  {base} ({len(names)}x): {NOT_APPLICABLE[base][0]}")
    print("tests not parametrized over ws_protocol_cls (never run tether):")
    for base in sorted(hard_wired):
        print(f"  {base}: {HARD_WIRED.get(base, 'not listed in run.py')}")
    tether = counts["tether"]
    failed = len(problems)
    print(f"\ntether: {tether['passed']} passed, {failed} failed")
    if problems:
        print(f"{len(problems)} tether problem(s) (details in {LOG}):")
        for line in problems:
            print(f"  {line}")
        return 1
    if not counts["tether"]["passed"]:
        print("\nno tether test ran")
        return 1
    print("every applicable test passed for tether")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="select", help="pytest -k expression")
    parser.add_argument("-n", dest="workers", default="8", help="pytest-xdist workers (8)")
    args = parser.parse_args()
    started = time.monotonic()
    sdist = fetch_sdist()
    python = ensure_venv()
    prepared = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tether-uvicorn-") as tmp:
        tree = extract(sdist, Path(tmp))
        junit = Path(tmp) / "junit.xml"
        code = run_tests(python, tree, junit, args.workers, args.select)
        if not junit.exists():
            print(f"pytest exited {code} without a report")
            return code or 1
        status = report(junit)
    done = time.monotonic()
    print(
        f"time: {done - started:.1f} s ({prepared - started:.1f} s preparing, "
        f"{done - prepared:.1f} s testing)"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
