//! The log-in throttle: attempts counted per key in fixed windows, with a
//! block that doubles each time a key goes over its limit again.
//!
//! Keys are keyed hashes (HMAC-SHA256 under a random secret kept wrapped
//! under the key-encryption key in `auth.secrets`), so the table holds
//! neither an e-mail address nor a digest anyone could recompute from one.
//! A client is its IPv4 address or its IPv6 /64 (a household or a server
//! gets a whole /64, so rotating inside it is not a new client).

use std::net::IpAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use trackhrs_kek::Keyring;
use zeroize::Zeroizing;

use super::{AuthError, Redacted};

/// A key over its limit is blocked for its window times 2^strikes, at most
/// this many doublings.
const MAX_DOUBLINGS: i32 = 6;

/// The name of the throttle's secret in `auth.secrets`.
pub(crate) const SECRET: &str = "throttle";

/// The slot an `auth.secrets` row is wrapped for.
pub(crate) fn slot(name: &str) -> String {
    format!("auth-secret:{name}")
}

/// Who an attempt comes from, as the throttle counts it: the IPv4 address,
/// or the /64 of an IPv6 address (an IPv4-mapped one counts as IPv4);
/// `unknown` when the transport gave none.
pub fn client_of(address: Option<IpAddr>) -> String {
    match address.map(|a| a.to_canonical()) {
        None => "unknown".into(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The keyed hash throttle keys are made with.
pub(crate) struct KeyHasher {
    secret: Zeroizing<Vec<u8>>,
}

impl KeyHasher {
    /// Loads the throttle's secret, creating it on first use (every replica
    /// then reads the same one).
    pub(crate) async fn open(
        client: &deadpool_postgres::Client,
        kek: &Keyring,
    ) -> Result<Self, AuthError> {
        let mut fresh = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(fresh.as_mut());
        let wrapped = kek
            .wrap(&slot(SECRET), fresh.as_ref())
            .map_err(|e| AuthError::Internal(format!("wrapping the throttle secret: {e}")))?;
        client
            .execute(
                "INSERT INTO auth.secrets (name, secret) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
                &[&SECRET, &Redacted(wrapped.as_slice())],
            )
            .await?;
        let stored: Vec<u8> = client
            .query_one(
                "SELECT secret FROM auth.secrets WHERE name = $1",
                &[&SECRET],
            )
            .await?
            .get(0);
        let secret = kek.unwrap(&slot(SECRET), &stored).map_err(|e| {
            AuthError::Internal(format!("the throttle secret cannot be unwrapped ({e})"))
        })?;
        Ok(Self { secret })
    }

    /// The throttle key for `parts`: hex HMAC-SHA256.
    pub(crate) fn key(&self, parts: &[&str]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .expect("HMAC takes a key of any length");
        for part in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Keys this replica saw blocked, until when: a blocked client is answered
/// without a database round trip, so it cannot tie up the pool.
pub(crate) type Blocked = moka::sync::Cache<String, std::time::Instant>;

/// The cache of blocked keys.
pub(crate) fn blocked_cache() -> Blocked {
    moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(Duration::from_secs(24 * 3600))
        .build()
}

/// Counts one attempt against `key`. Refused while the key is blocked, and
/// when it is attempt `limit + 1` within `window`, which blocks the key for
/// `window` times 2^strikes (at most 2^6); a window that ends without a
/// block takes a strike away.
pub(crate) async fn attempt(
    client: &mut deadpool_postgres::Client,
    blocked: &Blocked,
    key: &str,
    limit: u32,
    window: Duration,
) -> Result<(), AuthError> {
    still_blocked(blocked, key)?;
    let tx = client.transaction().await?;
    // Created or locked, in one statement.
    let row = tx
        .query_one(
            "INSERT INTO auth.login_throttle AS t (key, window_start, count) VALUES ($1, now(), 0) \
             ON CONFLICT (key) DO UPDATE SET key = t.key \
             RETURNING count, extract(epoch FROM now() - window_start)::float8, \
             coalesce(extract(epoch FROM blocked_until - now())::float8, 0), strikes, \
             coalesce(blocked_until <= window_start, true)",
            &[&key],
        )
        .await?;
    let blocked_for: f64 = row.get(2);
    if blocked_for > 0.0 {
        remember(blocked, key, blocked_for);
        return Err(throttled(blocked_for));
    }
    let window_ended = row.get::<_, f64>(1) >= window.as_secs_f64();
    let mut strikes: i32 = row.get(3);
    let count = if window_ended {
        // The window that ended without a block takes a strike away.
        if row.get::<_, bool>(4) {
            strikes = (strikes - 1).max(0);
        }
        1
    } else {
        row.get::<_, i32>(0) + 1
    };
    if i64::from(count) > i64::from(limit) {
        let block = window.as_secs_f64() * 2f64.powi(strikes.min(MAX_DOUBLINGS));
        tx.execute(
            "UPDATE auth.login_throttle SET count = 0, window_start = now(), \
             strikes = $3 + 1, blocked_until = now() + make_interval(secs => $2) \
             WHERE key = $1",
            &[&key, &block, &strikes],
        )
        .await?;
        tx.commit().await?;
        remember(blocked, key, block);
        return Err(throttled(block));
    }
    tx.execute(
        "UPDATE auth.login_throttle SET count = $2, strikes = $4, \
         window_start = CASE WHEN $3 THEN now() ELSE window_start END WHERE key = $1",
        &[&key, &count, &window_ended, &strikes],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Refuses `key` while this replica knows it is blocked, without asking
/// the database.
pub(crate) fn still_blocked(blocked: &Blocked, key: &str) -> Result<(), AuthError> {
    if let Some(until) = blocked.get(key) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if !left.is_zero() {
            return Err(throttled(left.as_secs_f64()));
        }
    }
    Ok(())
}

fn remember(blocked: &Blocked, key: &str, seconds: f64) {
    blocked.insert(
        key.to_owned(),
        std::time::Instant::now() + Duration::from_secs_f64(seconds),
    );
}

fn throttled(seconds: f64) -> AuthError {
    AuthError::Throttled {
        retry_after_secs: (seconds.ceil() as u64).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::client_of;

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_64() {
        let at = |s: &str| client_of(Some(s.parse().unwrap()));
        assert_eq!(at("203.0.113.7"), "203.0.113.7");
        assert_eq!(at("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(at("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(at("2001:db8:1:2:ffff:1:2:3"), at("2001:db8:1:2::1"));
        assert_ne!(at("2001:db8:1:3::1"), at("2001:db8:1:2::1"));
        assert_eq!(client_of(None), "unknown");
    }
}
