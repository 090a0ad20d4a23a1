#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine and run it.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
cd "$root"

# Debian tools the tests drive: curl as a real client, chromium for the
# stats page in a real browser, haproxy 2.6 to compare behaviour with.
need=()
command -v curl >/dev/null || need+=(curl)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v chromium >/dev/null || need+=(chromium)
# HA drills: keepalived in network namespaces (iproute2), the OCF agent
# under ocf-tester (resource-agents), BIRD for the ECMP drill (bird2),
# systemd-socket-activate (systemd).
command -v ip >/dev/null || need+=(iproute2)
command -v keepalived >/dev/null || [ -x /usr/sbin/keepalived ] || need+=(keepalived)
command -v ocf-tester >/dev/null || [ -x /usr/sbin/ocf-tester ] || need+=(resource-agents)
command -v bird >/dev/null || [ -x /usr/sbin/bird ] || need+=(bird2)
# The runtime API's real clients: socat, hatop (driven under tmux).
command -v socat >/dev/null || need+=(socat)
command -v hatop >/dev/null || need+=(hatop)
command -v tmux >/dev/null || need+=(tmux)
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null || echo "warning: could not install ${need[*]}"
fi

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip "setuptools>=77" wheel "Cython>=3.0"
.venv/bin/pip install --quiet ".[test,bench]"
# The tests import the source tree: build the Cython fast path in place.
.venv/bin/python setup.py --quiet build_ext --inplace

# The whole suite twice: on the compiled fast path (lbcore_ext and the
# compiled http core), then on the pure-Python fallback, which must behave
# the same (LBCORE_NO_EXT=1 loads every module from its .py source).
.venv/bin/python -m pytest tests bench/tests -q -p no:cacheprovider "$@"
LBCORE_NO_EXT=1 .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
