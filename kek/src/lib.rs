//! Key-encryption keys (KEKs): every per-person data key and every
//! access-token signing key TrackHrs stores is wrapped under one, so the key
//! bucket, the database or a backup of either opens nothing on its own.
//!
//! A [`Keyring`] holds one or more 256-bit KEKs; the first wraps, all of them
//! unwrap. It comes from a file (one base64 key per line, the current one
//! first; re-read when it changes, so `trackhrs keys rotate-kek` reaches
//! running processes) or from an environment variable (same format, fixed
//! for the life of the process). A key-management service fits behind the
//! same two calls later: [`Keyring::wrap`] and [`Keyring::unwrap`].
//!
//! A wrapped key is `TKW1 || KEK id (8 bytes) || nonce (12) || AES-256-GCM
//! ciphertext and tag`, with the slot it belongs to (`data-key:<subject>`,
//! `signing-key:<kid>`) as associated data: a wrapped key copied into
//! another slot does not unwrap. The KEK id is the first 8 bytes of the
//! KEK's SHA-256, so a wrong KEK is named as such instead of failing as
//! corrupt data.
//!
//! Architecture invariant: no I/O but reading and writing the key file, no
//! async, no logging (errors never carry key material or slots).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// First bytes of every wrapped key.
pub const MAGIC: &[u8; 4] = b"TKW1";
const ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = MAGIC.len() + ID_LEN + NONCE_LEN;

/// What to set when there is no KEK, for error messages.
pub const HOW_TO_SET: &str = "set TRACKHRS_KEK_FILE to a file holding the key-encryption key (`trackhrs keys new-kek FILE` creates one) or TRACKHRS_KEK to its base64";

/// A KEK's public id: the first 8 bytes of its SHA-256, as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KekId([u8; ID_LEN]);

impl std::fmt::Display for KekId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What went wrong with a KEK or a wrapped key. No variant carries key
/// material or the slot a key belongs to.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    /// No KEK was configured.
    #[error("no key-encryption key: {HOW_TO_SET}")]
    Missing,
    /// The key file could not be read or written.
    #[error("key-encryption key file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key text is not base64 of 32 bytes per line.
    #[error("key-encryption key: {0}")]
    Malformed(String),
    /// The key was wrapped under a KEK this process does not have.
    #[error(
        "wrapped under key-encryption key {found}, which is not among this process's ({have}): wrong TRACKHRS_KEK_FILE or TRACKHRS_KEK?"
    )]
    UnknownKek {
        /// The KEK the key names.
        found: KekId,
        /// The KEKs this process has.
        have: String,
    },
    /// The wrapped key does not authenticate under the KEK it names, or in
    /// the slot it was read from.
    #[error(
        "a wrapped key does not authenticate under key-encryption key {0}: tampered with, or copied from another slot"
    )]
    Corrupt(KekId),
    /// The value is not a wrapped key at all (stored in the clear).
    #[error("a key is stored unwrapped")]
    NotWrapped,
}

/// One KEK.
struct Kek {
    id: KekId,
    cipher: Aes256Gcm,
}

impl Kek {
    fn new(key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&digest[..ID_LEN]);
        Self {
            id: KekId(id),
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        }
    }
}

/// Where the keyring came from.
enum Source {
    /// A file, re-read when its modification time changes.
    File(PathBuf),
    /// Fixed for the life of the process.
    Fixed,
}

/// One or more KEKs: the first wraps, every one unwraps.
pub struct Keyring {
    source: Source,
    keks: RwLock<Vec<Kek>>,
    /// Modification time of the file when it was last read.
    read_at: Mutex<Option<SystemTime>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({})", self.ids_text())
    }
}

impl Keyring {
    /// The KEKs of `text`: one base64 key of 32 bytes per line (or comma),
    /// the current one first; blank lines and `#` comments are skipped.
    pub fn from_text(text: &str) -> Result<Self, KekError> {
        Ok(Self {
            source: Source::Fixed,
            keks: RwLock::new(parse(text)?),
            read_at: Mutex::new(None),
        })
    }

