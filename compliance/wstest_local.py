"""Run the Autobahn Testsuite's ``wstest`` with every listening socket bound to 127.0.0.1.

This file runs under compliance/.venv27 (Python 2.7), started by compliance/run.py. It is
written in the common subset of Python 2.7 and 3 so that the project's linters accept it.

Why a wrapper: in fuzzingserver mode the suite listens on all interfaces (autobahn's
``listenWS`` and the embedded web server pass no interface to Twisted). We only ever test on
loopback, so we wrap the reactor's ``listenTCP`` to default the interface to 127.0.0.1 and then
hand over to the suite's own command line, unchanged.

One extra command, used by run.py to know which cases a spec selects (so that a case missing
from the results can be reported as missing):

    python wstest_local.py --list-cases SPEC.json
"""

import json
import sys

LOOPBACK = "127.0.0.1"


def list_cases(spec_path):
    """Write the ids of the cases that the spec's cases / exclude-cases select, one a line."""
    from autobahntestsuite.case import (
        CaseBasename,
        CaseCategories,
        Cases,
        CaseSetname,
        CaseSubCategories,
    )
    from autobahntestsuite.caseset import CaseSet

    with open(spec_path) as spec_file:
        spec = json.load(spec_file)
    case_set = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
    for case_id in case_set.parseSpecCases(spec):
        sys.stdout.write(case_id + "\n")
    return 0


def run_wstest():
    # Importing wstest installs the suite's preferred reactor first; only then is the global
    # reactor the one that will listen.
    from autobahntestsuite import wstest
    from twisted.internet import reactor

    listen_tcp = reactor.listenTCP

    def listen_tcp_loopback(port, factory, backlog=50, interface=""):
        return listen_tcp(port, factory, backlog, interface or LOOPBACK)

    reactor.listenTCP = listen_tcp_loopback
    sys.argv[0] = "wstest"
    return wstest.run()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--list-cases":
        return list_cases(sys.argv[2])
    return run_wstest()


if __name__ == "__main__":
    sys.exit(main())
