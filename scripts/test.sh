#!/usr/bin/env bash
# Install and run the whole test suite. Tests start their own Redis and servers.
# Two virtualenvs: .venv-runtime holds requirements.txt only, as a deploy does, and runs every
# gunicorn, CLI and launcher process the tests start, so a runtime package that only the test
# tools bring in cannot make a test pass; .venv adds the test tools and runs pytest itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/runtime-venv.sh .venv-runtime
bash scripts/dev-venv.sh
# The widget's build tools and axe-core, at web/package-lock.json's versions (tests/test_web_build.py,
# tests/test_accessibility.py). The served scripts themselves are committed: a deploy needs no Node.js.
(cd web && npm ci --no-audit --no-fund --loglevel=error)
export RUNTIME_VENV="$PWD/.venv-runtime"
exec .venv/bin/python -m pytest "$@"
