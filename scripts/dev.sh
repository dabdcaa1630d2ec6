#!/usr/bin/env bash
# Install (into .venv) and start the service on its embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
exec .venv/bin/python devserver.py "$@"
