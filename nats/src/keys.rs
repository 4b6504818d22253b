//! Data keys per (organization, person), kept in a JetStream KV bucket
//! outside the event log.
//!
//! Personal data in events is sealed with AES-256-GCM under the data subject's
//! key in the org whose log holds it. Erasing a person from an org destroys
//! that key: the log is never rewritten, yet every copy of their data in it
//! becomes unreadable, and the same person id in another org keeps its own
//! key. Keys carry an id, so data sealed under a destroyed key reads as
//! erased even if the person later gets a new key.
//!
//! Keys made before keys were scoped are named by the bare person id: they
//! still open what they sealed, and seal nothing new (a person's first
//! write in an org makes their scoped key). Erasing the person destroys
//! both, so a bare key another org shared (the same person id there, which
//! the platform's derived ids make a hash collision) is destroyed with it.

use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_nats::jetstream::kv;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use futures::StreamExt;
use rand::RngCore;
use trackhrs_kek::Keyring;
use zeroize::Zeroizing;

use crate::error::StoreError;

const KEY_ID_LEN: usize = 8;
const KEY_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// One person's data key.
pub struct DataKey {
    /// Random id of this key, stored next to every value it sealed.
    pub id: String,
    cipher: Aes256Gcm,
}

impl DataKey {
    /// A key from its stored material: key id (8 bytes) followed by the AES-256 key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() != KEY_ID_LEN + KEY_LEN {
            return Err(StoreError::Keys("stored key has the wrong length".into()));
        }
        let (id, key) = bytes.split_at(KEY_ID_LEN);
        Ok(Self {
            id: hex(id),
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        })
    }

    /// Seals `plaintext`, bound to `subject` as associated data, as base64 of
    /// nonce || ciphertext || tag.
    pub fn seal(&self, subject: &str, plaintext: &str) -> Result<String, StoreError> {
        let mut out = Vec::new();
        self.seal_into(subject, plaintext, &mut out)?;
        String::from_utf8(out).map_err(|_| StoreError::Keys("encoding failed".into()))
    }

    /// [`DataKey::seal`], appending the base64 to `out`.
    ///
    /// The nonce is 96 random bits from the thread's CSPRNG (`rand`'s
    /// `ThreadRng`: ChaCha12, seeded and periodically reseeded from the
    /// operating system): one system call per seal cost a tenth of the
    /// ingest's CPU. Random nonces keep AES-GCM's usual bound of 2^32
    /// seals per key.
    pub fn seal_into(
        &self,
        subject: &str,
        plaintext: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.resize(NONCE_LEN, 0);
        rand::rng().fill_bytes(&mut sealed);
        sealed.extend_from_slice(plaintext.as_bytes());
        let (nonce, text) = sealed.split_at_mut(NONCE_LEN);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(nonce), subject.as_bytes(), text)
            .map_err(|_| StoreError::Keys("encryption failed".into()))?;
        sealed.extend_from_slice(&tag);
        let start = out.len();
        out.resize(start + sealed.len().div_ceil(3) * 4, 0);
        let written = B64
            .encode_slice(&sealed, &mut out[start..])
            .map_err(|_| StoreError::Keys("encoding failed".into()))?;
        out.truncate(start + written);
        Ok(())
    }

    /// Opens a value sealed by [`DataKey::seal`]; `None` when it does not
    /// authenticate (tampered, or sealed for another subject).
    pub fn open(&self, subject: &str, sealed: &str) -> Option<String> {
        let raw = B64.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let pt = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: subject.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(pt).ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key bucket's entry that proves which KEK wraps its keys. Person ids
/// are tokens without dots and scoped names have three parts, so it never
/// names a person.
pub const KEK_CHECK: &str = "_kek.check";

/// The bucket entry of `person`'s key in `org`: `org.<org>.<person>`.
pub fn entry_name(org: &str, person: &str) -> String {
    format!("org.{org}.{person}")
}

/// The keys a person's data in one org may be sealed under: their scoped
/// key and, from before keys were scoped, the one named by their person id.
/// Empty once erased (or when they never had one).
#[derive(Clone, Default)]
pub struct SubjectKeys {
    scoped: Option<Arc<DataKey>>,
    bare: Option<Arc<DataKey>>,
}

impl SubjectKeys {
    /// One scoped key (tests, tools).
    pub fn one(key: Arc<DataKey>) -> Self {
        Self {
            scoped: Some(key),
            bare: None,
        }
    }

    /// The key with id `id`, if it is one of these.
    pub fn by_id(&self, id: &str) -> Option<&DataKey> {
        [&self.scoped, &self.bare]
            .into_iter()
            .flatten()
            .find(|k| k.id == id)
            .map(|k| &**k)
    }

    /// Whether there is none (erased, or never had one).
    pub fn is_empty(&self) -> bool {
        self.scoped.is_none() && self.bare.is_none()
    }

    /// The key scoped to the org, if made.
    pub fn scoped(&self) -> Option<&Arc<DataKey>> {
        self.scoped.as_ref()
    }
}

/// Whether an erasure recorded in the log holds in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    /// The scoped name is marked erased and no key is left under either name.
    Done,
    /// No key is left, but the scoped name is not marked (an erasure from
    /// before keys were scoped): marking it keeps a new key from being made.
    Unmarked,
    /// A key is there (a bucket restored from a backup, a writer that
    /// raced the erasure): it must be destroyed again.
    KeyLeft,
}

