//! The local platform that `trackhrs dev` started: it writes its endpoints
//! and its key-encryption key file to `<data dir>/platform.env`, and the operator tools run from the same
//! folder (or with the same `TRACKHRS_DATA_DIR`) use them as their
//! defaults, so `trackhrs projections status` after `scripts/run.sh` talks to
//! that platform without flags. Flags and environment variables still win.

use std::path::{Path, PathBuf};

/// The file in the data folder.
const FILE: &str = "platform.env";

/// The data folder of `trackhrs dev` when none is configured.
pub const DEFAULT_DATA_DIR: &str = ".trackhrs";

/// NATS URL variable.
const NATS_URL: &str = "TRACKHRS_NATS_URL";
/// PostgreSQL connection variable.
const DATABASE_URL: &str = "TRACKHRS_DATABASE_URL";
/// Key-encryption key file variable.
const KEK_FILE: &str = "TRACKHRS_KEK_FILE";

/// Records the endpoints of the servers `trackhrs dev` started itself, and
/// where its key-encryption key is, in `data_dir` (readable by its owner
/// only). Servers it was pointed at are not recorded (their URLs may hold
/// credentials); with nothing to record, a file left by an earlier run is
/// removed.
pub fn write(
    data_dir: &Path,
    nats_url: Option<&str>,
    database_url: Option<&str>,
    kek_file: Option<&Path>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data_dir.join(FILE);
    let kek_file = kek_file
        .map(std::path::absolute)
        .transpose()?
        .map(|p| p.display().to_string());
    let lines: String = [
        (NATS_URL, nats_url),
        (DATABASE_URL, database_url),
        (KEK_FILE, kek_file.as_deref()),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.map(|v| format!("{key}={v}\n")))
    .collect();
    if lines.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(lines.as_bytes())
}

/// `key` as the local platform recorded it, if one did.
fn recorded(key: &str) -> Option<String> {
    let dir = std::env::var_os("TRACKHRS_DATA_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from);
    let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
    text.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim().to_owned())
}

/// The default NATS URL: the local platform's, else the standard port.
pub fn nats_url() -> String {
    recorded(NATS_URL).unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned())
}

/// The default PostgreSQL connection: the local platform's, else the
/// standard port.
pub fn database_url() -> String {
    recorded(DATABASE_URL)
        .unwrap_or_else(|| "host=127.0.0.1 port=5432 user=postgres dbname=trackhrs".to_owned())
}

/// The key-encryption key file of the local platform, if it recorded one.
pub fn kek_file() -> Option<PathBuf> {
    recorded(KEK_FILE).map(PathBuf::from)
}
