//! Credentials: accounts with argon2id password hashes, access tokens
//! signed with rotating keys, refresh, device and invitation tokens, and the
//! log-in throttle.
//!
//! Architecture invariant: this crate is the only one that reads or writes
//! the credential tables (PostgreSQL schema `auth`); secrets are stored only
//! as hashes and never logged.
//!
//! Credentials live in PostgreSQL (schema `auth`), never in the event log: the
//! log is immutable, and a credential must be replaceable and erasable. Secrets
//! are stored only as hashes (argon2id for passwords, SHA-256 for random
//! tokens). Every replica reads the same tables, so revoking a refresh or
//! device token takes effect on the next request everywhere.

pub mod keys;
pub mod password;
pub mod secret;
pub mod throttle;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;

pub use keys::{Claims, KeyInfo, SigningKeys};
use secret::Kind;
use throttle::KeyHasher;
pub use throttle::client_of;

const SCHEMA: &str = include_str!("schema.sql");

/// A secret query parameter: sent to PostgreSQL as `T` is, shown as
/// `<redacted>` by `Debug`, so tokio-postgres's debug log of statement
/// parameters never prints it.
#[derive(Clone, Copy)]
pub(crate) struct Redacted<T>(pub(crate) T);

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T: tokio_postgres::types::ToSql> tokio_postgres::types::ToSql for Redacted<T> {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        T::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Most argon2 hashes computed at once per replica.
pub const MAX_CONCURRENT_HASHES: usize = 4;

/// The form of an e-mail address credentials are keyed by: trimmed and
/// ASCII-lower-cased, the same comparison the organization aggregate makes.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// Lifetimes and log-in limits.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Lifetime of an access token.
    pub access_ttl: Duration,
    /// Lifetime of a refresh token.
    pub refresh_ttl: Duration,
    /// Lifetime of an invitation token.
    pub invitation_ttl: Duration,
    /// Log-ins to one account from one client that may fail ...
    pub account_failures: u32,
    /// ... within this window; one more blocks that client from that
    /// account for the window, doubled for each block before it (a window
    /// without a block takes one doubling away). Other clients still get
    /// in.
    pub account_window: Duration,
    /// Attempts of one kind (log-in, sign-up, invitation) per client
    /// before it is blocked from that kind ...
    pub address_attempts: u32,
    /// ... within this window (doubling likewise).
    pub address_window: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            invitation_ttl: Duration::from_secs(7 * 24 * 3600),
            account_failures: 5,
            account_window: Duration::from_secs(15 * 60),
            address_attempts: 30,
            address_window: Duration::from_secs(60),
        }
    }
}

/// What can go wrong authenticating. The gateway maps these to gRPC statuses
/// in `status.rs`; none of the messages contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token, or a token that is malformed, tampered with, signed by an
    /// unknown or retired key, or of the wrong kind.
    #[error("invalid credentials")]
    BadToken,
    /// The access token expired.
    #[error("the access token expired; refresh it")]
    Expired,
    /// The refresh, device or invitation token was revoked, spent or expired.
    #[error("the token was revoked or has expired")]
    Revoked,
    /// Wrong e-mail or password (the same answer for both).
    #[error("wrong e-mail address or password")]
    BadCredentials,
    /// Too many log-in attempts.
    #[error("too many log-in attempts; try again in {retry_after_secs} seconds")]
    Throttled {
        /// Seconds until the window ends.
        retry_after_secs: u64,
    },
    /// The invitation was accepted already.
    #[error("the invitation was already accepted")]
    InvitationUsed,
    /// No signing key is available.
    #[error("no access-token signing key is available")]
    NoKey,
    /// Retiring this key would leave none to sign with.
    #[error("the last signing key cannot be retired; rotate first")]
    LastKey,
    /// PostgreSQL failed.
    #[error("credential store: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had.
    #[error("credential store unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Anything else that is our fault.
    #[error("{0}")]
    Internal(String),
}

/// Tokens handed out by a log-in. Its `Debug` hides the tokens.
#[derive(Clone)]
pub struct Session {
    /// Signed access token.
    pub access_token: String,
    /// Unix seconds when it expires.
    pub access_expires_at: i64,
    /// Refresh token (shown once).
    pub refresh_token: String,
    /// Unix seconds when it expires.
    pub refresh_expires_at: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("access_token", &"<redacted>")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_token", &"<redacted>")
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish()
    }
}

