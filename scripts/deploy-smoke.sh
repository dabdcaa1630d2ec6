#!/usr/bin/env bash
# CI's first step: the product as a user installs and starts it, before any test tool exists.
#  1. A brand-new virtualenv with requirements.txt only runs the Procfile's web command in
#     production against a real Redis and the test upstream (scripts/deploy_smoke.py).
#  2. The README's first command, scripts/dev.sh, from a clean clone of the committed tree with
#     an empty HOME and no .venv: /health, the demo page and its icon must answer.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
dev_pid=""
cleanup() {
  [ -n "$dev_pid" ] && kill -TERM -- "-$dev_pid" 2>/dev/null && sleep 2
  rm -rf "$work"
}
trap cleanup EXIT

started=$SECONDS
python3 -m venv "$work/runtime"
"$work/runtime/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
echo "deploy smoke: requirements.txt installed into a new virtualenv in $((SECONDS - started)) s"
"$work/runtime/bin/python" scripts/deploy_smoke.py

started=$SECONDS
git clone --quiet . "$work/clone"
mkdir "$work/home"
port=$("$work/runtime/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# setsid: the launcher, gunicorn and its workers share one process group, stopped together below.
(cd "$work/clone" && exec setsid env -i PATH="$PATH" HOME="$work/home" PORT="$port" bash scripts/dev.sh) \
  > "$work/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 1 600); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null && break
  kill -0 "$dev_pid" 2>/dev/null || break
  sleep 0.5
done
if ! curl -fsS -o /dev/null "http://127.0.0.1:$port/health" \
   || ! curl -fsS "http://127.0.0.1:$port/" | grep -q "chat-widget.js" \
   || ! curl -fsS -o /dev/null "http://127.0.0.1:$port/favicon.ico"; then
  echo "deploy smoke FAILED: scripts/dev.sh from a clean clone did not serve /health, / and /favicon.ico"
  cat "$work/dev.log"
  exit 1
fi
echo "deploy smoke: scripts/dev.sh from a clean clone (empty HOME, no .venv) answered in $((SECONDS - started)) s"
