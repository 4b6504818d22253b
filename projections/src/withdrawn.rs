//! Time an employee withdrew on a device (`TimeRetracted`), as the read
//! models that keep spans per device cut it out: the retractions of an
//! apply batch merged per device, and a span split into what they take and
//! what stays.

use std::collections::BTreeMap;

/// The withdrawn ranges of each (org, device), sorted and merged (touching
/// or overlapping ranges become one).
#[derive(Debug, Default)]
pub(crate) struct Withdrawn {
    by_device: BTreeMap<(String, String), Vec<(i64, i64)>>,
}

impl Withdrawn {
    /// Adds `[from, to)` of `device` in `org`.
    pub(crate) fn add(&mut self, org: &str, device: &str, from: i64, to: i64) {
        if from < to {
            self.by_device
                .entry((org.to_owned(), device.to_owned()))
                .or_default()
                .push((from, to));
        }
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

    /// `[start, end)` of a span of `device` cut by what was withdrawn there
    /// (after [`Withdrawn::merge`]): (the pieces taken, the pieces that
    /// stay). Nothing taken: the span is not touched.
    pub(crate) fn cut(
        &self,
        org: &str,
        device: &str,
        (start, end): (i64, i64),
    ) -> (Vec<(i64, i64)>, Vec<(i64, i64)>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_per_device_and_cut_spans_into_taken_and_kept() {
        let mut w = Withdrawn::default();
        w.add("acme", "d1", 10, 20);
        w.add("acme", "d1", 15, 30);
        w.add("acme", "d1", 40, 50);
        w.add("acme", "d1", 30, 35);
        w.add("acme", "d2", 0, 5);
        w.add("acme", "d2", 7, 7);
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
    }
}
