//! Access-token signing keys, shared by every gateway replica through
//! PostgreSQL (`auth.signing_keys`), and the access tokens themselves (JWT,
//! HS256, the key id in the `kid` header).
//!
//! Every secret is stored wrapped under the key-encryption key
//! ([`trackhrs_kek::Keyring`], slot `signing-key:<kid>`): the table alone,
//! or a backup of it, signs nothing.
//!
//! The newest key that is not retired signs. Every key that is not retired
//! verifies, so tokens signed before a rotation stay valid until they expire
//! or their key is retired. Each replica reloads the keys every
//! [`RELOAD_EVERY`], and at once when a token names a key it does not know.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use trackhrs_kek::Keyring;
use zeroize::Zeroizing;

use super::AuthError;

/// How often a replica reloads the keys to learn of rotations and retirements.
pub const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// How soon a reload that failed is tried again.
const RETRY_RELOAD: Duration = Duration::from_secs(1);
/// Clock skew tolerated when checking expiry.
const LEEWAY_SECS: u64 = 5;

/// What an access token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Person id.
    pub sub: String,
    /// Organization id.
    pub org: String,
    /// Role in the organization when the token was issued.
    pub role: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
}

/// One signing key.
#[derive(Clone)]
struct Key {
    secret: Arc<Zeroizing<Vec<u8>>>,
}

/// The slot a signing key's secret is wrapped for (its associated data
/// under the key-encryption key).
pub fn slot(kid: &str) -> String {
    format!("signing-key:{kid}")
}

struct Loaded {
    current: Option<String>,
    keys: HashMap<String, Key>,
    at: Instant,
}

/// The signing keys as this replica last loaded them.
pub struct SigningKeys {
    pool: Pool,
    kek: Arc<Keyring>,
    loaded: RwLock<Loaded>,
    /// When an unknown key id last made this replica reload.
    unknown_lookup: std::sync::Mutex<Option<Instant>>,
    /// Held by the one call reloading stale keys.
    reloading: tokio::sync::Mutex<()>,
}

/// A key as listed for operators (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Unix seconds when it was created.
    pub created_at: i64,
    /// Unix seconds when it was retired, if it was.
    pub retired_at: Option<i64>,
}

impl SigningKeys {
    /// Loads the keys, creating the first one when there is none. Secrets
    /// stored before they were wrapped are wrapped first; a secret wrapped
    /// under a KEK `kek` does not hold refuses the open.
    pub async fn open(pool: Pool, kek: Arc<Keyring>) -> Result<Self, AuthError> {
        let keys = Self {
            pool,
            kek,
            loaded: RwLock::new(Loaded {
                current: None,
                keys: HashMap::new(),
                at: Instant::now(),
            }),
            unknown_lookup: std::sync::Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
        };
        keys.rewrap_where(|stored| trackhrs_kek::wrapped_under(stored).is_none())
            .await?;
        if keys.reload().await?.is_none() {
            keys.ensure_one().await?;
            keys.reload().await?;
        }
        Ok(keys)
    }

