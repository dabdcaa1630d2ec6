#!/usr/bin/env bash
# The virtualenv of LiteLLM's proxy (tests/peers/litellm-requirements.txt), an OpenAI-compatible
# server nobody here wrote, that tests/test_peer_litellm.py runs the service against. Kept apart
# from the project's own environments: it brings hundreds of packages of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-litellm
if ! cmp -s tests/peers/litellm-requirements.txt "$venv/requirements.txt" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/peers/litellm-requirements.txt
  cp tests/peers/litellm-requirements.txt "$venv/requirements.txt"
fi
