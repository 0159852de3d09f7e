#!/usr/bin/env bash
# The main job: set up, then run `streamtap demo` (extra arguments go to it,
# e.g. --terminal, --port 8000).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/setup.sh
exec streamtap demo "$@"
