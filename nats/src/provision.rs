//! Idempotent creation of the event stream and the KV buckets at start-up.

use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, kv, stream};

use crate::config::{EVENT_SUBJECT_PREFIX, StoreConfig};
use crate::error::StoreError;

/// Oldest nats-server the event store works with.
pub const MIN_SERVER_VERSION: &str = "2.12.1";
/// Why [`MIN_SERVER_VERSION`] is what it is.
const MIN_VERSION_FEATURE: &str = "atomic batch publish with message ids for group commit, batched direct get for loading aggregates";
/// Largest commit accepted, in bytes.
pub const MAX_COMMIT_BYTES: i32 = 4 * 1024 * 1024;

/// Refuses a server older than [`MIN_SERVER_VERSION`], naming the minimum.
pub fn check_server_version(found: &str) -> Result<(), StoreError> {
    let too_old = || StoreError::ServerTooOld {
        found: found.to_owned(),
        minimum: MIN_SERVER_VERSION,
        feature: MIN_VERSION_FEATURE,
    };
    let parsed = semver::Version::parse(found.trim_start_matches('v')).map_err(|_| too_old())?;
    let minimum = semver::Version::parse(MIN_SERVER_VERSION).map_err(|_| too_old())?;
    // Semver orders pre-releases (2.12.1-RC.1) below the release, as wanted.
    if parsed < minimum {
        return Err(too_old());
    }
    Ok(())
}