/// What the bucket holds under one name.
enum Held {
    /// A wrapped key.
    Key(Vec<u8>),
    /// A delete marker: the key was destroyed.
    Erased,
    /// Nothing.
    Nothing,
}

/// The slot a person's wrapped data key is bound to (its associated data
/// under the key-encryption key).
pub fn slot(subject: &str) -> String {
    format!("data-key:{subject}")
}

/// What [`KeyStore::rewrap`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewrapped {
    /// Keys wrapped again under the current KEK (or for the first time).
    pub rewrapped: usize,
    /// Keys already wrapped under it.
    pub current: usize,
    /// Keys found under another KEK that changed before they could be
    /// replaced (an erasure, another rewrap): the next pass looks again.
    pub left: usize,
}

/// The key bucket with a small cache in front, kept coherent across processes
/// by watching the bucket: an erasure anywhere evicts the key everywhere.
/// Every key is stored wrapped under the key-encryption key
/// ([`trackhrs_kek::Keyring`]); the bucket alone opens nothing.
#[derive(Clone)]
pub struct KeyStore {
    kv: kv::Store,
    kek: Arc<Keyring>,
    /// Cached lookups by scoped name; empty caches "this person has no key
    /// in this org" (erased or never had one).
    cache: moka::sync::Cache<String, SubjectKeys>,
}

impl KeyStore {
    /// Opens the bucket (it must exist; see [`crate::provision`]), checks
    /// that `kek` is the one its keys are wrapped under (refusing to open
    /// with another), and starts watching it. A bucket from before keys
    /// were wrapped has its keys wrapped first. `on_change` is called with
    /// the name of every entry that changes, so callers can drop state
    /// derived with the old key.
    pub async fn open(
        js: &async_nats::jetstream::Context,
        bucket: &str,
        kek: Arc<Keyring>,
        on_change: impl Fn(&str) + Send + Sync + 'static,
    ) -> Result<Self, StoreError> {
        let kv = js
            .get_key_value(bucket)
            .await
            .map_err(|e| StoreError::Keys(format!("open bucket {bucket}: {e}")))?;
        let cache = moka::sync::Cache::builder()
            .max_capacity(100_000)
            // The watcher keeps the cache coherent; the expiry bounds the damage
            // if a watch update is ever missed during a reconnect.
            .time_to_live(Duration::from_secs(60))
            .build();
        let store = Self { kv, kek, cache };
        store.check_kek().await?;
        let mut watch = store
            .kv
            .watch_all()
            .await
            .map_err(|e| StoreError::Keys(format!("watch bucket {bucket}: {e}")))?;
        let watched: moka::sync::Cache<String, SubjectKeys> = store.cache.clone();
        tokio::spawn(async move {
            while let Some(entry) = watch.next().await {
                match entry {
                    Ok(entry) => {
                        if entry.key.contains('.') {
                            watched.invalidate(&entry.key);
                        } else {
                            // A key named by the bare person id stands in
                            // for any org's scoped name (erasures, rewraps
                            // of old keys: rare).
                            watched.invalidate_all();
                        }
                        // Only an erasure makes derived state wrong; a new key does not.
                        if entry.operation != kv::Operation::Put {
                            on_change(&entry.key);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "key bucket watch failed; clearing key cache");
                        watched.invalidate_all();
                    }
                }
            }
        });
        Ok(store)
    }

    /// Refuses a KEK other than the bucket's. The first process with a KEK
    /// wraps the keys stored before keys were wrapped, then records the
    /// check entry.
    async fn check_kek(&self) -> Result<(), StoreError> {
        let wrong = |e: trackhrs_kek::KekError| {
            StoreError::Keys(format!(
                "the key bucket's keys cannot be unwrapped with this key-encryption key ({e}); nothing is served"
            ))
        };
        for _ in 0..3 {
            if let Some(check) = self.kv.get(KEK_CHECK).await.map_err(keys_error)? {
                self.kek.unwrap(KEK_CHECK, &check).map_err(wrong)?;
                return Ok(());
            }
            self.rewrap().await?;
            let check = self
                .kek
                .wrap(KEK_CHECK, &rand::random::<[u8; KEY_LEN]>())
                .map_err(wrong)?;
            if self.kv.create(KEK_CHECK, check.into()).await.is_ok() {
                return Ok(());
            }
        }
        Err(StoreError::Keys(
            "the key bucket's key-encryption check could not be read or written".into(),
        ))
    }