    /// The KEKs of a file in the format of [`Keyring::from_text`], re-read
    /// whenever it changes.
    pub fn from_file(path: &Path) -> Result<Self, KekError> {
        let (keks, modified) = read_file(path)?;
        Ok(Self {
            source: Source::File(path.to_owned()),
            keks: RwLock::new(keks),
            read_at: Mutex::new(modified),
        })
    }

    /// The keyring configured by a file (wins) or a text, or
    /// [`KekError::Missing`], which says what to set.
    pub fn load(file: Option<&Path>, text: Option<&str>) -> Result<Self, KekError> {
        match (file, text) {
            (Some(path), _) => Self::from_file(path),
            (None, Some(text)) => Self::from_text(text),
            (None, None) => Err(KekError::Missing),
        }
    }

    /// A new random KEK, as the base64 line a key file holds.
    pub fn generate() -> Zeroizing<String> {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut());
        Zeroizing::new(B64.encode(key.as_ref()))
    }

    /// Writes `lines` (base64 KEKs, the current one first) to `path`,
    /// readable by its owner only, replacing the file atomically.
    pub fn write_file(path: &Path, lines: &[&str]) -> Result<(), KekError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let fail = |e: std::io::Error| KekError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let mut text = Zeroizing::new(String::from(
            "# TrackHrs key-encryption keys. Secret: whoever has this file and a copy\n\
             # of the key bucket or the database can read them. The first key wraps;\n\
             # the others only unwrap (see `trackhrs keys rotate-kek`).\n",
        ));
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        parse(&text)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(e));
        }
        // The rename is durable only once the folder is: a crash must not
        // bring back the old file after keys were wrapped under the new one.
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::File::open(folder)
            .and_then(|f| f.sync_all())
            .map_err(fail)
    }

    /// The base64 lines of a key file, the current KEK first, checked.
    pub fn read_lines(path: &Path) -> Result<Vec<Zeroizing<String>>, KekError> {
        read_file(path)?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| KekError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?);
        Ok(key_lines(&text)
            .map(|l| Zeroizing::new(l.to_owned()))
            .collect())
    }

    /// The KEK that wraps.
    pub fn current(&self) -> KekId {
        self.refresh();
        self.read()[0].id
    }

    /// Every KEK's id, the current one first.
    pub fn ids(&self) -> Vec<KekId> {
        self.read().iter().map(|k| k.id).collect()
    }

    fn ids_text(&self) -> String {
        self.ids()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Wraps `secret` under the current KEK for `slot` (what the key is,
    /// bound as associated data).
    pub fn wrap(&self, slot: &str, secret: &[u8]) -> Result<Vec<u8>, KekError> {
        self.refresh();
        let keks = self.read();
        let kek = &keks[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = kek
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: slot.as_bytes(),
                },
            )
            .map_err(|_| KekError::Corrupt(kek.id))?;
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&kek.id.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Unwraps a key wrapped by [`Keyring::wrap`] for the same `slot`. A KEK
    /// this process does not know makes it re-read its file once, in case
    /// the keys were rotated.
    pub fn unwrap(&self, slot: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KekError> {
        let id = wrapped_under(wrapped).ok_or(KekError::NotWrapped)?;
        if !self.ids().contains(&id) {
            self.refresh();
        }
        let keks = self.read();
        let kek = keks
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| KekError::UnknownKek {
                found: id,
                have: keks
                    .iter()
                    .map(|k| k.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let (nonce, sealed) = wrapped[MAGIC.len() + ID_LEN..].split_at(NONCE_LEN);
        kek.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: slot.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KekError::Corrupt(id))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Kek>> {
        self.keks.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the key file if it changed since it was last read. A file
    /// that cannot be read or parsed now keeps the keys already loaded.
    fn refresh(&self) {
        let Source::File(path) = &self.source else {
            return;
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        if modified.is_none() || modified == *read_at {
            return;
        }
        if let Ok((keks, modified)) = read_file(path) {
            *self.keks.write().unwrap_or_else(|e| e.into_inner()) = keks;
            *read_at = modified;
        }
    }
}

/// The KEK a wrapped key names, `None` when `value` is not a wrapped key.
pub fn wrapped_under(value: &[u8]) -> Option<KekId> {
    if value.len() <= HEADER_LEN || !value.starts_with(MAGIC) {
        return None;
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&value[MAGIC.len()..MAGIC.len() + ID_LEN]);
    Some(KekId(id))
}

fn read_file(path: &Path) -> Result<(Vec<Kek>, Option<SystemTime>), KekError> {
    let fail = |reason: String| KekError::File {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(fail(
                "readable by others than its owner; `chmod 600` it".into(),
            ));
        }
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
    let keks = parse(&text).map_err(|e| fail(e.to_string()))?;
    Ok((keks, meta.modified().ok()))
}

/// The key lines of a key file's text: blank lines and comments skipped.
fn key_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|l| !l.is_empty())
}

fn parse(text: &str) -> Result<Vec<Kek>, KekError> {
    let mut keks = Vec::new();
    for (n, line) in key_lines(text).enumerate() {
        let bytes = Zeroizing::new(
            B64.decode(line)
                .map_err(|_| KekError::Malformed(format!("key {} is not base64", n + 1)))?,
        );
        let key: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            KekError::Malformed(format!("key {} is {} bytes, not 32", n + 1, bytes.len()))
        })?;
        keks.push(Kek::new(key));
    }
    if keks.is_empty() {
        return Err(KekError::Malformed("no key in it".into()));
    }
    Ok(keks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_unwraps_in_its_slot_under_its_kek_only() {
        let (a, b) = (Keyring::generate(), Keyring::generate());
        let ring = Keyring::from_text(&a).unwrap();
        let wrapped = ring.wrap("data-key:p1", b"secret key material").unwrap();
        assert!(wrapped.starts_with(MAGIC));
        assert!(
            !wrapped.windows(b"secret".len()).any(|w| w == b"secret"),
            "no plaintext in the wrapped key"
        );
        assert_eq!(
            ring.unwrap("data-key:p1", &wrapped).unwrap().as_slice(),
            b"secret key material"
        );
        assert!(matches!(
            ring.unwrap("data-key:p2", &wrapped),
            Err(KekError::Corrupt(_))
        ));
        let other = Keyring::from_text(&b).unwrap();
        let err = other.unwrap("data-key:p1", &wrapped).unwrap_err();
        assert!(
            matches!(err, KekError::UnknownKek { found, .. } if found == ring.current()),
            "{err}"
        );
        let mut tampered = wrapped.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            ring.unwrap("data-key:p1", &tampered),
            Err(KekError::Corrupt(_))
        ));
        assert!(matches!(
            ring.unwrap("data-key:p1", b"plain"),
            Err(KekError::NotWrapped)
        ));
        // A ring with both: the first wraps, both unwrap.
        let both = Keyring::from_text(&format!("{}\n{}", b.as_str(), a.as_str())).unwrap();
        assert_eq!(both.current(), other.current());
        assert!(both.unwrap("data-key:p1", &wrapped).is_ok());
    }

    #[test]
    fn the_file_is_owner_only_and_reread_when_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let (old, new) = (Keyring::generate(), Keyring::generate());
        Keyring::write_file(&path, &[&old]).unwrap();
        let ring = Keyring::from_file(&path).unwrap();
        let under_old = ring.wrap("s", b"k").unwrap();
        // Rotation writes the new KEK first and keeps the old to unwrap.
        std::thread::sleep(std::time::Duration::from_millis(20));
        Keyring::write_file(&path, &[&new, &old]).unwrap();
        let under_new = ring.wrap("s", b"k").unwrap();
        assert_ne!(wrapped_under(&under_new), wrapped_under(&under_old));
        assert!(ring.unwrap("s", &under_old).is_ok());
        // A process that never saw the new KEK learns it when it meets it.
        let fresh_old = Keyring::from_text(&old).unwrap();
        assert!(fresh_old.unwrap("s", &under_new).is_err());

        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keyring::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn missing_or_malformed_keys_say_what_to_set() {
        let missing = Keyring::load(None, None).unwrap_err().to_string();
        assert!(
            missing.contains("TRACKHRS_KEK_FILE") && missing.contains("TRACKHRS_KEK"),
            "{missing}"
        );
        for bad in ["", "# only a comment", "not base64!", "c2hvcnQ="] {
            assert!(Keyring::from_text(bad).is_err(), "{bad:?}");
        }
    }
}
