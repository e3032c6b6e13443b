"""Tests of run.py's judging, reporting and process handling; no Autobahn Testsuite needed.

.venv/bin/pytest compliance/test_run.py
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run


def write_index(outdir: Path, agent: str, cases: dict[str, tuple[str, str]]) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    index = {
        agent: {
            case: {
                "behavior": behavior,
                "behaviorClose": close,
                "duration": 12,
                "remoteCloseCode": 1000,
                "reportfile": f"{agent}_case_{case.replace('.', '_')}.json",
            }
            for case, (behavior, close) in cases.items()
        }
    }
    (outdir / "index.json").write_text(json.dumps(index))


def make_outcome(results: list[run.CaseResult], strict_close: bool = False) -> run.Outcome:
    return run.Outcome(run.SERVER, "tether", results, 1.0, strict_close, run.Execution())


def args(**overrides: object) -> argparse.Namespace:
    namespace = run.parse_args([])
    for name, value in overrides.items():
        setattr(namespace, name, value)
    return namespace


@pytest.fixture
def mode(tmp_path: Path) -> run.Mode:
    return run.Mode("server", run.HERE / "fuzzingclient.json", tmp_path / "servers", "x")


def test_missing_cases_are_reported_missing(mode: run.Mode) -> None:
    write_index(mode.outdir, "tether", {"1.1.1": ("OK", "OK")})
    notes: list[str] = []
    results = run.read_index(mode, "tether", ["1.1.1", "1.1.2"], notes)
    assert [(r.case, r.behavior) for r in results] == [("1.1.1", "OK"), ("1.1.2", "MISSING")]
    assert make_outcome(results).failures == [results[1]]


def test_no_index_means_every_case_missing(mode: run.Mode) -> None:
    notes: list[str] = []
    results = run.read_index(mode, "tether", ["1.1.1"], notes)
    assert results[0].behavior == run.MISSING
    assert "wrote no report" in notes[0]


def test_results_under_another_agent_are_used_with_a_note(mode: run.Mode) -> None:
    write_index(mode.outdir, "Other", {"1.1.1": ("OK", "OK")})
    notes: list[str] = []
    results = run.read_index(mode, "tether", ["1.1.1"], notes)
    assert results[0].behavior == "OK"
    assert "'Other'" in notes[0]


@pytest.mark.parametrize(
    ("behavior", "close", "strict", "fails"),
    [
        ("OK", "OK", False, False),
        ("INFORMATIONAL", "INFORMATIONAL", False, False),
        ("NON-STRICT", "OK", False, True),
        ("FAILED", "OK", False, True),
        ("UNIMPLEMENTED", "OK", False, True),
        ("MISSING", "MISSING", False, True),
        ("OK", "WRONG CODE", False, False),
        ("OK", "WRONG CODE", True, True),
        ("OK", "FAILED BY CLIENT", True, False),
    ],
)
def test_verdict_per_case(behavior: str, close: str, strict: bool, fails: bool) -> None:
    result = run.CaseResult("2.1", behavior, close)
    assert make_outcome([result], strict_close=strict).fails(result) is fails


def test_report_marks_lines_and_counts_sections() -> None:
    results = [
        run.CaseResult("1.1.1", "OK", "OK", 1000, 5),
        run.CaseResult("6.4.1", "NON-STRICT", "OK", 1007, 2000, "t_case_6_4_1.json"),
        run.CaseResult("7.1.6", "INFORMATIONAL", "INFORMATIONAL", 1000, 3),
        run.CaseResult("7.3.1", "OK", "WRONG CODE", 1002, 3),
        run.CaseResult("12.1.1", run.MISSING, run.MISSING),
    ]
    out = io.StringIO()
    run.report(make_outcome(results), args(), out)
    text = out.getvalue()
    assert "FAIL  6.4.1" in text
    assert "info  7.1.6" in text
    assert "close 7.3.1" in text
    assert "FAIL  12.1.1" in text
    assert "1.1.1" not in text.split("totals")[0]
    assert "FAIL: 2 cases worse than OK/INFORMATIONAL (1 MISSING, 1 NON-STRICT)" in text
    rows = {line.split()[0]: line.split() for line in run.totals_table(results)[2:]}
    assert rows["6"][:3] == ["6", "1", "1"]
    assert rows["all"][1] == "5"


def test_perf_table_lists_section_9_durations() -> None:
    results = [run.CaseResult("9.1.1", "OK", "OK", 1000, 42), run.CaseResult("1.1.1", "OK", "OK")]
    lines = run.perf_table(results)
    assert len(lines) == 2
    assert "9.1.1" in lines[1] and "42 ms" in lines[1]


def test_baseline_has_one_line_per_case(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(run, "HERE", tmp_path)
    results = [
        run.CaseResult("1.1.1", "OK", "OK"),
        run.CaseResult("7.3.1", "OK", "WRONG CODE"),
    ]
    path = run.write_baseline(make_outcome(results), {"cases": ["*"], "exclude-cases": ["9.*"]})
    assert path == tmp_path / "results-server.txt"
    body = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert body == ["1.1.1\tOK\tOK", "7.3.1\tOK\tWRONG CODE"]
    other = run.Outcome(run.CLIENT, "websockets", results, 1.0, False, run.Execution())
    assert run.write_baseline(other, {}) == tmp_path / "results-client-websockets.txt"


def test_spec_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(run, "REPORTS", tmp_path)
    _, spec = run.prepare_spec(run.SERVER, args(agent="x", server_port=9100))
    assert spec["exclude-cases"] == ["9.*"]
    assert spec["servers"] == [{"agent": "x", "url": "ws://127.0.0.1:9100"}]
    _, spec = run.prepare_spec(run.CLIENT, args(with_perf=True, exclude="12.*,13.*"))
    assert spec["exclude-cases"] == ["12.*", "13.*"]
    assert spec["url"] == "ws://127.0.0.1:9001"
    assert spec["outdir"] == str(run.CLIENT.outdir)


def test_command_templates() -> None:
    argv = run.testee_argv("{python} 'a b.py' {port}", {"python": "py", "port": "9"})
    assert argv == ["py", "a b.py", "9"]
    with pytest.raises(run.HarnessError):
        run.testee_argv("{nope}", {})


def test_process_is_stopped_and_its_cpu_time_recorded(tmp_path: Path) -> None:
    code = "import time\nwhile True: time.sleep(1)"
    process = run.Process("sleeper", [sys.executable, "-c", code], tmp_path, tmp_path / "log")
    assert process.poll() is None
    started = time.monotonic()
    process.stop(grace=5.0)
    assert time.monotonic() - started < 5
    assert process.poll() is not None
    assert process.cpu_time is not None
    assert process not in run.Process.running


def test_port_checks(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind((run.HOST, 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(run.HarnessError, match="already in use"):
            run.ensure_port_free(port)
        sleeper = run.Process(
            "sleeper",
            [sys.executable, "-c", "import time; time.sleep(30)"],
            tmp_path,
            tmp_path / "l",
        )
        try:
            run.wait_for_port(port, sleeper, timeout=5)
        finally:
            sleeper.stop()
    crasher = run.Process(
        "crasher", [sys.executable, "-c", "print('boom')"], tmp_path, tmp_path / "c"
    )
    with pytest.raises(run.HarnessError, match="exited with code 0"):
        run.wait_for_port(port, crasher, timeout=5)
