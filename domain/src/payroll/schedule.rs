//! Pay periods: how an org's calendar is cut into periods that are paid
//! together. A schedule is a list of segments, each a kind of period from
//! a date on; the periods of a segment are cut at that segment's end, so
//! the periods of all segments never overlap and leave no gap.

use std::collections::BTreeMap;

use chrono::{Datelike, Days, Months, NaiveDate};
use serde::{Deserialize, Serialize};

/// How long a pay period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// Seven days from the segment's first day.
    Weekly,
    /// Fourteen days from the segment's first day.
    BiWeekly,
    /// The 1st to the 15th, and the 16th to the end of the month.
    SemiMonthly,
    /// A calendar month.
    Monthly,
}

/// A pay period, its first and last day (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Period {
    /// Its first day.
    pub first: NaiveDate,
    /// Its last day.
    pub last: NaiveDate,
}

impl Period {
    /// Its days, in order.
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> + use<> {
        let last = self.last;
        self.first.iter_days().take_while(move |d| *d <= last)
    }

    /// How many days it has.
    pub fn len_days(&self) -> i64 {
        (self.last - self.first).num_days() + 1
    }

    /// Whether `day` is in it.
    pub fn contains(&self, day: NaiveDate) -> bool {
        self.first <= day && day <= self.last
    }
}

/// The org's pay schedule: from each date on, a kind of period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Segments by their first day.
    pub segments: BTreeMap<NaiveDate, PeriodKind>,
}

impl Schedule {
    /// The pay period that holds `day`; `None` before the first segment.
    pub fn period_of(&self, day: NaiveDate) -> Option<Period> {
        let (&from, &kind) = self.segments.range(..=day).next_back()?;
        let until = self
            .segments
            .range(day.succ_opt()?..)
            .next()
            .map(|(next, _)| *next);
        let natural = natural_period(kind, from, day)?;
        let first = natural.first.max(from);
        let last = match until {
            Some(next) if next <= natural.last => next.pred_opt()?,
            _ => natural.last,
        };
        Some(Period { first, last })
    }

    /// The days of a whole period of the kind in effect on `day` (a period
    /// cut short by a change of pay periods has fewer).
    pub fn whole_days(&self, day: NaiveDate) -> Option<i64> {
        let (&from, &kind) = self.segments.range(..=day).next_back()?;
        natural_period(kind, from, day).map(|p| p.len_days())
    }

    /// The period starting on `first`, if a period starts there.
    pub fn period_starting(&self, first: NaiveDate) -> Option<Period> {
        self.period_of(first).filter(|p| p.first == first)
    }

