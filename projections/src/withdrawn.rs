//! Time an employee withdrew on a device (`TimeRetracted`), as the read
//! models that keep spans per device cut it out: the retractions of an
//! apply batch merged per device, the span rows they touch, a span split
//! into what they take and what stays, and the activities no time refers
//! to any more.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::{Row, Transaction};

/// `[start, end)` ranges, ms since the epoch.
type Ranges = Vec<(i64, i64)>;

/// The withdrawn ranges of each (org, device), sorted and merged (touching
/// or overlapping ranges become one).
#[derive(Debug, Default)]
pub(crate) struct Withdrawn {
    by_device: BTreeMap<(String, String), Ranges>,
    /// The stream sequence of the last commit that withdrew time of each
    /// (org, device): the commit to blame when its rows cannot be read.
    sequences: BTreeMap<(String, String), u64>,
}

impl Withdrawn {
    /// Adds `[from, to)` of `device` in `org`, withdrawn by the commit at
    /// stream sequence `sequence`.
    pub(crate) fn add(&mut self, (org, device): (&str, &str), from: i64, to: i64, sequence: u64) {
        if from < to {
            let key = (org.to_owned(), device.to_owned());
            self.sequences.insert(key.clone(), sequence);
            self.by_device.entry(key).or_default().push((from, to));
        }
    }

