//! Where binaries and free ports come from.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use crate::HarnessError;

/// The workspace root (the folder holding `.tools/` and `infra/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness lives in the workspace")
        .to_path_buf()
}

/// The nats-server binary: `$TRACKHRS_NATS_SERVER`, else the project-local
/// one that `scripts/deps.sh` installs into `.tools/bin`. Never the system's,
/// which may be too old.
pub fn nats_server_binary() -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os("TRACKHRS_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let local = workspace_root().join(".tools/bin/nats-server");
    if local.exists() {
        return Ok(local);
    }
    Err(HarnessError::Missing {
        what: "nats-server",
        hint: "run scripts/deps.sh (installs it into .tools/bin) or set TRACKHRS_NATS_SERVER"
            .into(),
    })
}

/// The folder holding PostgreSQL's `initdb`, `pg_ctl` and `postgres`:
/// `$TRACKHRS_PG_BIN`, else the newest `/usr/lib/postgresql/<v>/bin`.
pub fn pg_bin_dir() -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os("TRACKHRS_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or(HarnessError::Missing {
        what: "PostgreSQL server binaries (initdb)",
        hint: "run scripts/deps.sh (installs Debian's postgresql) or set TRACKHRS_PG_BIN".into(),
    })
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}
