#!/usr/bin/env bash
# Install the Autobahn Testsuite into its own Python 2.7 virtualenv, compliance/.venv27.
#
# The suite (PyPI package autobahntestsuite) runs on Python 2.7 only, so it never goes into the
# project's .venv. Steps:
#   1. find a Python 2.7 interpreter ($PYTHON27, then pyenv's 2.7.x builds, then python2.7 or
#      python2 on PATH); fail loudly when there is none, never skip;
#   2. install virtualenv < 20.22 (the last line able to create 2.7 environments) with 2.7's own
#      pip into a temporary directory, pinned by requirements-virtualenv.txt;
#   3. create compliance/.venv27 from the wheels virtualenv bundles (no download);
#   4. pip install the pinned suite from requirements-autobahn.txt and check that it imports.
# A stamp file records a hash of both requirement files, the interpreter and this script; while
# it matches and the suite still imports, the script does nothing, so it is cheap to run before
# every conformance run. It needs only PyPI, reads no standard input, and its output is meant for
# CI logs. Set AUTOBAHN_VENV to install somewhere else.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${AUTOBAHN_VENV:-$here/.venv27}"
suite_reqs="$here/requirements-autobahn.txt"
boot_reqs="$here/requirements-virtualenv.txt"
stamp="$venv/.installed"

say() { echo "compliance/install.sh: $*"; }
die() {
    echo "compliance/install.sh: error: $*" >&2
    exit 1
}

# True when "$1" is an interpreter whose version is 2.7.
is_python27() {
    [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1
}

find_python27() {
    if [ -n "${PYTHON27:-}" ]; then
        is_python27 "$PYTHON27" || die "PYTHON27=$PYTHON27 is not a working Python 2.7 interpreter"
        echo "$PYTHON27"
        return
    fi
    local roots=() root candidate
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root 2>/dev/null || true)"
        [ -n "$root" ] && roots+=("$root")
    fi
    [ -n "${PYENV_ROOT:-}" ] && roots+=("$PYENV_ROOT")
    roots+=("$HOME/.pyenv")
    for root in "${roots[@]}"; do
        # Newest 2.7.x first.
        for candidate in $(ls -d "$root"/versions/2.7*/bin/python 2>/dev/null | sort -rV); do
            if is_python27 "$candidate"; then
                echo "$candidate"
                return
            fi
        done
    done
    for candidate in python2.7 python2; do
        if command -v "$candidate" >/dev/null 2>&1 && is_python27 "$(command -v "$candidate")"; then
            command -v "$candidate"
            return
        fi
    done
    die "Python 2.7 not found: the Autobahn Testsuite runs only on Python 2.7. Install it" \
        "(for example 'pyenv install 2.7.18') or set PYTHON27 to its interpreter."
}

python27="$(find_python27)"
python27_version="$("$python27" -c 'import sys; print(sys.version.split()[0])')"

want="$(cat "$suite_reqs" "$boot_reqs" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1) $python27"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$venv/bin/python" -c 'import autobahntestsuite.fuzzing' >/dev/null 2>&1; then
    say "Autobahn Testsuite up to date in $venv"
    exit 0
fi

say "installing the Autobahn Testsuite into $venv with Python $python27_version ($python27)"

# Never prompt, never install into the user site by accident, and allow the one install that is
# not inside a virtualenv (the bootstrap, into a temporary --target directory).
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_REQUIRE_VIRTUALENV=0 PIP_USER=0

if ! "$python27" -m pip --version >/dev/null 2>&1; then
    say "Python 2.7 has no pip; bootstrapping it with ensurepip --user"
    "$python27" -m ensurepip --user --default-pip >/dev/null \
        || die "$python27 has no pip and ensurepip failed; install pip for Python 2.7"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$python27" -m pip install --quiet --target "$tmp/bootstrap" -r "$boot_reqs" \
    || die "could not install virtualenv for Python 2.7 (see pip's output above)"

rm -rf "$venv"
PYTHONPATH="$tmp/bootstrap" VIRTUALENV_OVERRIDE_APP_DATA="$tmp/app-data" \
    "$python27" -m virtualenv --quiet --no-download --no-periodic-update \
    --python "$python27" "$venv" \
    || die "could not create the Python 2.7 virtualenv $venv"

"$venv/bin/python" -m pip install --quiet -r "$suite_reqs" \
    || die "could not install the Autobahn Testsuite (see pip's output above)"

"$venv/bin/python" -c 'import autobahntestsuite.fuzzing' \
    || die "the Autobahn Testsuite was installed but does not import"
"$venv/bin/wstest" --autobahnversion

echo "$want" >"$stamp"
say "done"
