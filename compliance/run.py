#!/usr/bin/env python3
"""Run the Autobahn Testsuite against tether, or another testee, and judge the results.

    python compliance/run.py [--mode server|client|both] [--with-perf] [--agent NAME]
                             [--server-cmd CMD] [--client-cmd CMD] [--timeout SECONDS]

Server mode: start the testee echo server (compliance/server.py by default) on 127.0.0.1, then
the suite's ``wstest -m fuzzingclient`` against it. Client mode: start the suite's
``wstest -m fuzzingserver`` on 127.0.0.1, then the testee client (compliance/client.py).
Then read the suite's reports/servers/index.json or reports/clients/index.json and print:

* one line per case whose behaviour or closing behaviour is not OK, marked FAIL when it counts
  against the run (NON-STRICT, FAILED, UNIMPLEMENTED, NO_CLOSE, a case missing from the
  results), "info" for INFORMATIONAL and "close" for a closing behaviour that is only noted;
* totals per section, and the run's wall time;
* with --with-perf, the time each section 9 case took.

It writes a baseline, one line per case (id, behavior, behaviorClose), to
compliance/results-<mode>.txt (results-<mode>-<agent>.txt for an agent other than "tether"),
and exits 0 when every case is OK or INFORMATIONAL, 1 when some case is worse, 2 when the harness
itself could not run (suite not installed, port taken, testee crashed at start, time-out).

Commands given with --server-cmd / --client-cmd are split like a shell would and may use
{python} (this interpreter), {port} (server mode), {url} and {agent} (client mode); they run
from the repository root. Every process started here is ended on the way out.

The suite must be installed first: ``bash compliance/install.sh`` (``make conformance`` does it).
This script uses the standard library only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REPORTS = HERE / "reports"
PYTHON27 = Path(os.environ.get("AUTOBAHN_VENV", HERE / ".venv27")) / "bin" / "python"
WSTEST = HERE / "wstest_local.py"
HOST = "127.0.0.1"

#: Behaviours that pass. Anything else, or a case absent from the results, fails the run.
PASSING = frozenset({"OK", "INFORMATIONAL"})
#: Closing behaviours that --strict-close also counts as failures.
CLOSE_FAILURES = frozenset({"FAILED", "UNCLEAN", "WRONG CODE"})
MISSING = "MISSING"
#: Column order of the totals table; behaviours the suite adds later are appended.
COLUMNS = ["OK", "INFORMATIONAL", "NON-STRICT", "FAILED", "UNIMPLEMENTED", "NO_CLOSE", MISSING]

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


class HarnessError(Exception):
    """The run could not be carried out; results, if any, are not to be trusted."""


@dataclass
class Mode:
    name: str  # "server" or "client": the role the testee plays
    spec: Path  # committed spec template
    outdir: Path  # where the suite writes its reports
    wstest_mode: str

    def results_file(self, agent: str) -> Path:
        suffix = "" if agent == "tether" else f"-{agent}"
        return HERE / f"results-{self.name}{suffix}.txt"


SERVER = Mode("server", HERE / "fuzzingclient.json", REPORTS / "servers", "fuzzingclient")
CLIENT = Mode("client", HERE / "fuzzingserver.json", REPORTS / "clients", "fuzzingserver")


@dataclass
class CaseResult:
    case: str
    behavior: str
    behavior_close: str
    close_code: int | None = None
    duration_ms: int | None = None
    report_file: str | None = None

    @property
    def key(self) -> tuple[int, ...]:
        return case_key(self.case)


@dataclass
class Execution:
    """What happened while a mode ran: the two processes (for their CPU time) and notes."""

    notes: list[str] = field(default_factory=list)
    suite: Process | None = None
    testee: Process | None = None

    def cpu_summary(self) -> str:
        def cpu(process: Process | None) -> str:
            if process is None or process.cpu_time is None:
                return "?"
            return f"{process.cpu_time:.1f} s"

        return f"CPU: suite {cpu(self.suite)}, testee {cpu(self.testee)}"


@dataclass
class Outcome:
    mode: Mode
    agent: str
    results: list[CaseResult]
    wall_time: float
    strict_close: bool
    run: Execution

    def fails(self, result: CaseResult) -> bool:
        if result.behavior not in PASSING:
            return True
        return self.strict_close and result.behavior_close in CLOSE_FAILURES

    @property
    def failures(self) -> list[CaseResult]:
        return [result for result in self.results if self.fails(result)]


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def show(path: Path) -> str:
    """A path as the user typed it from the repository root, where possible."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def log(message: str) -> None:
    print(message, flush=True)


