//! The activity read model's `spans`: a device's spans as they were counted
//! (times, activity, active, the time zone their days were counted in),
//! kept so that time the employee withdraws can be taken back out. One row
//! per commit, its spans packed: a row per span made applying a batch
//! several times slower, and this table is read only for a withdrawal.

use std::sync::Arc;

use tokio_postgres::Transaction;

use crate::error::ApplyError;

/// Bytes of one packed span: start, end and activity id (i64, little
/// endian), then active (one byte).
const PACKED: usize = 25;

/// One span as kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kept {
    /// Start, ms since the epoch.
    pub(crate) start_ms: i64,
    /// End (exclusive).
    pub(crate) end_ms: i64,
    /// Its activity id.
    pub(crate) activity: i64,
    /// Active or idle.
    pub(crate) active: bool,
}

/// A row: spans of one device, in order, never overlapping.
#[derive(Debug, Clone)]
pub(crate) struct SpanRow {
    pub(crate) org: String,
    pub(crate) device: String,
    pub(crate) person: String,
    /// The time zone their days were counted in.
    pub(crate) zone: Arc<str>,
    pub(crate) spans: Vec<Kept>,
}

/// The spans packed for the `spans` column.
fn pack(spans: &[Kept]) -> Vec<u8> {
    let mut out = Vec::with_capacity(spans.len() * PACKED);
    for s in spans {
        out.extend_from_slice(&s.start_ms.to_le_bytes());
        out.extend_from_slice(&s.end_ms.to_le_bytes());
        out.extend_from_slice(&s.activity.to_le_bytes());
        out.push(u8::from(s.active));
    }
    out
}

/// The spans of a `spans` column.
pub(crate) fn unpack(bytes: &[u8]) -> Result<Vec<Kept>, String> {
    if !bytes.len().is_multiple_of(PACKED) {
        return Err(format!(
            "a row of the spans kept holds {} bytes, not whole spans",
            bytes.len()
        ));
    }
    let int = |b: &[u8]| i64::from_le_bytes(b.try_into().unwrap_or_default());
    Ok(bytes
        .chunks_exact(PACKED)
        .map(|c| Kept {
            start_ms: int(&c[0..8]),
            end_ms: int(&c[8..16]),
            activity: int(&c[16..24]),
            active: c[24] != 0,
        })
        .collect())
}

/// Inserts `rows` (those with spans), keyed by their device and last end.
pub(crate) async fn insert(
    tx: &Transaction<'_>,
    schema: &str,
    rows: &[SpanRow],
) -> Result<(), ApplyError> {
    let rows: Vec<&SpanRow> = rows.iter().filter(|r| !r.spans.is_empty()).collect();
    if rows.is_empty() {
        return Ok(());
    }
    let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut more = (Vec::new(), Vec::new(), Vec::new());
    for row in &rows {
        cols.0.push(row.org.as_str());
        cols.1.push(row.device.as_str());
        cols.2.push(
            row.spans
                .iter()
                .map(|s| s.start_ms)
                .min()
                .unwrap_or_default(),
        );
        cols.3
            .push(row.spans.iter().map(|s| s.end_ms).max().unwrap_or_default());
        more.0.push(row.person.as_str());
        more.1.push(&*row.zone);
        more.2.push(pack(&row.spans));
    }
    tx.execute(
        &format!(
            "INSERT INTO {schema}.spans (org_id, device_id, start_ms, end_ms, person_id, \
               timezone, spans) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], \
               $6::text[], $7::bytea[])"
        ),
        &[
            &cols.0, &cols.1, &cols.2, &cols.3, &more.0, &more.1, &more.2,
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_pack_and_unpack_and_a_torn_row_is_refused() {
        let spans = vec![
            Kept {
                start_ms: -5,
                end_ms: 1_800_000_000_000,
                activity: i64::MIN,
                active: true,
            },
            Kept {
                start_ms: 7,
                end_ms: 8,
                activity: 42,
                active: false,
            },
        ];
        let packed = pack(&spans);
        assert_eq!(packed.len(), 2 * PACKED);
        assert_eq!(unpack(&packed).unwrap(), spans);
        assert!(unpack(&packed[..PACKED + 3]).is_err());
    }
}