    /// The periods whose first day lies in `[from, to]`, in order.
    pub fn periods_starting_between(&self, from: NaiveDate, to: NaiveDate) -> Vec<Period> {
        let mut out = Vec::new();
        let mut day = match self.period_of(from) {
            Some(p) if p.first == from => from,
            Some(p) => match p.last.succ_opt() {
                Some(d) => d,
                None => return out,
            },
            None => match self.segments.keys().next() {
                Some(first) => *first,
                None => return out,
            },
        };
        while day <= to {
            let Some(period) = self.period_of(day) else {
                break;
            };
            out.push(period);
            match period.last.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        out
    }
}

/// The period of `kind` anchored at `anchor` that holds `day` (before
/// cutting at the segment's bounds).
fn natural_period(kind: PeriodKind, anchor: NaiveDate, day: NaiveDate) -> Option<Period> {
    let fixed = |len: u64| {
        let offset = u64::try_from((day - anchor).num_days()).ok()?;
        let first = anchor.checked_add_days(Days::new(offset / len * len))?;
        Some(Period {
            first,
            last: first.checked_add_days(Days::new(len - 1))?,
        })
    };
    let month_start = day.with_day(1)?;
    let month_end = month_start.checked_add_months(Months::new(1))?.pred_opt()?;
    match kind {
        PeriodKind::Weekly => fixed(7),
        PeriodKind::BiWeekly => fixed(14),
        PeriodKind::Monthly => Some(Period {
            first: month_start,
            last: month_end,
        }),
        PeriodKind::SemiMonthly if day.day() <= 15 => Some(Period {
            first: month_start,
            last: day.with_day(15)?,
        }),
        PeriodKind::SemiMonthly => Some(Period {
            first: day.with_day(16)?,
            last: month_end,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn p(first: &str, last: &str) -> Option<Period> {
        Some(Period {
            first: d(first),
            last: d(last),
        })
    }

    fn schedule(segments: &[(&str, PeriodKind)]) -> Schedule {
        Schedule {
            segments: segments.iter().map(|(f, k)| (d(f), *k)).collect(),
        }
    }

    #[test]
    fn periods_of_each_kind() {
        let monthly = schedule(&[("2026-01-01", PeriodKind::Monthly)]);
        assert_eq!(
            monthly.period_of(d("2026-02-14")),
            p("2026-02-01", "2026-02-28")
        );
        assert_eq!(monthly.period_of(d("2025-12-31")), None);
        let semi = schedule(&[("2026-01-01", PeriodKind::SemiMonthly)]);
        assert_eq!(
            semi.period_of(d("2026-02-15")),
            p("2026-02-01", "2026-02-15")
        );
        assert_eq!(
            semi.period_of(d("2026-02-16")),
            p("2026-02-16", "2026-02-28")
        );
        let biweekly = schedule(&[("2026-01-05", PeriodKind::BiWeekly)]);
        assert_eq!(
            biweekly.period_of(d("2026-01-20")),
            p("2026-01-19", "2026-02-01")
        );
        let weekly = schedule(&[("2026-01-05", PeriodKind::Weekly)]);
        assert_eq!(
            weekly.period_of(d("2026-01-11")),
            p("2026-01-05", "2026-01-11")
        );
        assert_eq!(weekly.period_starting(d("2026-01-06")), None);
    }

    #[test]
    fn a_new_segment_cuts_the_period_before_it() {
        let s = schedule(&[
            ("2026-01-05", PeriodKind::BiWeekly),
            ("2026-01-26", PeriodKind::Monthly),
        ]);
        assert_eq!(s.period_of(d("2026-01-20")), p("2026-01-19", "2026-01-25"));
        assert_eq!(s.period_of(d("2026-01-26")), p("2026-01-26", "2026-01-31"));
        assert_eq!(
            s.whole_days(d("2026-01-19")),
            Some(14),
            "a cut period's whole length"
        );
        assert_eq!(s.whole_days(d("2026-01-26")), Some(31));
        assert_eq!(
            s.periods_starting_between(d("2026-01-01"), d("2026-02-01")),
            vec![
                p("2026-01-05", "2026-01-18").unwrap(),
                p("2026-01-19", "2026-01-25").unwrap(),
                p("2026-01-26", "2026-01-31").unwrap(),
                p("2026-02-01", "2026-02-28").unwrap(),
            ]
        );
    }

    proptest! {
        #[test]
        fn periods_cover_every_day_once(
            kinds in prop::collection::vec((0u64..400, 0usize..4), 1..4),
            probe in 0u64..800,
        ) {
            let all = [PeriodKind::Weekly, PeriodKind::BiWeekly, PeriodKind::SemiMonthly, PeriodKind::Monthly];
            let base = d("2026-01-01");
            let s = Schedule {
                segments: kinds
                    .iter()
                    .map(|(offset, k)| (base + Days::new(*offset), all[*k]))
                    .collect(),
            };
            let day = base + Days::new(probe);
            let first_segment = *s.segments.keys().next().unwrap();
            match s.period_of(day) {
                None => prop_assert!(day < first_segment),
                Some(period) => {
                    prop_assert!(period.contains(day));
                    // Every day of the period has the same period; the
                    // day after it starts the next one.
                    for other in period.days() {
                        prop_assert_eq!(s.period_of(other), Some(period));
                    }
                    let next = s.period_of(period.last.succ_opt().unwrap()).unwrap();
                    prop_assert_eq!(next.first, period.last.succ_opt().unwrap());
                }
            }
        }
    }
}
