//! The key-encryption key (KEK) of every role, and `trackhrs keys`: create
//! one, re-wrap every data key and signing key under a new one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use trackhrs_kek::Keyring;

/// Where the key-encryption key comes from.
#[derive(clap::Args, Clone, Default)]
pub struct KekArgs {
    /// File holding the key-encryption key that wraps every data key and
    /// signing key (`trackhrs keys new-kek FILE` creates one; owner-only).
    /// Without it, the environment variable TRACKHRS_KEK (the key's base64)
    /// is used; `trackhrs dev` records its own in the data folder.
    #[arg(long, env = "TRACKHRS_KEK_FILE")]
    pub kek_file: Option<PathBuf>,
}

/// The environment variable holding the KEK itself (never a flag: a flag
/// shows in the process list).
const KEK_ENV: &str = "TRACKHRS_KEK";

impl KekArgs {
    /// The file given, else the one the local platform recorded.
    fn file(&self) -> Option<PathBuf> {
        self.kek_file.clone().or_else(crate::local::kek_file)
    }

    /// The keyring configured, or an error that says what to set.
    pub fn keyring(&self) -> anyhow::Result<Arc<Keyring>> {
        let text = std::env::var(KEK_ENV).ok();
        let file = match (&self.kek_file, &text) {
            (None, Some(_)) => None,
            _ => self.file(),
        };
        Ok(Arc::new(Keyring::load(file.as_deref(), text.as_deref())?))
    }

    /// The keyring of `trackhrs dev`: the one configured, else the data
    /// folder's, created on first start.
    pub fn dev_keyring(&self, data_dir: &Path) -> anyhow::Result<(Arc<Keyring>, Option<PathBuf>)> {
        if self.kek_file.is_some() || std::env::var_os(KEK_ENV).is_some() {
            return Ok((self.keyring()?, self.kek_file.clone()));
        }
        let path = data_dir.join("kek");
        if !path.exists() {
            Keyring::write_file(&path, &[&Keyring::generate()])?;
        }
        Ok((Arc::new(Keyring::from_file(&path)?), Some(path)))
    }
}

/// `trackhrs keys new-kek FILE`.
pub fn new_kek(file: &Path) -> anyhow::Result<String> {
    anyhow::ensure!(
        !file.exists(),
        "{} exists; a key-encryption key is never overwritten (rotate with `trackhrs keys rotate-kek`)",
        file.display()
    );
    Keyring::write_file(file, &[&Keyring::generate()])?;
    Ok(Keyring::from_file(file)?.current().to_string())
}

/// Passes over every key before `rotate-kek` gives up on keys still
/// appearing under the old KEK.
const ROTATION_PASSES: usize = 10;

/// What `trackhrs keys rotate-kek` did.
pub struct Rotated {
    /// The new KEK's id.
    pub new: String,
    /// The old KEK's id.
    pub old: String,
    /// Data keys wrapped again.
    pub data_keys: usize,
    /// Signing keys wrapped again.
    pub signing_keys: usize,
    /// Where the old KEK was set aside.
    pub retired: PathBuf,
}

/// `trackhrs keys rotate-kek`: puts a new KEK first in the key file (running
/// processes re-read it when it changes: the old one still unwraps, the new
/// one wraps), wraps every data key and signing key again under it, then
/// leaves only the new one in the file and sets the old one aside, beside
/// it, for the backups taken before.
pub async fn rotate_kek(
    nats: &crate::NatsArgs,
    pg: &crate::platform::PgArgs,
) -> anyhow::Result<Rotated> {
    let path = nats.kek.file().context(
        "rotate-kek rewrites the key file: give it with --kek-file or TRACKHRS_KEK_FILE \
         (move a key given in TRACKHRS_KEK to a file, and restart the processes with it, first)",
    )?;
    let old_lines = Keyring::read_lines(&path)?;
    let old = Keyring::from_file(&path)?.current().to_string();
    let new_line = Keyring::generate();
    let mut lines: Vec<&str> = vec![&new_line];
    lines.extend(old_lines.iter().map(|l| l.as_str()));
    Keyring::write_file(&path, &lines)?;
    let ring = Arc::new(Keyring::from_file(&path)?);
    let new = ring.current().to_string();

    let client = nats.connect().await?;
    let config = trackhrs_nats::StoreConfig {
        kek: Some(ring.clone()),
        ..nats.store_config()
    };
    let store = trackhrs_nats::EventStore::open(client, config).await?;
    let pool = trackhrs_app::pg_pool(pg.config()?, 2)?;
    let auth = trackhrs_credentials::Auth::open(pool, Default::default(), ring).await?;
    // A process that wrapped a new key just before it saw the new file
    // wrapped it under the old KEK: passes go on until one finds every key
    // under the new KEK. Only then is the old one taken out of the file.
    let (mut data_keys, mut signing_keys) = (0, 0);
    let mut settled = false;
    for pass in 0..ROTATION_PASSES {
        let data = store.keys().rewrap().await?;
        let (signing, _, signing_left) = auth.keys().rewrap().await?;
        data_keys += data.rewrapped;
        signing_keys += signing;
        // A pass after the first that found no key under another KEK.
        let found = data.rewrapped + data.left + signing + signing_left;
        if pass > 0 && found == 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::ensure!(
        settled,
        "keys kept appearing under the old key-encryption key after {ROTATION_PASSES} passes; \
         {} holds both keys, so nothing is lost: is a process using another key file or TRACKHRS_KEK? \
         Run rotate-kek again once every process reads {}",
        path.display(),
        path.display()
    );

    let retired = path.with_file_name(format!(
        "{}.retired-{old}",
        path.file_name()
            .map_or("kek".into(), |n| n.to_string_lossy())
    ));
    let old_refs: Vec<&str> = old_lines.iter().map(|l| l.as_str()).collect();
    Keyring::write_file(&retired, &old_refs)?;
    Keyring::write_file(&path, &[&new_line])?;
    Ok(Rotated {
        new,
        old,
        data_keys,
        signing_keys,
        retired,
    })
}
