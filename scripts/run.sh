#!/usr/bin/env bash
# Starts the whole TrackHrs platform locally ("dev" mode: embedded nats-server
# and PostgreSQL under .trackhrs/, a demo org and simulated agents).
# Installs what is missing first (scripts/deps.sh). Extra arguments go to
# `trackhrs dev`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash "$ROOT/scripts/deps.sh"

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
# shellcheck source=/dev/null
. "$ROOT/.tools/env"

exec cargo run --release --bin trackhrs -- dev --portal-dir "$ROOT/portal/dist" "$@"
