#!/usr/bin/env bash
# The development virtualenv .venv: the runtime pins plus the test and lint tools (requirements-dev.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
