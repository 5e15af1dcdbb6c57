#!/usr/bin/env bash
# The whole test suite on a fresh machine: stunnel (Debian package, for the TLS tests) when it is
# missing, the virtualenv with the test dependencies, the static checks (ruff; mypy, strict on the
# package, plain on tests/, load/ and scripts/), then pytest. CI (.ci/run) runs exactly this.
# Arguments go to pytest, e.g. ./scripts/test.sh tests/unit -q
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq stunnel4 >/dev/null
fi
python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'
.venv/bin/ruff check .
.venv/bin/mypy streamscore
.venv/bin/mypy tests load scripts
.venv/bin/python -m pytest "$@"