/// Who a device token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Organization.
    pub org_id: String,
    /// Device.
    pub device_id: String,
    /// Its member.
    pub person_id: String,
}

/// An invitation that was just accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The invited member.
    pub person_id: String,
}

/// What a [`Auth::sweep`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Throttle counts.
    pub throttle: u64,
    /// Refresh tokens.
    pub refresh_tokens: u64,
}

/// The credential store and token service.
pub struct Auth {
    pool: Pool,
    keys: SigningKeys,
    config: AuthConfig,
    /// A real argon2id hash of a random password, verified against when the
    /// e-mail is unknown so both answers take as long.
    dummy_hash: String,
    /// Bounds concurrent argon2 work.
    hashing: tokio::sync::Semaphore,
    /// Makes the throttle's keys.
    throttle_keys: KeyHasher,
    /// Throttle keys this replica saw blocked.
    blocked: throttle::Blocked,
    /// Device tokens seen valid, by digest: used only while PostgreSQL is
    /// unreachable, so agents keep uploading through a database outage.
    known_devices: moka::sync::Cache<Vec<u8>, DeviceIdentity>,
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Auth {
    /// Applies the `auth` schema (idempotent, safe from several replicas at
    /// once) and loads the signing keys, which are wrapped under `kek`.
    pub async fn open(
        pool: Pool,
        config: AuthConfig,
        kek: std::sync::Arc<trackhrs_kek::Keyring>,
    ) -> Result<Self, AuthError> {
        migrate(&pool).await?;
        let throttle_keys = KeyHasher::open(&pool.get().await?, &kek).await?;
        let keys = SigningKeys::open(pool.clone(), kek).await?;
        let dummy_hash = blocking(|| {
            let (random, _) = secret::generate(Kind::Refresh);
            password::hash(&random).map_err(|e| AuthError::Internal(e.to_string()))
        })
        .await?;
        Ok(Self {
            pool,
            keys,
            config,
            dummy_hash,
            hashing: tokio::sync::Semaphore::new(MAX_CONCURRENT_HASHES),
            throttle_keys,
            blocked: throttle::blocked_cache(),
            known_devices: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        })
    }

    /// The signing keys (for rotation by operators).
    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// Hashes a password off the async runtime; at most
    /// [`MAX_CONCURRENT_HASHES`] at once (each takes about 19 MiB).
    pub async fn hash_password(&self, password: String) -> Result<String, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        blocking(move || password::hash(&password).map_err(|e| AuthError::Internal(e.to_string())))
            .await
    }

