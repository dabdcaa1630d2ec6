#!/usr/bin/env bash
# Make (or bring up to date) a virtualenv that holds requirements.txt and nothing else: exactly
# what a deploy installs. Usage: scripts/runtime-venv.sh DIR. A copy of the requirements it was
# built from sits inside; when requirements.txt changes the venv is built anew rather than
# patched, so nothing a test or a person added by hand can linger in it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$1"
if ! cmp -s requirements.txt "$venv/requirements.txt" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
  cp requirements.txt "$venv/requirements.txt"
fi