    async fn ensure_one(&self) -> Result<(), AuthError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_keys(&tx).await?;
        let live: i64 = tx
            .query_one(
                "SELECT count(*) FROM auth.signing_keys WHERE retired_at IS NULL",
                &[],
            )
            .await?
            .get(0);
        if live == 0 {
            insert_key(&tx, &self.kek).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Wraps every secret not yet wrapped under the current KEK again under
    /// it (`trackhrs keys rotate-kek`; at open, secrets stored in the clear).
    /// Returns how many were wrapped again, how many already were, and how
    /// many changed before they could be replaced (the next pass looks
    /// again).
    pub async fn rewrap(&self) -> Result<(usize, usize, usize), AuthError> {
        let current = self.kek.current();
        self.rewrap_where(|stored| trackhrs_kek::wrapped_under(stored) != Some(current))
            .await
    }

    /// Wraps again under the current KEK the secrets `stale` picks: the
    /// signing keys and the credential store's own secrets (`auth.secrets`).
    async fn rewrap_where(
        &self,
        stale: impl Fn(&[u8]) -> bool,
    ) -> Result<(usize, usize, usize), AuthError> {
        let client = self.pool.get().await?;
        let (mut rewrapped, mut already, mut left) = (0, 0, 0);
        let tables: [(&str, &str, SlotOf); 2] = [
            ("signing_keys", "kid", slot),
            ("secrets", "name", crate::throttle::slot),
        ];
        for (table, id, slot_of) in tables {
            let rows = client
                .query(&format!("SELECT {id}, secret FROM auth.{table}"), &[])
                .await?;
            for row in rows {
                let name: String = row.get(0);
                let stored: Vec<u8> = row.get(1);
                if !stale(&stored) {
                    already += 1;
                    continue;
                }
                let slot = slot_of(&name);
                let secret = match trackhrs_kek::wrapped_under(&stored) {
                    Some(_) => self.kek.unwrap(&slot, &stored).map_err(|e| {
                        AuthError::Internal(format!("{slot} cannot be unwrapped ({e})"))
                    })?,
                    None => Zeroizing::new(stored.clone()),
                };
                let wrapped = self
                    .kek
                    .wrap(&slot, &secret)
                    .map_err(|e| AuthError::Internal(format!("wrapping {slot}: {e}")))?;
                // Only if nobody changed it meanwhile (another replica's rewrap).
                let updated = client
                    .execute(
                        &format!(
                            "UPDATE auth.{table} SET secret = $1 WHERE {id} = $2 AND secret = $3"
                        ),
                        &[
                            &super::Redacted(wrapped.as_slice()),
                            &name,
                            &super::Redacted(stored.as_slice()),
                        ],
                    )
                    .await?;
                if updated == 1 {
                    rewrapped += 1;
                } else {
                    left += 1;
                }
            }
        }
        Ok((rewrapped, already, left))
    }

    fn unwrap(&self, kid: &str, stored: &[u8]) -> Result<Zeroizing<Vec<u8>>, AuthError> {
        self.kek.unwrap(&slot(kid), stored).map_err(|e| {
            AuthError::Internal(format!(
                "signing key {kid} cannot be unwrapped ({e}); nothing is signed or verified"
            ))
        })
    }

    /// Adds a new key, which signs from now on (on other replicas within
    /// [`RELOAD_EVERY`]). Returns its id.
    pub async fn rotate(&self) -> Result<String, AuthError> {
        let client = self.pool.get().await?;
        let kid = insert_key(&client, &self.kek).await?;
        self.reload().await?;
        Ok(kid)
    }

    /// Retires a key: tokens it signed are refused. Returns false when no
    /// such key exists. The last key that is not retired cannot be retired.
    pub async fn retire(&self, kid: &str) -> Result<bool, AuthError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_keys(&tx).await?;
        let others: i64 = tx
            .query_one(
                "SELECT count(*) FROM auth.signing_keys WHERE retired_at IS NULL AND kid <> $1",
                &[&kid],
            )
            .await?
            .get(0);
        if others == 0 {
            return Err(AuthError::LastKey);
        }
        let n = tx
            .execute(
                "UPDATE auth.signing_keys SET retired_at = now() WHERE kid = $1 AND retired_at IS NULL",
                &[&kid],
            )
            .await?;
        tx.commit().await?;
        self.reload().await?;
        Ok(n == 1)
    }