    async fn verify_password(&self, password: String, stored: String) -> Result<bool, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        blocking(move || Ok(password::verify(&password, &stored))).await
    }

    /// Stores an account's password hash unless the person has one already.
    /// Returns whether it was stored.
    pub async fn put_account_if_absent(
        &self,
        org: &str,
        person: &str,
        email: &str,
        password_hash: &str,
    ) -> Result<bool, AuthError> {
        let client = self.pool.get().await?;
        let stored = client
            .execute(
                "INSERT INTO auth.accounts (org_id, person_id, email_lower, password_hash) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, person_id) DO NOTHING",
                &[
                    &org,
                    &person,
                    &Redacted(normalize_email(email).as_str()),
                    &Redacted(password_hash),
                ],
            )
            .await?;
        Ok(stored == 1)
    }

    /// Checks a log-in. Throttles per client (every attempt) and per
    /// account and client (attempts that fail), and verifies a hash whether
    /// or not the e-mail is known, so the answer's timing does not tell
    /// which it was. No PostgreSQL connection is held while the hash is
    /// verified. Returns the person id.
    pub async fn check_login(
        &self,
        org: &str,
        email: &str,
        password: String,
        address: Option<std::net::IpAddr>,
    ) -> Result<String, AuthError> {
        let email = normalize_email(email);
        let client = client_of(address);
        // Counted before the password is checked, so concurrent guesses
        // cannot slip past the limit; a success clears the count. Keyed by
        // client too: whoever guesses from one client does not lock the
        // account's owner out everywhere.
        let account_key = self.throttle_keys.key(&["account", org, &email, &client]);
        // A client known to be blocked gets no database connection.
        throttle::still_blocked(&self.blocked, &account_key)?;
        if address.is_some() {
            let client_key = self.throttle_keys.key(&["client", "log-in", &client]);
            throttle::still_blocked(&self.blocked, &client_key)?;
        }
        let account = {
            let mut db = self.pool.get().await?;
            self.count_attempt(&mut db, "log-in", address).await?;
            throttle::attempt(
                &mut db,
                &self.blocked,
                &account_key,
                self.config.account_failures,
                self.config.account_window,
            )
            .await?;
            db.query_opt(
                "SELECT person_id, password_hash FROM auth.accounts \
                 WHERE org_id = $1 AND email_lower = $2",
                &[&org, &Redacted(email.as_str())],
            )
            .await?
        };
        let (person, stored) = match account {
            Some(row) => (Some(row.get::<_, String>(0)), row.get::<_, String>(1)),
            None => (None, self.dummy_hash.clone()),
        };
        let matches = self.verify_password(password, stored).await?;
        match person {
            Some(person) if matches => {
                self.pool
                    .get()
                    .await?
                    .execute(
                        "DELETE FROM auth.login_throttle WHERE key = $1",
                        &[&account_key],
                    )
                    .await?;
                Ok(person)
            }
            _ => Err(AuthError::BadCredentials),
        }
    }

    /// Counts an attempt of `kind` (log-in, sign-up, invitation) from a
    /// client, refusing it beyond the limit. In-process callers (no
    /// address) are not counted.
    async fn count_attempt(
        &self,
        db: &mut deadpool_postgres::Client,
        kind: &str,
        address: Option<std::net::IpAddr>,
    ) -> Result<(), AuthError> {
        if address.is_none() {
            return Ok(());
        }
        let key = self
            .throttle_keys
            .key(&["client", kind, &client_of(address)]);
        throttle::attempt(
            db,
            &self.blocked,
            &key,
            self.config.address_attempts,
            self.config.address_window,
        )
        .await
    }

    /// Counts a sign-up or invitation attempt from a client address.
    pub async fn throttle(
        &self,
        kind: &str,
        address: Option<std::net::IpAddr>,
    ) -> Result<(), AuthError> {
        let mut db = self.pool.get().await?;
        self.count_attempt(&mut db, kind, address).await
    }

    /// Issues an access token and a refresh token for a member who just
    /// proved who they are: the refresh token starts a family.
    pub async fn issue_session(
        &self,
        org: &str,
        person: &str,
        role: &str,
    ) -> Result<Session, AuthError> {
        let (access_token, access_expires_at) = self.access_token(org, person, role).await?;
        let client = self.pool.get().await?;
        let (refresh_token, refresh_expires_at) =
            insert_refresh(&client, org, person, None, self.config.refresh_ttl).await?;
        Ok(Session {
            access_token,
            access_expires_at,
            refresh_token,
            refresh_expires_at,
        })
    }

    async fn access_token(
        &self,
        org: &str,
        person: &str,
        role: &str,
    ) -> Result<(String, i64), AuthError> {
        let now = now_secs();
        let expires_at = now + self.config.access_ttl.as_secs() as i64;
        let token = self
            .keys
            .sign(&Claims {
                sub: person.to_owned(),
                org: org.to_owned(),
                role: role.to_owned(),
                iat: now,
                exp: expires_at,
            })
            .await?;
        Ok((token, expires_at))
    }

    /// Who a live refresh token was issued to: (org, person). Spends
    /// nothing. A token spent before (presented again: someone kept a
    /// copy) revokes its whole family, so whoever holds the newest token of
    /// it must log in again too.
    pub async fn refresh_holder(&self, token: &str) -> Result<(String, String), AuthError> {
        let digest = secret::digest_of(Kind::Refresh, token).ok_or(AuthError::BadToken)?;
        let client = self.pool.get().await?;
        let live = client
            .query_opt(
                "SELECT org_id, person_id FROM auth.refresh_tokens \
                 WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()",
                &[&digest],
            )
            .await?;
        match live {
            Some(row) => Ok((row.get(0), row.get(1))),
            None => Err(revoke_family(&client, &digest).await?),
        }
    }

    /// Spends a live refresh token of `org`'s `person` (its
    /// [`Self::refresh_holder`]) and issues its successor in the same
    /// family with an access token for `role`, in one transaction: a fault
    /// before it commits leaves the old token usable for a retry, and of
    /// two refreshes of one token the later finds it spent and revokes the
    /// family, the earlier one's successor included.
    pub async fn rotate_refresh(
        &self,
        token: &str,
        org: &str,
        person: &str,
        role: &str,
    ) -> Result<Session, AuthError> {
        let digest = secret::digest_of(Kind::Refresh, token).ok_or(AuthError::BadToken)?;
        let (access_token, access_expires_at) = self.access_token(org, person, role).await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let spent = tx
            .query_opt(
                "UPDATE auth.refresh_tokens SET revoked_at = now() \
                 WHERE token_hash = $1 AND org_id = $2 AND person_id = $3 \
                 AND revoked_at IS NULL AND expires_at > now() \
                 RETURNING family",
                &[&digest, &org, &person],
            )
            .await?;
        let Some(spent) = spent else {
            // Spent meanwhile: this statement waited for that transaction
            // and sees its successor token, which goes with the family.
            let refused = revoke_family(&tx, &digest).await?;
            tx.commit().await?;
            return Err(refused);
        };
        let family: Vec<u8> = spent.get(0);
        let (refresh_token, refresh_expires_at) =
            insert_refresh(&tx, org, person, Some(&family), self.config.refresh_ttl).await?;
        tx.commit().await?;
        Ok(Session {
            access_token,
            access_expires_at,
            refresh_token,
            refresh_expires_at,
        })
    }

    /// Revokes a refresh token (log-out). Unknown tokens are ignored.
    pub async fn revoke_refresh(&self, token: &str) -> Result<(), AuthError> {
        let digest = secret::digest_of(Kind::Refresh, token).ok_or(AuthError::BadToken)?;
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE auth.refresh_tokens SET revoked_at = now() \
                 WHERE token_hash = $1 AND revoked_at IS NULL",
                &[&digest],
            )
            .await?;
        Ok(())
    }

    /// Verifies an access token.
    pub async fn verify_access(&self, token: &str) -> Result<Claims, AuthError> {
        self.keys.verify(token).await
    }

    /// Creates (or, for a retried invitation, replaces) the member's
    /// invitation token. Returns the token and its expiry (Unix seconds).
    /// An invitation already accepted is not replaced
    /// ([`AuthError::InvitationUsed`]): a retried command id must not reopen
    /// an account that has a password.
    pub async fn put_invitation(
        &self,
        org: &str,
        person: &str,
        email: &str,
    ) -> Result<(String, i64), AuthError> {
        let (token, digest) = secret::generate(Kind::Invitation);
        let client = self.pool.get().await?;
        let expires: i64 = client
            .query_opt(
                "INSERT INTO auth.invitations (org_id, person_id, email_lower, token_hash, expires_at) \
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) \
                 ON CONFLICT (org_id, person_id) DO UPDATE \
                 SET token_hash = EXCLUDED.token_hash, expires_at = EXCLUDED.expires_at, \
                     email_lower = EXCLUDED.email_lower \
                 WHERE auth.invitations.used_at IS NULL \
                 RETURNING extract(epoch FROM expires_at)::bigint",
                &[
                    &org,
                    &person,
                    &Redacted(normalize_email(email).as_str()),
                    &digest,
                    &secs(self.config.invitation_ttl),
                ],
            )
            .await?
            .ok_or(AuthError::InvitationUsed)?
            .get(0);
        Ok((token, expires))
    }

    /// Whether an invitation token can be accepted now.
    pub async fn check_invitation(&self, org: &str, token: &str) -> Result<(), AuthError> {
        let digest = secret::digest_of(Kind::Invitation, token).ok_or(AuthError::BadToken)?;
        let client = self.pool.get().await?;
        client
            .query_opt(
                "SELECT 1 FROM auth.invitations WHERE token_hash = $1 AND org_id = $2 \
                 AND used_at IS NULL AND expires_at > now()",
                &[&digest, &org],
            )
            .await?
            .map(|_| ())
            .ok_or(AuthError::Revoked)
    }

    /// Whether the person has an account (a password) already.
    pub async fn has_account(&self, org: &str, person: &str) -> Result<bool, AuthError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM auth.accounts WHERE org_id = $1 AND person_id = $2",
                &[&org, &person],
            )
            .await?
            .is_some())
    }

    /// Those of `persons` who have an account in `org` (accepted their
    /// invitation or signed up).
    pub async fn account_holders(
        &self,
        org: &str,
        persons: &[&str],
    ) -> Result<std::collections::HashSet<String>, AuthError> {
        let client = self.pool.get().await?;
        Ok(client
            .query(
                "SELECT person_id FROM auth.accounts WHERE org_id = $1 AND person_id = ANY($2)",
                &[&org, &persons],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Accepts an invitation: spends the single-use token and sets the
    /// member's password, in one transaction.
    pub async fn accept_invitation(
        &self,
        org: &str,
        token: &str,
        password_hash: &str,
    ) -> Result<Accepted, AuthError> {
        let digest = secret::digest_of(Kind::Invitation, token).ok_or(AuthError::BadToken)?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "UPDATE auth.invitations SET used_at = now() \
                 WHERE token_hash = $1 AND org_id = $2 AND used_at IS NULL AND expires_at > now() \
                 RETURNING person_id, email_lower",
                &[&digest, &org],
            )
            .await?
            .ok_or(AuthError::Revoked)?;
        let person: String = row.get(0);
        let email: String = row.get(1);
        tx.execute(
            "INSERT INTO auth.accounts (org_id, person_id, email_lower, password_hash) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, person_id) DO UPDATE \
             SET password_hash = EXCLUDED.password_hash, updated_at = now()",
            &[
                &org,
                &person,
                &Redacted(email.as_str()),
                &Redacted(password_hash),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Accepted { person_id: person })
    }

    /// Creates (or, for a retried enrollment, replaces) a device's token.
    /// A revoked device, or a device of another person, gets no new token.
    pub async fn put_device_token(
        &self,
        org: &str,
        device: &str,
        person: &str,
    ) -> Result<String, AuthError> {
        let (token, digest) = secret::generate(Kind::Device);
        let client = self.pool.get().await?;
        let stored = client
            .execute(
                "INSERT INTO auth.device_tokens (org_id, device_id, person_id, token_hash) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (org_id, device_id) DO UPDATE SET token_hash = EXCLUDED.token_hash \
                 WHERE auth.device_tokens.revoked_at IS NULL \
                 AND auth.device_tokens.person_id = EXCLUDED.person_id",
                &[&org, &device, &person, &digest],
            )
            .await?;
        if stored == 0 {
            return Err(AuthError::Revoked);
        }
        Ok(token)
    }

    /// Who a device token stands for; refused once revoked. When PostgreSQL
    /// cannot be reached, a token seen valid within the last hour is accepted
    /// (a revocation needs PostgreSQL too, so none can have happened since).
    pub async fn authenticate_device(&self, token: &str) -> Result<DeviceIdentity, AuthError> {
        let digest = secret::digest_of(Kind::Device, token).ok_or(AuthError::BadToken)?;
        match self.lookup_device(&digest).await {
            Ok(identity) => {
                self.known_devices.insert(digest, identity.clone());
                Ok(identity)
            }
            Err(AuthError::Revoked) => {
                self.known_devices.invalidate(&digest);
                Err(AuthError::Revoked)
            }
            Err(e @ (AuthError::Db(_) | AuthError::Pool(_))) => {
                match self.known_devices.get(&digest) {
                    Some(identity) => {
                        tracing::warn!(error = %e, "credential store unreachable; accepting a device token seen valid");
                        Ok(identity)
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn lookup_device(&self, digest: &Vec<u8>) -> Result<DeviceIdentity, AuthError> {
        let client = self.pool.get().await?;
        // Every upload comes this way: prepared once per pooled connection,
        // not parsed and planned again for each request.
        let lookup = client
            .prepare_cached(
                "SELECT org_id, device_id, person_id, revoked_at IS NOT NULL \
                 FROM auth.device_tokens WHERE token_hash = $1",
            )
            .await?;
        let row = client
            .query_opt(&lookup, &[digest])
            .await?
            .ok_or(AuthError::BadToken)?;
        if row.get::<_, bool>(3) {
            return Err(AuthError::Revoked);
        }
        Ok(DeviceIdentity {
            org_id: row.get(0),
            device_id: row.get(1),
            person_id: row.get(2),
        })
    }

    /// Revokes a device's token.
    pub async fn revoke_device(&self, org: &str, device: &str) -> Result<(), AuthError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE auth.device_tokens SET revoked_at = now() \
                 WHERE org_id = $1 AND device_id = $2 AND revoked_at IS NULL",
                &[&org, &device],
            )
            .await?;
        Ok(())
    }

    /// Erases a person's credentials: their account (e-mail and password
    /// hash), invitation, refresh and device tokens. Returns the rows
    /// deleted. Together with destroying their data key this leaves nothing
    /// of them readable.
    pub async fn erase_person(&self, org: &str, person: &str) -> Result<u64, AuthError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut deleted = 0;
        for table in ["accounts", "invitations", "refresh_tokens", "device_tokens"] {
            deleted += tx
                .execute(
                    &format!("DELETE FROM auth.{table} WHERE org_id = $1 AND person_id = $2"),
                    &[&org, &person],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Deletes credentials nothing needs any more: throttle counts idle
    /// for a day (their windows and blocks long over), and refresh-token
    /// families whose every token has expired (while one lives, its spent
    /// ancestors are kept to recognize a copy presented again). Returns the
    /// rows deleted. Safe on several replicas at once.
    pub async fn sweep(&self) -> Result<Swept, AuthError> {
        let client = self.pool.get().await?;
        let throttle = client
            .execute(
                "DELETE FROM auth.login_throttle \
                 WHERE greatest(window_start, coalesce(blocked_until, window_start)) \
                       < now() - interval '1 day'",
                &[],
            )
            .await?;
        let refresh_tokens = client
            .execute(
                "DELETE FROM auth.refresh_tokens t WHERE t.expires_at < now() \
                 AND NOT EXISTS (SELECT 1 FROM auth.refresh_tokens n \
                                 WHERE n.family = t.family AND n.expires_at >= now())",
                &[],
            )
            .await?;
        Ok(Swept {
            throttle,
            refresh_tokens,
        })
    }

    /// Revokes every device and refresh token of a member (deactivation).
    pub async fn revoke_person(&self, org: &str, person: &str) -> Result<(), AuthError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "UPDATE auth.device_tokens SET revoked_at = now() \
             WHERE org_id = $1 AND person_id = $2 AND revoked_at IS NULL",
            &[&org, &person],
        )
        .await?;
        tx.execute(
            "UPDATE auth.refresh_tokens SET revoked_at = now() \
             WHERE org_id = $1 AND person_id = $2 AND revoked_at IS NULL",
            &[&org, &person],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A revocation recorded in the event log, as the revocation policy hands it
/// on (see [`revoke_recorded`]).
#[derive(Debug, Clone, Copy)]
pub enum Revocation<'a> {
    /// A member was deactivated: their refresh tokens go.
    Member {
        /// Their organization.
        org: &'a str,
        /// The member.
        person: &'a str,
    },
    /// A device was revoked: its token goes.
    Device {
        /// Its organization.
        org: &'a str,
        /// The device.
        device: &'a str,
    },
}

/// Revokes, inside `tx`, the credentials a revocation covers: those issued
/// at or before `cutoff_micros` (microseconds since the Unix epoch), so a
/// replay of an old revocation does not revoke what was issued after it.
/// The caller picks the cutoff (the revocation policy adds slack for clock
/// skew between the gateway and PostgreSQL where revoking a little too much
/// beats too little). Idempotent.
pub async fn revoke_recorded(
    tx: &tokio_postgres::Transaction<'_>,
    revocation: Revocation<'_>,
    cutoff_micros: i64,
) -> Result<(), AuthError> {
    let cutoff = cutoff_micros as f64 / 1e6;
    let (sql, org, id) = match revocation {
        Revocation::Member { org, person } => (
            "UPDATE auth.refresh_tokens SET revoked_at = now() \
             WHERE org_id = $1 AND person_id = $2 AND revoked_at IS NULL \
             AND issued_at <= to_timestamp($3)",
            org,
            person,
        ),
        Revocation::Device { org, device } => (
            "UPDATE auth.device_tokens SET revoked_at = now() \
             WHERE org_id = $1 AND device_id = $2 AND revoked_at IS NULL \
             AND created_at <= to_timestamp($3)",
            org,
            device,
        ),
    };
    tx.execute(sql, &[&org, &id, &cutoff]).await?;
    Ok(())
}

/// Database roles that get access to the `auth` schema (see
/// `infra/postgres/roles.sql`).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// The gateway's role: reads and writes every credential table.
    pub gateway: Option<String>,
    /// The projections' role: may only revoke tokens (the revocation
    /// policy): reads their ids, dates and revocation, and sets the
    /// revocation. No password hash, token hash, e-mail or signing key.
    pub projections: Option<String>,
}

/// Grants `grants`' roles their access to the `auth` schema; run by its
/// owner (the migration role) after [`migrate`]. Idempotent.
pub async fn grant(pool: &Pool, grants: &Grants) -> Result<(), AuthError> {
    let role = |name: &str| -> Result<String, AuthError> {
        let ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && name.len() <= 63;
        if ok {
            Ok(format!("\"{name}\""))
        } else {
            Err(AuthError::Internal(format!(
                "{name:?} is not a role name this grants to ([a-z_][a-z0-9_]*)"
            )))
        }
    };
    let client = pool.get().await?;
    if let Some(gateway) = &grants.gateway {
        let gateway = role(gateway)?;
        client
            .batch_execute(&format!(
                "GRANT USAGE ON SCHEMA auth TO {gateway};
                 GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA auth TO {gateway};"
            ))
            .await?;
    }
    if let Some(projections) = &grants.projections {
        let projections = role(projections)?;
        client
            .batch_execute(&format!(
                "GRANT USAGE ON SCHEMA auth TO {projections};
                 GRANT SELECT (org_id, person_id, issued_at, revoked_at), UPDATE (revoked_at)
                     ON auth.refresh_tokens TO {projections};
                 GRANT SELECT (org_id, device_id, created_at, revoked_at), UPDATE (revoked_at)
                     ON auth.device_tokens TO {projections};"
            ))
            .await?;
    }
    Ok(())
}

/// Applies the `auth` schema under an advisory lock.
pub async fn migrate(pool: &Pool) -> Result<(), AuthError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    migrate_in(&tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The tag the `auth` schema carries as its comment once this code's
/// `schema.sql` is applied: a digest of the file.
fn schema_tag() -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(SCHEMA.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("trackhrs auth schema {hex}")
}

/// Applies the `auth` schema inside `tx`, under an advisory lock held until
/// it ends. A schema already applied by this code (its comment says so) is
/// left alone without any DDL, so roles that may not change the schema (the
/// gateway's, the projections') get through; the migration role applies it
/// (`trackhrs migrate`).
pub async fn migrate_in(tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('trackhrs.auth.schema'))",
        &[],
    )
    .await?;
    let tag = schema_tag();
    let applied: Option<String> = tx
        .query_one(
            "SELECT obj_description(to_regnamespace('auth'), 'pg_namespace')",
            &[],
        )
        .await?
        .get(0);
    if applied.as_deref() == Some(tag.as_str()) {
        return Ok(());
    }
    tx.batch_execute(SCHEMA).await?;
    tx.batch_execute(&format!("COMMENT ON SCHEMA auth IS '{tag}'"))
        .await
}

/// Stores a new refresh token of `family` (a new family when `None`);
/// returns it and its expiry (Unix seconds).
async fn insert_refresh(
    client: &impl deadpool_postgres::GenericClient,
    org: &str,
    person: &str,
    family: Option<&[u8]>,
    ttl: Duration,
) -> Result<(String, i64), AuthError> {
    let (token, digest) = secret::generate(Kind::Refresh);
    let expires_at: i64 = client
        .query_one(
            "INSERT INTO auth.refresh_tokens (token_hash, org_id, person_id, expires_at, family) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5) \
             RETURNING extract(epoch FROM expires_at)::bigint",
            &[
                &digest,
                &org,
                &person,
                &secs(ttl),
                &family.unwrap_or(&digest),
            ],
        )
        .await?
        .get(0);
    Ok((token, expires_at))
}

/// The answer to a refresh token that is not live: revoked. One that is
/// known (spent or expired, not unknown) revokes every live token of its
/// family.
async fn revoke_family(
    client: &impl deadpool_postgres::GenericClient,
    digest: &Vec<u8>,
) -> Result<AuthError, AuthError> {
    let reused = client
        .execute(
            "UPDATE auth.refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL \
             AND family = (SELECT family FROM auth.refresh_tokens WHERE token_hash = $1)",
            &[digest],
        )
        .await?;
    if reused > 0 {
        tracing::warn!(
            revoked = reused,
            "a spent refresh token was presented again; its family is revoked"
        );
    }
    Ok(AuthError::Revoked)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuthError::Internal(format!("password hashing task: {e}")))?
}