    /// The stream sequence of the last commit that withdrew time of
    /// `device` in `org` (0: none).
    pub(crate) fn sequence(&self, org: &str, device: &str) -> u64 {
        self.sequences
            .get(&(org.to_owned(), device.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// True when nothing was withdrawn.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_device.is_empty()
    }

    /// Sorts and merges each device's ranges (before [`Withdrawn::hulls`]
    /// and [`Withdrawn::cut`]).
    pub(crate) fn merge(&mut self) {
        for ranges in self.by_device.values_mut() {
            ranges.sort_unstable();
            let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
            for &(from, to) in ranges.iter() {
                match merged.last_mut() {
                    Some(last) if from <= last.1 => last.1 = last.1.max(to),
                    _ => merged.push((from, to)),
                }
            }
            *ranges = merged;
        }
    }

    /// Per device, the hull of its ranges (first start, last end) to look
    /// spans up in: (orgs, devices, starts, ends), columns for `unnest`.
    pub(crate) fn hulls(&self) -> (Vec<&str>, Vec<&str>, Vec<i64>, Vec<i64>) {
        let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((org, device), ranges) in &self.by_device {
            if let (Some(first), Some(last)) = (ranges.first(), ranges.last()) {
                cols.0.push(org.as_str());
                cols.1.push(device.as_str());
                cols.2.push(first.0);
                cols.3.push(last.1);
            }
        }
        cols
    }

    /// The rows of span table `table` (with `org_id`, `device_id`,
    /// `start_ms`, `end_ms`) that overlap a device's hull: those four
    /// columns, then `columns` (of `s`).
    pub(crate) async fn candidates(
        &self,
        tx: &Transaction<'_>,
        table: &str,
        columns: &str,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let (orgs, devices, froms, tos) = self.hulls();
        tx.query(
            &format!(
                "SELECT s.org_id, s.device_id, s.start_ms, s.end_ms, {columns} \
                 FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) \
                   AS h(org_id, device_id, from_ms, to_ms) \
                 JOIN {table} s ON s.org_id = h.org_id AND s.device_id = h.device_id \
                   AND s.end_ms > h.from_ms AND s.start_ms < h.to_ms"
            ),
            &[&orgs, &devices, &froms, &tos],
        )
        .await
    }

    /// `[start, end)` of a span of `device` cut by what was withdrawn there
    /// (after [`Withdrawn::merge`]): (the pieces taken, the pieces that
    /// stay). Nothing taken: the span is not touched.
    pub(crate) fn cut(
        &self,
        org: &str,
        device: &str,
        (start, end): (i64, i64),
    ) -> (Ranges, Ranges) {
        let (mut taken, mut kept) = (Vec::new(), Vec::new());
        let Some(ranges) = self.by_device.get(&(org.to_owned(), device.to_owned())) else {
            return (taken, vec![(start, end)]);
        };
        let mut cursor = start;
        for &(from, to) in ranges {
            let (s, e) = (from.max(cursor), to.min(end));
            if s >= e {
                continue;
            }
            if cursor < s {
                kept.push((cursor, s));
            }
            taken.push((s, e));
            cursor = e;
        }
        if cursor < end {
            kept.push((cursor, end));
        }
        (taken, kept)
    }
}

/// Span rows cut by a withdrawal, by (org, device, end): a device's rows
/// never overlap, so their ends are unique.
#[derive(Debug, Default)]
pub(crate) struct CutRows {
    orgs: Vec<String>,
    devices: Vec<String>,
    ends: Vec<i64>,
    /// The activities whose time was withdrawn from them.
    activities: BTreeSet<(String, i64)>,
}

impl CutRows {
    /// Notes the row of `device` in `org` ending at `end`.
    pub(crate) fn push(&mut self, org: String, device: String, end: i64) {
        self.orgs.push(org);
        self.devices.push(device);
        self.ends.push(end);
    }

    /// Notes that time of `activity` in `org` was withdrawn.
    pub(crate) fn touched(&mut self, org: &str, activity: i64) {
        self.activities.insert((org.to_owned(), activity));
    }

    /// Deletes the rows from span table `table`.
    pub(crate) async fn delete(
        &self,
        tx: &Transaction<'_>,
        table: &str,
    ) -> Result<(), tokio_postgres::Error> {
        tx.execute(
            &format!(
                "DELETE FROM {table} s \
                 USING unnest($1::text[], $2::text[], $3::int8[]) AS c(org_id, device_id, end_ms) \
                 WHERE s.org_id = c.org_id AND s.device_id = c.device_id AND s.end_ms = c.end_ms"
            ),
            &[&self.orgs, &self.devices, &self.ends],
        )
        .await?;
        Ok(())
    }

    /// Drops from `{schema}.activities` the activities of the rows cut
    /// that no row of `{schema}.{referenced_in}` refers to any more: a title
    /// nobody's time refers to would outlive an erasure, which finds a
    /// person's activities through their time.
    pub(crate) async fn drop_unreferenced_activities(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        referenced_in: &str,
    ) -> Result<(), tokio_postgres::Error> {
        let (orgs, ids): (Vec<&str>, Vec<i64>) = self
            .activities
            .iter()
            .map(|(org, id)| (org.as_str(), *id))
            .unzip();
        tx.execute(
            &format!(
                "DELETE FROM {schema}.activities a \
                 USING unnest($1::text[], $2::int8[]) AS c(org_id, activity_id) \
                 WHERE a.org_id = c.org_id AND a.activity_id = c.activity_id \
                   AND NOT EXISTS (SELECT 1 FROM {schema}.{referenced_in} r \
                     WHERE r.org_id = a.org_id AND r.activity_id = a.activity_id)"
            ),
            &[&orgs, &ids],
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_per_device_and_cut_spans_into_taken_and_kept() {
        let mut w = Withdrawn::default();
        w.add(("acme", "d1"), 10, 20, 1);
        w.add(("acme", "d1"), 15, 30, 1);
        w.add(("acme", "d1"), 40, 50, 4);
        w.add(("acme", "d1"), 30, 35, 4);
        w.add(("acme", "d2"), 0, 5, 2);
        w.add(("acme", "d2"), 7, 7, 3);
        w.merge();
        let hulls = w.hulls();
        assert_eq!(hulls.0, ["acme", "acme"]);
        assert_eq!(hulls.1, ["d1", "d2"]);
        assert_eq!((hulls.2, hulls.3), (vec![10, 0], vec![50, 5]));
        assert_eq!(
            w.cut("acme", "d1", (0, 100)),
            (vec![(10, 35), (40, 50)], vec![(0, 10), (35, 40), (50, 100)])
        );
        assert_eq!(w.cut("acme", "d1", (12, 14)), (vec![(12, 14)], vec![]));
        assert_eq!(w.cut("acme", "d1", (35, 40)), (vec![], vec![(35, 40)]));
        assert_eq!(w.cut("acme", "d3", (0, 9)), (vec![], vec![(0, 9)]));
        assert_eq!(w.cut("globex", "d2", (0, 9)), (vec![], vec![(0, 9)]));
        assert_eq!(
            (
                w.sequence("acme", "d1"),
                w.sequence("acme", "d2"),
                w.sequence("acme", "d3")
            ),
            (4, 2, 0)
        );
    }
}