# Processes ------------------------------------------------------------------------------------


class Process:
    """A child in its own process group, with its output in a log file, ended on ``stop()``."""

    running: list[Process] = []

    def __init__(self, label: str, argv: list[str], cwd: Path, log_path: Path) -> None:
        self.label = label
        self.argv = argv
        self.log_path = log_path
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log_path, "wb") as log_file:
            try:
                self.popen = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise HarnessError(f"cannot start {label} ({shlex.join(argv)}): {exc}") from exc
        self.cpu_time: float | None = None
        Process.running.append(self)

    def poll(self) -> int | None:
        """The exit code once the process has ended, else ``None``.

        We reap the child ourselves with ``wait4`` to learn the CPU time it used: on a busy
        machine the wall time says little, the CPU time of the suite and of the testee more.
        """
        if self.popen.returncode is None:
            pid, status, usage = os.wait4(self.popen.pid, os.WNOHANG)
            if pid:
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_time = usage.ru_utime + usage.ru_stime
        return self.popen.returncode

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.poll()

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the whole group, SIGKILL after ``grace`` seconds."""
        if self in Process.running:
            Process.running.remove(self)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            self.wait(grace)
        # The group may outlive its leader (a grandchild of the testee, say).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    @classmethod
    def stop_all(cls) -> None:
        for process in list(cls.running):
            process.stop(grace=2.0)


def on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(f"interrupted by signal {signum}")


def ensure_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do, so that connections of an earlier run in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise HarnessError(
                f"{HOST}:{port} is already in use ({exc.strerror}); stop whatever listens there"
            ) from exc


def wait_for_port(port: int, process: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HarnessError(
                f"{process.label} exited with code {process.poll()} before listening on "
                f"{HOST}:{port}; its output ({show(process.log_path)}):\n{process.tail()}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise HarnessError(f"{process.label} did not listen on {HOST}:{port} within {timeout:.0f} s")


class Progress:
    """Counts the suite's "Running test case ID" lines to report progress now and then."""

    MARK = b"Running test case ID "

    def __init__(self, label: str, log_path: Path, total: int, every: float) -> None:
        self.label = label
        self.log_path = log_path
        self.total = total
        self.every = every
        self.offset = 0
        self.count = 0
        self.last_case = ""
        self.started = time.monotonic()
        self.next_report = self.started + every

    def update(self) -> None:
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(self.offset)
                data = log_file.read()
        except OSError:
            return
        # Only count whole lines; keep a partial last line for the next read.
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            if line.startswith(self.MARK):
                self.count += 1
                self.last_case = line[len(self.MARK) :].split(b" ", 1)[0].decode(errors="replace")
        self.offset += end
        now = time.monotonic()
        if now >= self.next_report:
            self.next_report = now + self.every
            log(
                f"  [{self.label}] {self.count}/{self.total} cases started, now {self.last_case}, "
                f"{now - self.started:.0f} s"
            )


