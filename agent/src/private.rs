//! The agent's files are the employee's: its data folder is readable by
//! its owner only (0700) and its databases too (0600; SQLite creates their
//! journal files with the database's permissions).

use std::fs::{OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The files the agent keeps in its data folder (with SQLite's journals).
const OWN_FILES: [&str; 2] = ["outbox.db", "activitywatch.db"];

/// Creates `dir` (and its parents) when missing, its owner's only. An
/// existing folder others may open is narrowed when it holds nothing but
/// the agent's own files (a folder made by an agent from before this
/// rule); any other is refused rather than changed, so `--data-dir ~` does
/// not chmod a home folder.
pub fn folder(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        return std::fs::set_permissions(dir, Permissions::from_mode(0o700));
    }
    if std::fs::metadata(dir)?.permissions().mode() & 0o077 == 0 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let own = OWN_FILES.iter().any(|own| {
            name.strip_prefix(own)
                .is_some_and(|rest| ["", "-wal", "-shm", "-journal"].contains(&rest))
        });
        if !own {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "other users may open this folder and it holds files that are not the agent's: \
                 run chmod 700 on it, or give --data-dir a folder of the agent's own",
            ));
        }
    }
    std::fs::set_permissions(dir, Permissions::from_mode(0o700))
}

/// Creates the file `path` empty, readable and writable by its owner only,
/// when missing; narrows an existing one to that.
pub fn file(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_and_files_are_their_owners_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        folder(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // An older agent's folder (default umask) is narrowed...
        let loose = root.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::write(loose.join("outbox.db"), b"").unwrap();
        std::fs::write(loose.join("activitywatch.db-wal"), b"").unwrap();
        std::fs::set_permissions(&loose, Permissions::from_mode(0o755)).unwrap();
        folder(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);
        // ...a shared one with other files is refused and left as it was.
        let home = root.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(home.join("outbox.db.bak"), b"").unwrap();
        std::fs::set_permissions(&home, Permissions::from_mode(0o755)).unwrap();
        let refused = folder(&home).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(mode(&home), 0o755);
        // An existing folder already its owner's only is used as it is.
        std::fs::set_permissions(&home, Permissions::from_mode(0o700)).unwrap();
        folder(&home).unwrap();
        let db = dir.join("outbox.db");
        file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        std::fs::write(&db, b"kept").unwrap();
        std::fs::set_permissions(&db, Permissions::from_mode(0o644)).unwrap();
        file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::read(&db).unwrap(), b"kept");
    }
}
