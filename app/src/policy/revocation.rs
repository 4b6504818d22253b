//! The revocation policy: a member's deactivation or a device's revocation
//! in the log revokes their credentials (refresh tokens, the device's
//! token). The administration use cases revoke at once when they record the
//! command; this policy makes sure a process that died between the commit
//! and that revocation leaves no token alive.
//!
//! Only credentials issued before the event was recorded are touched (see
//! [`trackhrs_credentials::revoke_recorded`]), with a minute of slack for
//! clock skew; for a member who is active again in the organization's
//! current state, without slack, so a policy that lags, or replays an old
//! deactivation, takes nothing away that was issued after a reactivation.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Transaction;
use trackhrs_credentials::revoke_recorded;
use trackhrs_domain::Token;
use trackhrs_domain::organization::{OrgEvent, Organization};
use trackhrs_nats::{EventStore, KeyStore, StoreError, TypedCommit, decode_typed};
use trackhrs_projections::{ApplyError, Projection};

/// The policy's name in the projection catalog.
pub const NAME: &str = "revocation";

/// Slack for clock skew between the gateway that recorded an event and
/// PostgreSQL, which stamped the credentials.
const CLOCK_SKEW_MICROS: i64 = 60_000_000;

/// The revocation policy, run as a projection without tables.
pub struct Revocation {
    store: EventStore,
    version: u32,
}

impl Revocation {
    /// The policy at catalog `version`, reading organizations' current state
    /// from `store`. A new version replays every revocation, which takes
    /// away nothing that was issued since (see the module documentation).
    pub fn new(store: EventStore, version: u32) -> Self {
        Self { store, version }
    }

    /// Whether `member` is active in `org` now. An organization that cannot
    /// be read for a reason retrying cannot cure makes this commit a dead
    /// letter, so it does not hold up every other org's revocations.
    async fn active_now(
        &self,
        states: &mut HashMap<String, Arc<Organization>>,
        commit: &TypedCommit<OrgEvent>,
        member: &Token,
    ) -> Result<bool, ApplyError> {
        let org = commit.org_id.as_str();
        let poison = |reason: String| ApplyError::Poison {
            stream_sequence: commit.stream_sequence,
            reason,
        };
        if !states.contains_key(org) {
            let id = Token::new(org).map_err(|e| poison(e.to_string()))?;
            let state = self
                .store
                .load_fresh::<Organization>(&id, &crate::org::aggregate_id())
                .await
                .map_err(|e| match e {
                    StoreError::Decode { .. } | StoreError::Erased { .. } => poison(e.to_string()),
                    other => ApplyError::Retry(other.to_string()),
                })?
                .state;
            states.insert(org.to_owned(), state);
        }
        Ok(states
            .get(org)
            .and_then(|s| s.members.get(member))
            .is_some_and(|m| m.active))
    }
}

impl Projection for Revocation {
    type Commit = TypedCommit<OrgEvent>;

    async fn decode(
        keys: &KeyStore,
        subject: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<Self::Commit, StoreError> {
        decode_typed::<Organization>(keys, subject, sequence, bytes).await
    }

    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn subjects(&self) -> Vec<String> {
        vec![EventStore::subjects_of::<Organization>()]
    }

    /// The policy has no tables of its own; it makes sure the credential
    /// tables it revokes in exist.
    async fn migrate(
        &self,
        tx: &Transaction<'_>,
        _schema: &str,
    ) -> Result<(), tokio_postgres::Error> {
        trackhrs_credentials::migrate_in(tx).await
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        _schema: &str,
        batch: &[Self::Commit],
    ) -> Result<(), ApplyError> {
        let mut states = HashMap::new();
        for commit in batch {
            let org = commit.org_id.as_str();
            let slack = commit.recorded_at_micros.saturating_add(CLOCK_SKEW_MICROS);
            for event in &commit.events {
                let (revocation, cutoff) = match event {
                    OrgEvent::MemberDeactivated { member } => {
                        let active = self.active_now(&mut states, commit, member).await?;
                        let revocation = trackhrs_credentials::Revocation::Member {
                            org,
                            person: member.as_str(),
                        };
                        let cutoff = if active {
                            commit.recorded_at_micros
                        } else {
                            slack
                        };
                        (revocation, cutoff)
                    }
                    OrgEvent::DeviceRevoked { device } => (
                        trackhrs_credentials::Revocation::Device {
                            org,
                            device: device.as_str(),
                        },
                        slack,
                    ),
                    _ => continue,
                };
                revoke_recorded(tx, revocation, cutoff)
                    .await
                    .map_err(revocation_failed)?;
            }
        }
        Ok(())
    }
}

/// A revocation that failed is retried with the whole batch.
fn revocation_failed(error: trackhrs_credentials::AuthError) -> ApplyError {
    match error {
        trackhrs_credentials::AuthError::Db(e) => ApplyError::from(e),
        other => ApplyError::Retry(other.to_string()),
    }
}
