#!/usr/bin/env bash
# Runs the whole TrackHrs test suite (unit, integration and end-to-end tests
# against a real nats-server and PostgreSQL). Installs what is missing first
# (scripts/deps.sh). Extra arguments go to `cargo test`. Exits with cargo's
# exit code.
#
#   scripts/test.sh            everything but the desktop app
#   scripts/test.sh --desktop  the Tauri desktop app: installs its system
#                              libraries, builds it and runs its tests (the
#                              app under Xvfb, read by screenshot and OCR)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DESKTOP=0
if [ "${1:-}" = "--desktop" ]; then
    DESKTOP=1
    shift
fi

if [ "$DESKTOP" -eq 1 ]; then
    bash "$ROOT/scripts/deps.sh" --desktop
else
    bash "$ROOT/scripts/deps.sh"
fi

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
# shellcheck source=/dev/null
. "$ROOT/.tools/env"

if [ "$DESKTOP" -eq 1 ]; then
    exec cargo test -p trackhrs-desktop --all-targets "$@"
fi
exec cargo test --workspace --exclude trackhrs-desktop --all-targets "$@"
