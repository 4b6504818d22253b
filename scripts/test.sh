#!/usr/bin/env bash
# Runs the whole TrackHrs test suite (unit, integration and end-to-end tests
# against a real nats-server and PostgreSQL). Installs what is missing first
# (scripts/deps.sh). Extra arguments go to `cargo test`. Exits with cargo's
# exit code.
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

exec cargo test --workspace --all-targets "$@"