def wait_with_progress(process: Process, progress: Progress, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        progress.update()
        if code is not None:
            return code
        if time.monotonic() > deadline:
            raise HarnessError(
                f"{process.label} still running after {timeout:.0f} s (at case "
                f"{progress.last_case or '?'}); ended it. Output: {show(process.log_path)}"
            )
        time.sleep(0.5)


# Specs and results ------------------------------------------------------------------------------


def prepare_spec(mode: Mode, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The committed spec, adjusted for this run, written under reports/."""
    spec = json.loads(mode.spec.read_text())
    spec["outdir"] = str(mode.outdir)
    if args.with_perf:
        spec["exclude-cases"] = [p for p in spec.get("exclude-cases", []) if not p.startswith("9")]
    if args.cases:
        spec["cases"] = args.cases.split(",")
    if args.exclude:
        spec["exclude-cases"] = [*spec.get("exclude-cases", []), *args.exclude.split(",")]
    if mode is SERVER:
        for server in spec["servers"]:
            server["agent"] = args.agent
            server["url"] = f"ws://{HOST}:{args.server_port}"
    else:
        spec["url"] = f"ws://{HOST}:{args.fuzzingserver_port}"
    path = REPORTS / f"{mode.wstest_mode}.run.json"
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path, spec


def selected_cases(spec_path: Path) -> list[str]:
    """The case ids the spec selects, as the suite itself resolves its patterns."""
    proc = subprocess.run(
        [str(PYTHON27), str(WSTEST), "--list-cases", str(spec_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise HarnessError(f"cannot list the suite's cases:\n{proc.stderr.strip()}")
    cases = proc.stdout.split()
    if not cases:
        raise HarnessError(f"the spec {spec_path} selects no case")
    return cases


def read_index(mode: Mode, agent: str, expected: list[str], notes: list[str]) -> list[CaseResult]:
    """Results for every expected case, MISSING where the index has none."""
    index_path = mode.outdir / "index.json"
    entries: dict[str, Any] = {}
    if not index_path.exists():
        notes.append(f"no {show(index_path)}: the suite wrote no report")
    else:
        index = json.loads(index_path.read_text())
        if agent in index:
            entries = index[agent]
        elif len(index) == 1:
            (other,) = index
            notes.append(f"results are filed under agent {other!r}, not {agent!r}; using them")
            entries = index[other]
        elif index:
            notes.append(f"no results for agent {agent!r} (agents: {', '.join(sorted(index))})")
    results = []
    for case in expected:
        entry = entries.get(case)
        if entry is None:
            results.append(CaseResult(case, MISSING, MISSING))
        else:
            results.append(
                CaseResult(
                    case,
                    str(entry.get("behavior")),
                    str(entry.get("behaviorClose")),
                    entry.get("remoteCloseCode"),
                    entry.get("duration"),
                    entry.get("reportfile"),
                )
            )
    extra = sorted(set(entries) - set(expected), key=case_key)
    if extra:
        notes.append(f"ignored {len(extra)} cases outside the spec: {', '.join(extra[:10])}")
    return results


def write_baseline(outcome: Outcome, spec: dict[str, Any]) -> Path:
    path = outcome.mode.results_file(outcome.agent)
    lines = [
        f"# Autobahn Testsuite, {outcome.agent} as the {outcome.mode.name} "
        f"(wstest -m {outcome.mode.wstest_mode}); written by compliance/run.py",
        f"# cases {json.dumps(spec.get('cases'))}, "
        f"excluded {json.dumps(spec.get('exclude-cases'))}",
        "# case\tbehavior\tbehaviorClose",
    ]
    lines += [f"{r.case}\t{r.behavior}\t{r.behavior_close}" for r in outcome.results]
    path.write_text("\n".join(lines) + "\n")
    return path


# Running the modes ------------------------------------------------------------------------------


def testee_argv(template: str, values: dict[str, str]) -> list[str]:
    try:
        return [token.format_map(values) for token in shlex.split(template)]
    except (KeyError, ValueError, IndexError) as exc:
        raise HarnessError(f"bad command template {template!r}: {exc}") from exc


def wstest_argv(mode: Mode, spec_path: Path) -> list[str]:
    argv = [str(PYTHON27), str(WSTEST), "-m", mode.wstest_mode, "-s", str(spec_path)]
    if mode is CLIENT:
        argv += ["-u", "0"]  # no embedded web server
    return argv


def run_server_mode(args: argparse.Namespace, spec_path: Path, total: int) -> Execution:
    run = Execution()
    notes = run.notes
    ensure_port_free(args.server_port)
    values = {"python": sys.executable, "port": str(args.server_port), "agent": args.agent}
    testee = run.testee = Process(
        "testee server",
        testee_argv(args.server_cmd, values),
        ROOT,
        REPORTS / "server-testee.log",
    )
    try:
        wait_for_port(args.server_port, testee, args.start_timeout)
        suite = run.suite = Process(
            "wstest fuzzingclient",
            wstest_argv(SERVER, spec_path),
            HERE,
            REPORTS / "wstest-server.log",
        )
        try:
            progress = Progress("server", suite.log_path, total, args.progress_every)
            code = wait_with_progress(suite, progress, args.timeout)
            if code != 0:
                notes.append(f"wstest exited with code {code}; see {show(suite.log_path)}")
        finally:
            suite.stop()
        if testee.poll() is not None:
            notes.append(f"the testee server exited early with code {testee.poll()}")
    finally:
        testee.stop()
    return run


def request_reports(port: int, agent: str, timeout: float = 60.0) -> None:
    """Ask the fuzzingserver for its reports ourselves, as the testee should have.

    The suite writes them when the WebSocket handshake on /updateReports completes, so a bare
    handshake over a plain socket is enough; we then wait for the server to close.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /updateReports?agent={agent} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass


def run_client_mode(args: argparse.Namespace, spec_path: Path, total: int) -> Execution:
    run = Execution()
    notes = run.notes
    port = args.fuzzingserver_port
    ensure_port_free(port)
    suite = run.suite = Process(
        "wstest fuzzingserver", wstest_argv(CLIENT, spec_path), HERE, REPORTS / "wstest-client.log"
    )
    try:
        wait_for_port(port, suite, args.start_timeout)
        values = {
            "python": sys.executable,
            "url": f"ws://{HOST}:{port}",
            "agent": args.agent,
            "port": str(port),
        }
        testee = run.testee = Process(
            "testee client",
            testee_argv(args.client_cmd, values),
            ROOT,
            REPORTS / "client-testee.log",
        )
        try:
            progress = Progress("client", suite.log_path, total, args.progress_every)
            code = wait_with_progress(testee, progress, args.timeout)
            if code != 0:
                notes.append(
                    f"the testee client exited with code {code}; its output "
                    f"({show(testee.log_path)}):\n{testee.tail()}"
                )
        finally:
            testee.stop()
        index = CLIENT.outdir / "index.json"
        if not index.exists() and suite.poll() is None:
            notes.append("the testee did not ask for reports (/updateReports); run.py did")
            with contextlib.suppress(OSError):
                request_reports(port, args.agent)
        deadline = time.monotonic() + 30
        while not index.exists() and time.monotonic() < deadline and suite.poll() is None:
            time.sleep(0.2)
    finally:
        suite.stop()
    return run


def run_mode(mode: Mode, args: argparse.Namespace) -> Outcome:
    log(f"== {mode.name} mode: {args.agent} against wstest -m {mode.wstest_mode} ==")
    shutil.rmtree(mode.outdir, ignore_errors=True)
    mode.outdir.mkdir(parents=True)
    spec_path, spec = prepare_spec(mode, args)
    expected = selected_cases(spec_path)
    log(f"  {len(expected)} cases; suite log: compliance/reports/wstest-{mode.name}.log")
    started = time.monotonic()
    runner = run_server_mode if mode is SERVER else run_client_mode
    run = runner(args, spec_path, len(expected))
    wall_time = time.monotonic() - started
    results = read_index(mode, args.agent, expected, run.notes)
    outcome = Outcome(mode, args.agent, results, wall_time, args.strict_close, run)
    if all(r.behavior == MISSING for r in results):
        report(outcome, args, sys.stdout)
        raise HarnessError(f"{mode.name} mode produced no results")
    report(outcome, args, sys.stdout)
    if (args.cases or args.exclude) and not args.baseline:
        log("  baseline not written (--cases / --exclude select part of the suite)")
    else:
        baseline = write_baseline(outcome, spec)
        log(f"  baseline written to {show(baseline)}")
    return outcome


# Reporting --------------------------------------------------------------------------------------


def report(outcome: Outcome, args: argparse.Namespace, out: TextIO) -> None:
    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    for note in outcome.run.notes:
        say(f"  note: {note}")

    unusual = [
        r
        for r in outcome.results
        if r.behavior != "OK" or r.behavior_close not in ("OK", "INFORMATIONAL")
    ]
    if unusual:
        say(f"  {len(unusual)} cases not OK (FAIL counts against the run):")
    for r in unusual:
        if outcome.fails(r):
            mark = "FAIL"
        elif r.behavior == "INFORMATIONAL":
            mark = "info"
        else:
            mark = "close"
        code = "" if r.close_code is None else f"  close code {r.close_code}"
        detail = ""
        if r.report_file:
            detail = f"  (compliance/reports/{outcome.mode.outdir.name}/{r.report_file})"
        say(
            f"    {mark:5} {r.case:9} behavior {r.behavior:13} close {r.behavior_close:16}"
            f"{code}{detail}"
        )

    for line in totals_table(outcome.results):
        say("  " + line)

    if args.with_perf:
        for line in perf_table(outcome.results):
            say("  " + line)

    failures = outcome.failures
    by_kind = Counter(
        r.behavior if r.behavior not in PASSING else f"close {r.behavior_close}" for r in failures
    )
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(by_kind.items()))
    verdict = "PASS"
    if failures:
        verdict = f"FAIL: {len(failures)} cases worse than OK/INFORMATIONAL ({kinds})"
    say(f"  {outcome.mode.name} mode: {verdict}")
    say(f"  wall time {outcome.wall_time:.0f} s ({outcome.run.cpu_summary()})")


def totals_table(results: list[CaseResult]) -> list[str]:
    sections: dict[int, Counter[str]] = {}
    durations: Counter[int] = Counter()
    for r in results:
        section = r.key[0]
        sections.setdefault(section, Counter())[r.behavior] += 1
        durations[section] += r.duration_ms or 0
    overall: Counter[str] = sum(sections.values(), Counter())
    columns = [c for c in COLUMNS if overall[c]] or ["OK"]
    columns += sorted(set(overall) - set(COLUMNS))
    widths = [max(len(c), 4) for c in columns]
    header = f"{'section':>7} {'cases':>5} " + " ".join(
        f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)
    )
    lines = [
        "totals per section (time: sum of the suite's case durations):",
        f"{header} {'time':>9}",
    ]

    def row(name: str, counts: Counter[str], millis: int) -> str:
        cells = " ".join(f"{counts[c] or '':>{w}}" for c, w in zip(columns, widths, strict=True))
        return f"{name:>7} {sum(counts.values()):>5} {cells} {millis / 1000:>7.1f} s"

    for section in sorted(sections):
        lines.append(row(str(section), sections[section], durations[section]))
    lines.append(row("all", overall, sum(durations.values())))
    return lines


