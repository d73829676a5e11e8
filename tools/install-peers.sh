#!/usr/bin/env bash
# Installs the real peers the tests talk to: Mosquitto and mbpoll from apt; Node.js and, from
# npm, the MicroPython WebAssembly VM and node-opcua (tests/npm/package.json, locked).
# As root it installs what is missing; otherwise it names the packages and stops.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v mbpoll >/dev/null 2>&1 || need+=(mbpoll)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
npm_peers() {
  # npm ci only when the lock changed since the last install: a warm `make test` costs nothing.
  local dir tests_npm stamp
  dir="$(cd "$(dirname "$0")/.." && pwd)"; tests_npm="$dir/tests/npm"
  stamp="$tests_npm/node_modules/.pswd-lock"
  if [ -f "$stamp" ] && cmp -s "$stamp" "$tests_npm/package-lock.json"; then return 0; fi
  echo "installing npm test peers (tests/npm): MicroPython VM, node-opcua"
  (cd "$tests_npm" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$tests_npm/package-lock.json" "$stamp"
}
if [ ${#need[@]} -eq 0 ]; then npm_peers; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "make test needs: ${need[*]}. Install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing test peers from apt: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
npm_peers