    /// Wraps every key not yet wrapped under the current KEK again under it
    /// (`trackhrs keys rotate-kek`), keys stored in the clear included, the
    /// check entry last. Safe while the platform runs: each key is replaced
    /// only if nobody changed it since it was read (an erasure wins).
    pub async fn rewrap(&self) -> Result<Rewrapped, StoreError> {
        let current = self.kek.current();
        let mut done = Rewrapped::default();
        let mut keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(keys_error)?
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(keys_error)?;
        // The check entry last: until it names the new KEK, a process that
        // starts still finds the old one in the key file.
        keys.sort_by_key(|k| k == KEK_CHECK);
        for key in keys {
            let Some(entry) = self.kv.entry(&key).await.map_err(keys_error)? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            if trackhrs_kek::wrapped_under(&entry.value) == Some(current) {
                done.current += 1;
                continue;
            }
            let slot = if key == KEK_CHECK {
                KEK_CHECK.to_owned()
            } else {
                slot(&key)
            };
            let plain = match trackhrs_kek::wrapped_under(&entry.value) {
                Some(_) => self
                    .kek
                    .unwrap(&slot, &entry.value)
                    .map_err(|e| StoreError::Keys(format!("rewrap: {e}")))?,
                None => Zeroizing::new(entry.value.to_vec()),
            };
            let wrapped = self
                .kek
                .wrap(&slot, &plain)
                .map_err(|e| StoreError::Keys(format!("rewrap: {e}")))?;
            // A conflict means the key changed meanwhile (an erasure): the
            // next pass sees what it is now.
            if self
                .kv
                .update(&key, wrapped.into(), entry.revision)
                .await
                .is_ok()
            {
                done.rewrapped += 1;
            } else {
                done.left += 1;
            }
        }
        Ok(done)
    }

    /// The stored bytes of the key under `name`, unwrapped.
    fn unwrap_key(&self, name: &str, stored: &[u8]) -> Result<Arc<DataKey>, StoreError> {
        let material = self
            .kek
            .unwrap(&slot(name), stored)
            .map_err(|e| StoreError::Keys(format!("data key: {e}")))?;
        Ok(Arc::new(DataKey::from_bytes(&material)?))
    }

    /// What the bucket holds under `name`.
    async fn held(&self, name: &str) -> Result<Held, StoreError> {
        let entry = self
            .kv
            .entry(name)
            .await
            .map_err(|e| StoreError::Keys(format!("read key: {e}")))?;
        Ok(match entry {
            Some(e) if e.operation == kv::Operation::Put => Held::Key(e.value.to_vec()),
            Some(_) => Held::Erased,
            None => Held::Nothing,
        })
    }

    /// The keys `person`'s data in `org` opens with: their scoped key, and
    /// the one named by their person id from before keys were scoped;
    /// none once the scoped name is marked erased.
    async fn lookup(&self, org: &str, person: &str) -> Result<SubjectKeys, StoreError> {
        let name = entry_name(org, person);
        let scoped = match self.held(&name).await? {
            Held::Key(stored) => Some(self.unwrap_key(&name, &stored)?),
            Held::Erased => return Ok(SubjectKeys::default()),
            Held::Nothing => None,
        };
        let bare = match self.held(person).await? {
            Held::Key(stored) => Some(self.unwrap_key(person, &stored)?),
            Held::Erased | Held::Nothing => None,
        };
        Ok(SubjectKeys { scoped, bare })
    }

    /// The keys `person`'s data in `org` may be sealed under (empty when
    /// erased or never made).
    pub async fn key_for_read(&self, org: &str, person: &str) -> Result<SubjectKeys, StoreError> {
        let name = entry_name(org, person);
        if let Some(hit) = self.cache.get(&name) {
            return Ok(hit);
        }
        let keys = self.lookup(org, person).await?;
        self.cache.insert(name, keys.clone());
        Ok(keys)
    }

