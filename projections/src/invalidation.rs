//! Cache invalidations on core NATS. After each committed batch, the live
//! version of a projection publishes, per organization touched,
//! `trackhrs.projection.<name>.<org>` with its new checkpoint (ASCII
//! decimal) as payload. A promotion publishes `trackhrs.projection.<name>`
//! (every org's entries are stale). Core NATS, not JetStream: an
//! invalidation missed during a disconnect is covered by the cache's TTL.

use std::collections::BTreeSet;

/// Prefix of every invalidation subject.
pub const PREFIX: &str = "trackhrs.projection";

/// Subject of the invalidation of one organization's entries.
pub fn org_subject(name: &str, org: &str) -> String {
    format!("{PREFIX}.{name}.{org}")
}

/// Subject of the invalidation of every entry of a projection (promotion).
pub fn promotion_subject(name: &str) -> String {
    format!("{PREFIX}.{name}")
}

/// Wildcard a cache subscribes to for one projection: `trackhrs.projection.<name>.>`
/// (per org) plus [`promotion_subject`].
pub fn org_wildcard(name: &str) -> String {
    format!("{PREFIX}.{name}.>")
}

/// Publishes one invalidation per organization. Failures are logged, never
/// returned: the batch is already committed.
pub(crate) async fn publish_orgs(
    nats: &async_nats::Client,
    name: &str,
    orgs: &BTreeSet<String>,
    position: u64,
) {
    if orgs.is_empty() {
        return;
    }
    let payload = bytes::Bytes::from(position.to_string());
    for org in orgs {
        if let Err(e) = nats.publish(org_subject(name, org), payload.clone()).await {
            tracing::warn!(projection = name, org = %org, error = %e, "cannot publish invalidation");
            return;
        }
    }
}

/// Publishes the projection-wide invalidation after a promotion.
pub(crate) async fn publish_promotion(nats: &async_nats::Client, name: &str, position: u64) {
    let result = nats
        .publish(promotion_subject(name), position.to_string().into())
        .await;
    if let Err(e) = result {
        tracing::warn!(projection = name, error = %e, "cannot publish promotion invalidation");
    }
}
