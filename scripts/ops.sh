#!/usr/bin/env bash
# The ops command line (cli.py) against the development service that scripts/dev.sh runs: same
# .venv, same data folder, same keys (data/dev-keys.json). For a deployment, run
# `python cli.py <command>` with the deployment's environment instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
exec .venv/bin/python devserver.py ops "$@"
