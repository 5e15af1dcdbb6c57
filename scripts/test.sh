#!/usr/bin/env bash
# The whole test suite on a fresh machine: the Debian packages the tests need when they are missing
# (stunnel4 for the TLS tests, postgresql for the postgresql destination, chromium for the status
# page), the virtualenv with the test dependencies, the static checks (ruff; mypy, strict on the
# package, plain on tests/, load/ and scripts/), then pytest. CI (.ci/run) runs exactly this.
# Arguments go to pytest, e.g. ./scripts/test.sh tests/unit -q
#
# With no arguments (CI) pytest runs twice: everything on the embedded broker (Tansu), then the
# integration and fault suites again on Apache Kafka, less the tests marked broker_agnostic
# (scripts/kafka.sh; its jars are fetched once
# with Maven, needs Java 17). With arguments, or with STREAMSCORE_TEST_BROKER (tansu|kafka) or
# STREAMSCORE_TEST_BOOTSTRAP set, it runs once, e.g.
#   STREAMSCORE_TEST_BROKER=kafka ./scripts/test.sh tests/integration tests/faults
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
if ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null; then
    missing+=(stunnel4)
fi
# PostgreSQL for the postgresql destination's tests (tests/support/postgres.py finds Debian's binaries
# under /usr/lib/postgresql/*/bin and, as root, runs the server as the postgres user)
if ! command -v initdb >/dev/null && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    missing+=(postgresql)
fi
if [ ! -x /usr/bin/chromium ]; then  # the status page test drives Debian's chromium headless (Playwright)
    missing+=(chromium chromium-driver)
fi
# the Debian packages and the virtualenv install at the same time (both mostly wait on the network)
apt_pid=""
if [ ${#missing[@]} -gt 0 ]; then
    ($sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null) &
    apt_pid=$!
fi
python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'
[ -z "$apt_pid" ] || wait "$apt_pid"
.venv/bin/ruff check .
if [ $# -gt 0 ] || [ -n "${STREAMSCORE_TEST_BROKER:-}${STREAMSCORE_TEST_BOOTSTRAP:-}" ]; then
    .venv/bin/mypy streamscore
    .venv/bin/mypy tests load scripts
    [ "${STREAMSCORE_TEST_BROKER:-}" != kafka ] || ./scripts/kafka.sh fetch
    exec .venv/bin/python -m pytest "$@"
fi
# CI: mypy and the Kafka jars' fetch run beside the first pytest pass, which mostly waits on
# brokers and services; each one's failure still fails the run, with its output shown
checks=$(mktemp -d)
(.venv/bin/mypy streamscore \
    && .venv/bin/mypy tests load scripts) >"$checks/mypy" 2>&1 &
mypy_pid=$!
./scripts/kafka.sh fetch >"$checks/fetch" 2>&1 &
fetch_pid=$!
status=0
.venv/bin/python -m pytest || status=$?
if ! wait "$mypy_pid"; then cat "$checks/mypy"; echo "mypy failed"; status=1; fi
if ! wait "$fetch_pid"; then cat "$checks/fetch"; echo "scripts/kafka.sh fetch failed"; exit 1; fi
echo "--- the integration and fault suites on Apache Kafka $(./scripts/kafka.sh version)"
# tests of the service's own logic (marked broker_agnostic) ran on the embedded broker already
STREAMSCORE_TEST_BROKER=kafka .venv/bin/python -m pytest tests/integration tests/faults -m "not broker_agnostic" || status=$?
exit "$status"