/// The event stream's configuration: immutable history (no delete, no purge),
/// direct gets for loads, a duplicate window for command ids.
pub fn events_stream_config(config: &StoreConfig) -> stream::Config {
    stream::Config {
        name: config.events_stream.clone(),
        description: Some("TrackHrs domain events: one commit per command".into()),
        subjects: vec![format!("{EVENT_SUBJECT_PREFIX}.>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        max_message_size: MAX_COMMIT_BYTES,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        allow_atomic_publish: true,
        ..Default::default()
    }
}

/// Refuses a configuration of the event stream under which the server could
/// drop events: an age limit, a per-subject limit, a message or byte limit
/// that discards the oldest, rollup headers, or deletes and purges allowed.
/// Limits that discard new writes are quotas (the writer is refused, nothing
/// stored is lost) and pass.
pub fn check_lossless(config: &stream::Config) -> Result<(), StoreError> {
    let discards_old = config.discard == stream::DiscardPolicy::Old;
    let mut reasons = Vec::new();
    if config.retention != stream::RetentionPolicy::Limits {
        reasons.push(format!(
            "retention {:?} deletes events once consumed or unwanted",
            config.retention
        ));
    }
    if !config.max_age.is_zero() {
        reasons.push(format!(
            "max_age {:?} deletes every event older than that",
            config.max_age
        ));
    }
    if config.max_messages_per_subject > 0 {
        reasons.push(format!(
            "max_msgs_per_subject {} keeps only the last commits of each aggregate",
            config.max_messages_per_subject
        ));
    }
    if config.max_messages > 0 && discards_old {
        reasons.push(format!(
            "max_msgs {} with discard old drops the oldest events beyond it",
            config.max_messages
        ));
    }
    if config.max_bytes > 0 && discards_old {
        reasons.push(format!(
            "max_bytes {} with discard old drops the oldest events beyond it",
            config.max_bytes
        ));
    }
    if config.allow_rollup {
        reasons.push("allow_rollup_hdrs lets one message purge the others".into());
    }
    if !config.deny_delete {
        reasons.push("deny_delete is off: single events can be deleted".into());
    }
    if !config.deny_purge {
        reasons.push("deny_purge is off: the stream can be purged".into());
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(StoreError::Provision(format!(
        "stream {} could lose events: {}",
        config.name,
        reasons.join("; ")
    )))
}

/// Creates or updates the event stream and the buckets. Safe to run on every
/// deploy and from several replicas at once. Needs an identity that may
/// create and update streams (user `provision` of `infra/nats/accounts.conf`);
/// the running platform only checks the result ([`verify`]).
///
/// An event stream that exists with limits that could drop events is refused,
/// not rewritten: it may already have lost events, which an operator must
/// look into first.
pub async fn provision(client: &Client, config: &StoreConfig) -> Result<(), StoreError> {
    check_server_version(&client.server_info().version)?;
    let js = jetstream::new(client.clone());
    let wanted = events_stream_config(config);
    check_lossless(&wanted)?;
    if let Some(existing) = existing_stream(&js, &config.events_stream).await? {
        check_lossless(&existing.config).map_err(|e| {
            StoreError::Provision(format!(
                "{e}. It may already have lost events; provisioning leaves it as it is until an operator has checked and fixed it"
            ))
        })?;
    }
    js.create_or_update_stream(wanted)
        .await
        .map_err(|e| StoreError::Provision(format!("stream {}: {e}", config.events_stream)))?;
    let bucket_config = |bucket: &str, description: &str| kv::Config {
        bucket: bucket.to_owned(),
        description: description.into(),
        history: 1,
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.create_or_update_key_value(bucket_config(
        &config.snapshot_bucket,
        "aggregate snapshots (optimisation only)",
    ))
    .await
    .map_err(|e| StoreError::Provision(format!("bucket {}: {e}", config.snapshot_bucket)))?;
    js.create_or_update_key_value(kv::Config {
        max_age: config.lease_ttl,
        ..bucket_config(&config.lease_bucket, "leases of scheduled jobs")
    })
    .await
    .map_err(|e| StoreError::Provision(format!("bucket {}: {e}", config.lease_bucket)))?;
    // The key bucket is created once, then hardened: no purge, no rollup
    // (one message with `Nats-Rollup: all` would purge every key), no
    // message delete. Those flags cannot be lifted, so it is never updated
    // through the KV API (which would try to) again.
    let keys_stream = key_stream_name(config);
    if existing_stream(&js, &keys_stream).await?.is_none() {
        js.create_key_value(bucket_config(
            &config.key_bucket,
            "per-person data keys (crypto-shredding)",
        ))
        .await
        .map_err(|e| StoreError::Provision(format!("bucket {}: {e}", config.key_bucket)))?;
    }
    let mut keys = existing_stream(&js, &keys_stream)
        .await?
        .ok_or_else(|| StoreError::Provision(format!("bucket {} vanished", config.key_bucket)))?
        .config;
    if check_key_bucket(&keys).is_err() || keys.num_replicas != config.replicas {
        keys.deny_purge = true;
        keys.deny_delete = true;
        keys.allow_rollup = false;
        keys.num_replicas = config.replicas;
        js.update_stream(keys)
            .await
            .map_err(|e| StoreError::Provision(format!("bucket {}: {e}", config.key_bucket)))?;
    }
    let streams = [
        config.events_stream.clone(),
        format!("KV_{}", config.snapshot_bucket),
        format!("KV_{}", config.lease_bucket),
        keys_stream,
    ];
    for stream in streams {
        wait_for_leader(&js, &stream).await?;
    }
    Ok(())
}

/// Checks, without changing anything, that the event stream and the buckets
/// exist and that the event stream cannot lose events: what every process
/// of the platform does at start-up.
pub async fn verify(client: &Client, config: &StoreConfig) -> Result<(), StoreError> {
    check_server_version(&client.server_info().version)?;
    let js = jetstream::new(client.clone());
    let not_provisioned = |what: &str| {
        StoreError::Provision(format!(
            "{what} does not exist: run `trackhrs provision` (as the NATS user that may create streams) first"
        ))
    };
    let events = existing_stream(&js, &config.events_stream)
        .await?
        .ok_or_else(|| not_provisioned(&format!("stream {}", config.events_stream)))?;
    check_lossless(&events.config)?;
    existing_stream(&js, &format!("KV_{}", config.snapshot_bucket))
        .await?
        .ok_or_else(|| not_provisioned(&format!("bucket {}", config.snapshot_bucket)))?;
    existing_stream(&js, &format!("KV_{}", config.lease_bucket))
        .await?
        .ok_or_else(|| not_provisioned(&format!("bucket {}", config.lease_bucket)))?;
    let keys = existing_stream(&js, &key_stream_name(config))
        .await?
        .ok_or_else(|| not_provisioned(&format!("bucket {}", config.key_bucket)))?;
    check_key_bucket(&keys.config)?;
    Ok(())
}

/// The stream behind the key bucket.
fn key_stream_name(config: &StoreConfig) -> String {
    format!("KV_{}", config.key_bucket)
}

/// Refuses a key bucket that could lose keys other than by an erasure: an
/// age limit, purges, rollups (one message could purge every key) or
/// message deletes allowed.
pub fn check_key_bucket(config: &stream::Config) -> Result<(), StoreError> {
    let mut reasons = Vec::new();
    if !config.max_age.is_zero() {
        reasons.push(format!("max_age {:?} expires every key", config.max_age));
    }
    if config.allow_rollup {
        reasons.push("allow_rollup_hdrs lets one message purge every key".to_owned());
    }
    if !config.deny_purge {
        reasons.push("deny_purge is off: the bucket can be purged".to_owned());
    }
    if !config.deny_delete {
        reasons.push("deny_delete is off: keys can be deleted by sequence".to_owned());
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(StoreError::Provision(format!(
        "key bucket {} could lose keys: {}; run `trackhrs provision`",
        config.name,
        reasons.join("; ")
    )))
}

/// The stream's info, `None` when it does not exist.
async fn existing_stream(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Info>, StoreError> {
    match js.get_stream(name).await {
        // `get_stream` has just fetched the info: no second request.
        Ok(found) => Ok(Some(found.cached_info().clone())),
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(je)
                if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(StoreError::Provision(format!("stream {name}: {e}"))),
        },
    }
}

/// Waits until a replicated stream has elected a leader: until then it
/// answers no request, so the store must not start using it.
async fn wait_for_leader(js: &jetstream::Context, stream: &str) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match js.get_stream(stream).await {
            Ok(s) => match &s.cached_info().cluster {
                Some(c) if c.leader.is_none() => last = "no leader yet".into(),
                _ => return Ok(()),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(StoreError::Provision(format!(
        "stream {stream} has no leader after 30 s: {last}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_servers_are_refused_with_the_minimum_named() {
        let err = check_server_version("2.9.10").unwrap_err().to_string();
        assert!(
            err.contains("2.9.10") && err.contains(MIN_SERVER_VERSION),
            "{err}"
        );
        assert!(check_server_version("2.11.4").is_err());
        assert!(check_server_version("2.12.0").is_err());
        assert!(check_server_version("2.12.1-RC.1").is_err());
        assert!(check_server_version("garbage").is_err());
        assert!(check_server_version("2.12.1").is_ok());
        assert!(check_server_version("v2.15.1").is_ok());
    }

    #[test]
    fn limits_that_could_drop_events_are_refused_and_named() {
        let ours = events_stream_config(&StoreConfig::default());
        check_lossless(&ours).unwrap();
        type Change = fn(&mut stream::Config);
        let cases: [(&str, Change); 9] = [
            ("retention Interest", |c| {
                c.retention = stream::RetentionPolicy::Interest;
            }),
            ("retention WorkQueue", |c| {
                c.retention = stream::RetentionPolicy::WorkQueue;
            }),
            ("max_age", |c| c.max_age = Duration::from_secs(86_400)),
            ("max_msgs_per_subject", |c| c.max_messages_per_subject = 1),
            ("max_msgs 10", |c| c.max_messages = 10),
            ("max_bytes 1024", |c| c.max_bytes = 1024),
            ("allow_rollup_hdrs", |c| c.allow_rollup = true),
            ("deny_delete", |c| c.deny_delete = false),
            ("deny_purge", |c| c.deny_purge = false),
        ];
        for (named, change) in cases {
            let mut lossy = ours.clone();
            change(&mut lossy);
            let err = check_lossless(&lossy).unwrap_err().to_string();
            assert!(
                err.contains(named) && err.contains("TRACKHRS_EVENTS"),
                "{named}: {err}"
            );
        }
        // Limits that refuse new writes lose nothing: a quota, not a loss.
        let mut quota = ours;
        quota.discard = stream::DiscardPolicy::New;
        quota.max_bytes = 1 << 40;
        quota.max_messages = 1 << 30;
        check_lossless(&quota).unwrap();
    }
}