    /// `person`'s scoped key in `org`, created on first use. An erased
    /// person gets no new key: erasure is final, and personal data about
    /// them cannot be stored. (Every erasure in the log marks the scoped
    /// name: [`crate::EventStore::reconcile_erasures`] marks those from
    /// before keys were scoped when a store opens.)
    pub async fn key_for_write(&self, org: &str, person: &str) -> Result<Arc<DataKey>, StoreError> {
        let name = entry_name(org, person);
        if let Some(key) = self.cache.get(&name).and_then(|k| k.scoped) {
            return Ok(key);
        }
        for _ in 0..3 {
            match self.held(&name).await? {
                Held::Key(_) => {
                    let keys = self.lookup(org, person).await?;
                    if let Some(key) = keys.scoped.clone() {
                        self.cache.insert(name, keys);
                        return Ok(key);
                    }
                    continue;
                }
                Held::Erased => return Err(StoreError::Erased(person.to_owned())),
                Held::Nothing => {}
            }
            let mut material = Zeroizing::new(Vec::with_capacity(KEY_ID_LEN + KEY_LEN));
            material.extend_from_slice(&rand::random::<[u8; KEY_ID_LEN]>());
            material.extend_from_slice(&Aes256Gcm::generate_key(&mut OsRng));
            let wrapped = self
                .kek
                .wrap(&slot(&name), &material)
                .map_err(|e| StoreError::Keys(format!("data key: {e}")))?;
            // Revision 0: only if the name has never held anything. `create`
            // would write over an erasure's delete marker; this fails, and
            // the next pass reads what is there (another writer's key, or
            // the marker).
            if self.kv.update(&name, wrapped.into(), 0).await.is_ok() {
                self.cache.invalidate(&name);
                return Ok(Arc::new(DataKey::from_bytes(&material)?));
            }
        }
        Err(StoreError::Keys(format!(
            "could not create or read the data key of {person} in {org}"
        )))
    }

    /// Whether the erasure of `person` from `org` holds in the bucket.
    pub async fn erasure(&self, org: &str, person: &str) -> Result<Erasure, StoreError> {
        let scoped = self.held(&entry_name(org, person)).await?;
        let bare = self.held(person).await?;
        Ok(match (scoped, bare) {
            (Held::Key(_), _) | (_, Held::Key(_)) => Erasure::KeyLeft,
            (Held::Erased, _) => Erasure::Done,
            (Held::Nothing, _) => Erasure::Unmarked,
        })
    }

    /// Destroys `person`'s key in `org`, and the key named by their person
    /// id if one is left from before keys were scoped (first: it sealed the
    /// oldest data): all their sealed personal data in the org's log becomes
    /// unreadable, in every event and snapshot, on every replica. A delete
    /// marker replaces the key (the bucket keeps one value per key), and no
    /// new key is made after it. Not a purge: the bucket allows no purges
    /// and no rollups.
    pub async fn erase(&self, org: &str, person: &str) -> Result<(), StoreError> {
        if let Held::Key(_) = self.held(person).await? {
            self.kv
                .delete(person)
                .await
                .map_err(|e| StoreError::Keys(format!("erase key: {e}")))?;
            // Other orgs' lookups may hold it: this replica forgets them
            // now, not when its watch hears of it.
            self.cache.invalidate_all();
        }
        let name = entry_name(org, person);
        self.kv
            .delete(&name)
            .await
            .map_err(|e| StoreError::Keys(format!("erase key: {e}")))?;
        self.cache.invalidate(&name);
        Ok(())
    }
}

fn keys_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Keys(format!("key bucket: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_are_bound_to_key_and_subject() {
        let mut material = vec![1u8; KEY_ID_LEN];
        material.extend_from_slice(&[7u8; KEY_LEN]);
        let key = DataKey::from_bytes(&material).unwrap();
        assert_eq!(key.id, "0101010101010101");
        let sealed = key.seal("p1", "ann@example.com").unwrap();
        assert!(!sealed.contains("ann"));
        assert_eq!(key.open("p1", &sealed).as_deref(), Some("ann@example.com"));
        assert_eq!(key.open("p2", &sealed), None, "bound to its subject");
        let mut tampered = B64.decode(&sealed).unwrap();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open("p1", &B64.encode(tampered)), None);
    }

    #[test]
    fn seal_into_appends_and_never_repeats_a_nonce() {
        let mut material = vec![1u8; KEY_ID_LEN];
        material.extend_from_slice(&[7u8; KEY_LEN]);
        let key = DataKey::from_bytes(&material).unwrap();
        let mut out = b"{\"ct\":\"".to_vec();
        key.seal_into("p1", "Inbox \u{2014} \"quoted\"", &mut out)
            .unwrap();
        let sealed = std::str::from_utf8(&out)
            .unwrap()
            .strip_prefix("{\"ct\":\"")
            .unwrap();
        assert_eq!(
            key.open("p1", sealed).as_deref(),
            Some("Inbox \u{2014} \"quoted\"")
        );
        let nonces: std::collections::HashSet<Vec<u8>> = (0..10_000)
            .map(|_| B64.decode(key.seal("p1", "").unwrap()).unwrap()[..NONCE_LEN].to_vec())
            .collect();
        assert_eq!(nonces.len(), 10_000);
    }
}