def perf_table(results: list[CaseResult]) -> list[str]:
    perf = [r for r in results if r.key[0] == 9]
    if not perf:
        return []
    lines = ["section 9 (performance) timings, as measured by the suite:"]
    for r in perf:
        took = "-" if r.duration_ms is None else f"{r.duration_ms} ms"
        lines.append(f"  {r.case:8} {took:>10}  {r.behavior}")
    return lines


# Command line -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run the Autobahn Testsuite against tether (or another testee).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "command templates may use {python}, {port} (server), {url} and {agent} (client);\n"
            "exit status: 0 all cases OK/INFORMATIONAL, 1 some case worse, 2 harness error"
        ),
    )
    parser.add_argument("--mode", choices=["server", "client", "both"], default="both")
    parser.add_argument("--with-perf", action="store_true", help="also run section 9 (slow)")
    parser.add_argument("--agent", default="tether", help="name the results are filed under")
    parser.add_argument(
        "--cases",
        metavar="PATTERNS",
        help="comma-separated case patterns to run instead of the spec's (e.g. '6.*,7.1.*'); "
        "exclusions still apply, and no baseline is written",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="write the baseline even though --cases / --exclude select part of the suite "
        "(for a testee whose reference run is that part, such as the sync client)",
    )
    parser.add_argument(
        "--exclude",
        metavar="PATTERNS",
        help="comma-separated case patterns to skip as well (e.g. '12.*,13.*' for a quick run "
        "without the slow compression sections); no baseline is written",
    )
    parser.add_argument(
        "--server-cmd",
        default="{python} compliance/server.py {port}",
        help="testee echo server (default: %(default)s)",
    )
    parser.add_argument(
        "--client-cmd",
        default="{python} compliance/client.py {url} {agent}",
        help="testee client (default: %(default)s)",
    )
    parser.add_argument("--server-port", type=int, default=9002, help="testee server port")
    parser.add_argument(
        "--fuzzingserver-port", type=int, default=9001, help="the suite's fuzzingserver port"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds one mode may take (default: 2400, or 7200 with --with-perf)",
    )
    parser.add_argument("--start-timeout", type=float, default=30, help=argparse.SUPPRESS)
    parser.add_argument("--progress-every", type=float, default=60, help=argparse.SUPPRESS)
    parser.add_argument(
        "--strict-close",
        action="store_true",
        help="also fail cases whose closing behaviour is FAILED, UNCLEAN or WRONG CODE",
    )
    args = parser.parse_args(argv)
    if args.timeout is None:
        args.timeout = 7200 if args.with_perf else 2400
    return args


def check_suite_installed() -> None:
    if not PYTHON27.exists():
        raise HarnessError(
            f"the Autobahn Testsuite is not installed ({PYTHON27} is missing); "
            "run `bash compliance/install.sh` first (`make conformance` does)"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    modes = {"server": [SERVER], "client": [CLIENT], "both": [SERVER, CLIENT]}[args.mode]
    outcomes: list[Outcome] = []
    try:
        check_suite_installed()
        REPORTS.mkdir(exist_ok=True)
        for mode in modes:
            outcomes.append(run_mode(mode, args))
    except HarnessError as exc:
        log(f"error: {exc}")
        return EXIT_ERROR
    finally:
        Process.stop_all()
    failed = [o for o in outcomes if o.failures]
    if len(outcomes) > 1:
        for o in outcomes:
            state = "PASS" if not o.failures else f"FAIL ({len(o.failures)} cases)"
            log(f"{o.mode.name} mode: {state} in {o.wall_time:.0f} s")
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
