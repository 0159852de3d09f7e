#!/usr/bin/env bash
# Shared set-up for scripts/test.sh and scripts/demo.sh: creates .venv and installs
# streamtap with every extra and the exporter distributions. Idempotent and quick when done.
# Usage: source scripts/setup.sh [test]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "streamtap needs Python 3.10 or newer; set PYTHON=/path/to/python3.x" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
STAMP=".venv/.streamtap-installed-${1:-main}"
HASH="$(cat pyproject.toml exporters/*/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$HASH" ]; then
  "$VPY" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
  EXTRAS="all"
  [ "${1:-}" = "test" ] && EXTRAS="all,test"
  EXPORTERS=()
  for d in exporters/*/; do [ -f "$d/pyproject.toml" ] && EXPORTERS+=(-e "$d"); done
  "$VPY" -m pip install -q --disable-pip-version-check -e ".[${EXTRAS}]" "${EXPORTERS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
  "$VPY" -c "import streamtap" 
  echo "$HASH" > "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
