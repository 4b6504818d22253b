//! Names and tunables of the event store.

use std::sync::Arc;
use std::time::Duration;

use trackhrs_kek::Keyring;

/// How the event store is laid out on JetStream and how it caches.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Stream holding every domain event commit (`evt.>`).
    pub events_stream: String,
    /// KV bucket of aggregate snapshots (an optimisation, never the truth).
    pub snapshot_bucket: String,
    /// KV bucket of per-person data keys (kept outside the log so they can be destroyed).
    pub key_bucket: String,
    /// KV bucket of leases (one replica runs a scheduled job at a time).
    pub lease_bucket: String,
    /// How long a lease lasts unless renewed (the lease bucket's age
    /// limit, set when it is provisioned).
    pub lease_ttl: Duration,
    /// The key-encryption key the data keys are wrapped under. Provisioning
    /// needs none; [`crate::EventStore::open`] refuses to open without one.
    pub kek: Option<Arc<Keyring>>,
    /// Replicas of every stream and bucket (1 on a laptop, 3 in a cluster).
    pub replicas: usize,
    /// Window in which JetStream drops a repeated `Nats-Msg-Id` (command id).
    pub duplicate_window: Duration,
    /// Write a snapshot once this many events were applied since the last
    /// one, over at least `snapshot_min_commits` commits.
    pub snapshot_every: u64,
    /// Fewest commits between two snapshots: an aggregate whose commits are
    /// large (an agent's batch is hundreds of events) is not snapshotted
    /// after every commit, which cost a second durable write per upload.
    pub snapshot_min_commits: u64,
    /// Aggregate states kept in the in-process cache.
    pub state_cache_capacity: u64,
    /// How long a publish waits for its acknowledgement.
    pub ack_timeout: Duration,
    /// Most appends committed together as one atomic batch (group commit);
    /// 1 publishes every append on its own.
    pub group_commit_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            events_stream: "TRACKHRS_EVENTS".into(),
            snapshot_bucket: "trackhrs_snapshots".into(),
            key_bucket: "trackhrs_keys".into(),
            lease_bucket: "trackhrs_leases".into(),
            lease_ttl: Duration::from_secs(15),
            kek: None,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            snapshot_every: 32,
            snapshot_min_commits: 8,
            state_cache_capacity: 200_000,
            ack_timeout: Duration::from_secs(5),
            group_commit_max: 100,
        }
    }
}

impl StoreConfig {
    /// The default configuration with the data keys wrapped under `kek`.
    pub fn with_kek(kek: Arc<Keyring>) -> Self {
        Self {
            kek: Some(kek),
            ..Self::default()
        }
    }
}

/// The subject prefix of domain events.
pub const EVENT_SUBJECT_PREFIX: &str = "evt";
