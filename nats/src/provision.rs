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

/// Creates or updates the event stream and the buckets. Safe to run on every
/// start and from several replicas at once.
pub async fn provision(client: &Client, config: &StoreConfig) -> Result<(), StoreError> {
    check_server_version(&client.server_info().version)?;
    let js = jetstream::new(client.clone());
    js.create_or_update_stream(events_stream_config(config))
        .await
        .map_err(|e| StoreError::Provision(format!("stream {}: {e}", config.events_stream)))?;
    for (bucket, description) in [
        (
            &config.snapshot_bucket,
            "aggregate snapshots (optimisation only)",
        ),
        (
            &config.key_bucket,
            "per-person data keys (crypto-shredding)",
        ),
    ] {
        js.create_or_update_key_value(kv::Config {
            bucket: bucket.clone(),
            description: description.into(),
            history: 1,
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| StoreError::Provision(format!("bucket {bucket}: {e}")))?;
    }
    let streams = [
        config.events_stream.clone(),
        format!("KV_{}", config.snapshot_bucket),
        format!("KV_{}", config.key_bucket),
    ];
    for stream in streams {
        wait_for_leader(&js, &stream).await?;
    }
    Ok(())
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
}
