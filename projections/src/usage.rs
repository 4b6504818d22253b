//! Storage per organization for operators: how many messages, and how many
//! bytes of payload, each org's commits hold in the event stream, by
//! aggregate type (`device_activity` for uploads, `device_timeline` for raw
//! timelines, `organization`, ...).
//!
//! Read from each message's subject (`evt.<org>.<type>.<id>`) and length
//! alone: nothing is opened or decoded, so it costs the runner next to
//! nothing and holds no personal data. Crypto-shredding leaves messages in
//! the stream, so an erased person's bytes still count, as they still take
//! disk. Not counted: NATS's own per-message overhead (subject, headers,
//! index), about a hundred bytes a message.

use std::collections::BTreeMap;

use tokio_postgres::{Client, Transaction};
use trackhrs_nats::{KeyStore, StoreError};

use crate::error::ApplyError;
use crate::projection::{Committed, Projection};

/// Its name in the catalog.
pub const NAME: &str = "org_usage";

/// One stored message as this read model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    sequence: u64,
    org_id: String,
    aggregate: String,
    bytes: i64,
}

impl Committed for Stored {
    fn stream_sequence(&self) -> u64 {
        self.sequence
    }

    fn org_id(&self) -> &str {
        &self.org_id
    }

    /// A message counts as one (its events are not decoded).
    fn events(&self) -> usize {
        1
    }
}

/// The org and aggregate type named by an event subject.
fn parse(subject: &str) -> Option<(&str, &str)> {
    let mut parts = subject.split('.');
    let (_, org, aggregate, _) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && !org.is_empty() && !aggregate.is_empty()).then_some((org, aggregate))
}

/// The usage read model at a catalog version.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    version: u32,
}

impl Usage {
    /// The usage read model at catalog `version`.
    pub fn new(version: u32) -> Self {
        Self { version }
    }
}

impl Projection for Usage {
    type Commit = Stored;

    async fn decode(
        _keys: &KeyStore,
        subject: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<Stored, StoreError> {
        let (org, aggregate) = parse(subject).ok_or_else(|| StoreError::Decode {
            subject: subject.to_owned(),
            sequence,
            reason: "not an event subject (evt.<org>.<type>.<id>)".into(),
        })?;
        Ok(Stored {
            sequence,
            org_id: org.to_owned(),
            aggregate: aggregate.to_owned(),
            bytes: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        })
    }

    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn subjects(&self) -> Vec<String> {
        vec![format!("{}.>", trackhrs_nats::EVENT_SUBJECT_PREFIX)]
    }

    async fn migrate(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(&format!(
            "CREATE TABLE {schema}.usage (
                 org_id    text NOT NULL,
                 aggregate text NOT NULL,
                 messages  bigint NOT NULL,
                 bytes     bigint NOT NULL,
                 PRIMARY KEY (org_id, aggregate)
             );"
        ))
        .await
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        batch: &[Stored],
    ) -> Result<(), ApplyError> {
        let mut sums: BTreeMap<(&str, &str), (i64, i64)> = BTreeMap::new();
        for stored in batch {
            let sum = sums
                .entry((stored.org_id.as_str(), stored.aggregate.as_str()))
                .or_default();
            sum.0 += 1;
            sum.1 = sum.1.saturating_add(stored.bytes);
        }
        let (mut orgs, mut aggregates, mut messages, mut bytes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((org, aggregate), (m, b)) in sums {
            orgs.push(org);
            aggregates.push(aggregate);
            messages.push(m);
            bytes.push(b);
        }
        tx.execute(
            &format!(
                "INSERT INTO {schema}.usage AS u (org_id, aggregate, messages, bytes) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
                 ON CONFLICT (org_id, aggregate) DO UPDATE \
                 SET messages = u.messages + excluded.messages, bytes = u.bytes + excluded.bytes"
            ),
            &[&orgs, &aggregates, &messages, &bytes],
        )
        .await?;
        Ok(())
    }
}

/// What one org's commits hold of one aggregate type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindUsage {
    /// Aggregate type (`device_activity`, `organization`, ...).
    pub aggregate: String,
    /// Messages (commits) stored.
    pub messages: u64,
    /// Bytes of their payloads.
    pub bytes: u64,
}

/// What one org's commits hold in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgUsage {
    /// The organization.
    pub org_id: String,
    /// Messages (commits) stored.
    pub messages: u64,
    /// Bytes of their payloads.
    pub bytes: u64,
    /// By aggregate type, most bytes first.
    pub kinds: Vec<KindUsage>,
}

/// The `limit` orgs holding the most bytes, most first (ties by org id).
pub async fn largest(
    pg: &Client,
    schema: &str,
    limit: u32,
) -> Result<Vec<OrgUsage>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "WITH top AS (SELECT org_id, sum(messages) AS messages, sum(bytes) AS bytes \
                   FROM {schema}.usage GROUP BY org_id ORDER BY bytes DESC, org_id LIMIT $1) \
                 SELECT top.org_id, top.messages::bigint, top.bytes::bigint, u.aggregate, \
                        u.messages, u.bytes \
                 FROM top JOIN {schema}.usage u USING (org_id) \
                 ORDER BY top.bytes DESC, top.org_id, u.bytes DESC, u.aggregate"
            ),
            &[&i64::from(limit)],
        )
        .await?;
    let mut orgs: Vec<OrgUsage> = Vec::new();
    for row in rows {
        let org: String = row.get(0);
        if orgs.last().is_none_or(|o| o.org_id != org) {
            orgs.push(OrgUsage {
                org_id: org,
                messages: row.get::<_, i64>(1) as u64,
                bytes: row.get::<_, i64>(2) as u64,
                kinds: Vec::new(),
            });
        }
        if let Some(last) = orgs.last_mut() {
            last.kinds.push(KindUsage {
                aggregate: row.get(3),
                messages: row.get::<_, i64>(4) as u64,
                bytes: row.get::<_, i64>(5) as u64,
            });
        }
    }
    Ok(orgs)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn subjects_name_their_org_and_aggregate_type() {
        assert_eq!(
            parse("evt.acme.device_activity.d_1"),
            Some(("acme", "device_activity"))
        );
        for bad in [
            "evt.acme.device_activity",
            "evt.acme..d_1",
            "evt..x.y",
            "evt.a.b.c.d",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
