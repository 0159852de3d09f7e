#!/usr/bin/env bash
# The whole test suite, set-up included: Python environment, Debian packages
# (chromium for the page tests), the `ai` npm package for protocol conformance,
# the docs build (warnings are errors), then pytest. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/setup.sh test

# Debian packages the tests use, installed when missing (root or sudo needed):
# chromium for the page tests, redis-server for the Redis Streams tests (exporters/streamtap-redis).
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The real `ai` package (Vercel AI SDK) and `@ag-ui/client` for the protocol conformance tests.
if [ -f tests/js/package.json ] && command -v npm >/dev/null 2>&1; then
  if [ ! -d tests/js/node_modules/ai ] || [ ! -d tests/js/node_modules/@ag-ui/client ]; then
    (cd tests/js && npm install --no-audit --no-fund --silent >/dev/null)
  fi
fi

# Habits: lint, format and strict types, before any test runs (the same checks as .pre-commit-config.yaml).
python -m ruff check .
python -m ruff format --check .
python -m mypy

# Docs: built with warnings as errors.
python -m sphinx -q -W --keep-going -b html docs docs/_build/html

exec python -m pytest "$@"