    /// Every key, newest first.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, AuthError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT kid, extract(epoch FROM created_at)::bigint, \
                 extract(epoch FROM retired_at)::bigint \
                 FROM auth.signing_keys ORDER BY created_at DESC",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| KeyInfo {
                kid: r.get(0),
                created_at: r.get(1),
                retired_at: r.get(2),
            })
            .collect())
    }

    /// Reloads the keys; returns the current key id, if any.
    async fn reload(&self) -> Result<Option<String>, AuthError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT kid, secret FROM auth.signing_keys WHERE retired_at IS NULL \
                 ORDER BY created_at DESC, kid DESC",
                &[],
            )
            .await?;
        let current = rows.first().map(|r| r.get::<_, String>(0));
        let keys = rows
            .iter()
            .map(|r| {
                let kid = r.get::<_, String>(0);
                let secret = self.unwrap(&kid, r.get(1))?;
                Ok((
                    kid,
                    Key {
                        secret: Arc::new(secret),
                    },
                ))
            })
            .collect::<Result<_, AuthError>>()?;
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        *loaded = Loaded {
            current: current.clone(),
            keys,
            at: Instant::now(),
        };
        Ok(current)
    }

    /// Reloads the keys when they are older than [`RELOAD_EVERY`]. When
    /// PostgreSQL cannot be reached, the keys last loaded go on signing and
    /// verifying (retiring a key needs PostgreSQL too) and the reload is
    /// tried again a second later.
    async fn reload_if_stale(&self) -> Result<(), AuthError> {
        let stale = self
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .at
            .elapsed()
            >= RELOAD_EVERY;
        if !stale {
            return Ok(());
        }
        // One reload at a time: while it runs, the others go on with the
        // keys loaded (an unreachable database must not hold every call
        // for the pool's timeout).
        let Ok(_reloading) = self.reloading.try_lock() else {
            return if self.key_count() > 0 {
                Ok(())
            } else {
                Err(AuthError::NoKey)
            };
        };
        match self.reload().await {
            Ok(_) => Ok(()),
            Err(e @ (AuthError::Db(_) | AuthError::Pool(_))) => {
                let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
                if loaded.keys.is_empty() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "the signing keys cannot be reloaded; the last ones loaded stay in use");
                loaded.at = Instant::now()
                    .checked_sub(RELOAD_EVERY - RETRY_RELOAD)
                    .unwrap_or_else(Instant::now);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Signs `claims` with the current key.
    pub async fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        self.reload_if_stale().await?;
        let (kid, key) = {
            let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            let kid = loaded.current.clone().ok_or(AuthError::NoKey)?;
            let key = loaded.keys.get(&kid).cloned().ok_or(AuthError::NoKey)?;
            (kid, key)
        };
        let header = Header {
            kid: Some(kid),
            ..Header::new(Algorithm::HS256)
        };
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(key.secret.as_slice()),
        )
        .map_err(|e| AuthError::Internal(format!("signing an access token: {e}")))
    }

    /// Verifies an access token: its key, signature and expiry.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.reload_if_stale().await?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::BadToken)?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::BadToken);
        }
        let kid = header.kid.ok_or(AuthError::BadToken)?;
        let mut key = self.key(&kid);
        // An unknown key id may be a key another replica just added; look
        // again, but at most once a second, so made-up ids cannot make every
        // request a database query.
        if key.is_none() && self.may_look_for_unknown_key() {
            self.reload().await?;
            key = self.key(&kid);
        }
        let key = key.ok_or(AuthError::BadToken)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(key.secret.as_slice()),
            &validation,
        )
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::BadToken,
        })
    }

    /// True at most once a second: whether an unknown key id may trigger a
    /// reload now.
    fn may_look_for_unknown_key(&self) -> bool {
        let mut last = self
            .unknown_lookup
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn key_count(&self) -> usize {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .len()
    }

    fn key(&self, kid: &str) -> Option<Key> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .get(kid)
            .cloned()
    }
}

/// The slot a stored secret of a given id is wrapped for.
type SlotOf = fn(&str) -> String;

/// Serializes changes to the set of keys across replicas (for the rest of
/// the transaction).
async fn lock_keys(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), AuthError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('trackhrs.auth.keys'))",
        &[],
    )
    .await?;
    Ok(())
}

fn wrap_secret(kek: &Keyring, kid: &str, secret: &[u8]) -> Result<Vec<u8>, AuthError> {
    kek.wrap(&slot(kid), secret)
        .map_err(|e| AuthError::Internal(format!("wrapping signing key {kid}: {e}")))
}

async fn insert_key(
    client: &impl deadpool_postgres::GenericClient,
    kek: &Keyring,
) -> Result<String, AuthError> {
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(secret.as_mut());
    let mut id = [0u8; 6];
    rand::rng().fill_bytes(&mut id);
    let kid: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let wrapped = wrap_secret(kek, &kid, secret.as_ref())?;
    client
        .execute(
            "INSERT INTO auth.signing_keys (kid, secret) VALUES ($1, $2)",
            &[&kid, &super::Redacted(wrapped.as_slice())],
        )
        .await?;
    Ok(kid)
}
