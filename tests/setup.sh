#!/usr/bin/env bash
# Installs what the full test suite (`cargo test --all-features`) needs and is missing; does nothing else.
#
#   bash tests/setup.sh && cargo test --all-features
#
# - redis-server and redis-cli (the Redis tests start private servers and clusters of their own),
# - Chromium at $CHROMIUM or /usr/bin/chromium, Node.js and npm (examples/demo/tests/servers/browser.rs),
# - the browser script's npm packages (`npm ci --prefix examples/demo/tests/browser`, from package-lock.json),
# - stress-ng, the CPU hog the suites are run beside to show they hold on a busy machine.
#
# System packages come from apt (Debian/Ubuntu), as root or through sudo. Run it again any
# time: what is present is left alone, so a second run installs nothing and needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'tests/setup.sh: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  else
    command -v sudo >/dev/null || fail "not root and no sudo: run this as root to install what is missing"
    sudo "$@"
  fi
}

apt_updated=
apt_install() {
  command -v apt-get >/dev/null || fail "apt-get not found: install $* with your package manager, then run this again"
  say "installing $* (apt-get)"
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Redis: Debian's redis-server package brings redis-cli (redis-tools) with it.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  apt_install redis-server
fi

# Chromium, where examples/demo/tests/servers/browser.rs and examples/demo/tests/browser/demo.mjs look for it.
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  apt_install chromium
  [ -x "$chromium" ] || fail "chromium was installed but $chromium is still missing: unset CHROMIUM or point it at the browser"
fi

# stress-ng: a CPU hog to run the suites beside (the tests must hold on a busy machine).
command -v stress-ng >/dev/null || apt_install stress-ng

# Node.js and npm. Only what is missing: NodeSource's nodejs carries its own npm and
# conflicts with Debian's npm package.
command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm

# The browser script's packages, again when package-lock.json changed since the last install.
installed=examples/demo/tests/browser/node_modules/.package-lock.json
if [ ! -f examples/demo/tests/browser/node_modules/playwright-core/package.json ] || [ examples/demo/tests/browser/package-lock.json -nt "$installed" ]; then
  say "installing the browser test's npm packages (npm ci --prefix examples/demo/tests/browser)"
  npm ci --prefix examples/demo/tests/browser --no-audit --no-fund --loglevel=error
fi

say "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), $("$chromium" --version 2>/dev/null || echo "$chromium"), node $(node --version), playwright-core $(node -p 'require("./examples/demo/tests/browser/node_modules/playwright-core/package.json").version'): ready"
