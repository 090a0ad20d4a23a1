#!/usr/bin/env bash
# Set up (on first run, or after the code changed) and run lbcore on
# conf/demo.yaml with three demo backends on 127.0.0.1:8081-8083.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
cd "$root"
stamp="$(git rev-parse HEAD 2>/dev/null || echo none)"
if [ ! -x .venv/bin/lbcore ] || [ "$(cat .venv/.lbcore-stamp 2>/dev/null)" != "$stamp" ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet .
  echo "$stamp" > .venv/.lbcore-stamp
fi
# Run from outside the source tree so the installed package (with its
# compiled fast path) is the one imported.
cd /
exec "$root/.venv/bin/python" -m lbcore.demo "$root/conf/demo.yaml" "$@"
