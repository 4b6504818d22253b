//! A member's pay for one period, line by line, from their approved time,
//! their approved leave, the org's holidays and their pay rates. Pure and
//! deterministic: the same inputs give the same lines, to the minor unit.
//!
//! The rules, in the order they apply to each local day of the period:
//! - Hours are the day's approved time (local days of the org's time zone,
//!   so a day in which daylight saving time changes has 23 or 25 hours).
//! - Daily overtime: time beyond the daily threshold is overtime at its
//!   multiplier, time beyond the double threshold at the double one.
//! - Weekly overtime: the rest (regular time) counts towards the weekly
//!   threshold in the order it was worked, from the first day of the work
//!   week, also when that day lies in the period before; regular time
//!   beyond the threshold becomes overtime at the weekly multiplier. So a
//!   week that spans two periods pays its overtime in the period of the
//!   day the threshold was crossed.
//! - Each day is paid at the hourly rate in effect on it (rates take effect
//!   from a date); a rate change in the middle of a period gives one line
//!   per rate.
//! - Paid leave is paid at the regular rate, unpaid leave is listed at 0.
//! - A public holiday on a work day pays the standard day to hourly
//!   members who have a rate on it.
//! - A salary is paid per period: for the days of the period it is in
//!   effect, `salary x days / days of a whole period` (a member who joins in
//!   the middle of a period is paid from the day their rate takes effect; a
//!   period cut short by a change of pay periods pays its days only).
//! - A rate that ended (the member left) pays nothing from its day on.
//! - Amounts are computed once per line (`crate::money`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::schedule::Period;
use crate::ids::{PersonId, Token};
use crate::money::{amount_for, share};
use crate::organization::Weekday;
use crate::week::first_day;

/// A member's pay rate, in minor units of the org's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayRate {
    /// Paid per hour.
    Hourly {
        /// An hour, in minor units.
        minor: i64,
    },
    /// Paid a salary per pay period (no overtime).
    Salaried {
        /// A whole period, in minor units.
        minor: i64,
    },
    /// No pay from this day: the member left (or is on a break).
    Ended,
}

/// An overtime threshold and what time beyond it is paid at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threshold {
    /// Time before overtime starts, ms.
    pub after_ms: i64,
    /// What overtime is paid at, in percent of the rate (150: time and a
    /// half).
    pub percent: u32,
}

/// The org's overtime rules; none by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overtime {
    /// Beyond this much in a day.
    pub daily: Option<Threshold>,
    /// Beyond this much in a day (more than `daily`'s).
    pub daily_double: Option<Threshold>,
    /// Beyond this much regular time in a work week.
    pub weekly: Option<Threshold>,
}

/// What a line pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// Regular hours.
    Regular,
    /// Overtime hours at the line's percent.
    Overtime,
    /// Leave of the line's leave type (paid at 100 %, unpaid at 0).
    Leave,
    /// Public holidays.
    Holiday,
    /// A salary for the line's days.
    Salary,
    /// A correction of a finalized run.
    Adjustment,
}

/// One line of a payroll run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Whose pay.
    pub member: PersonId,
    /// What for.
    pub kind: LineKind,
    /// The leave type of a leave line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave_type: Option<Token>,
    /// The first day of the period an adjustment corrects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrects: Option<NaiveDate>,
    /// Hours, in ms.
    pub ms: i64,
    /// Days a salary line pays for.
    #[serde(default)]
    pub days: i64,
    /// The hourly rate, or the salary per period, in minor units.
    pub rate_minor: i64,
    /// Percent of the rate (100 regular, 150 time and a half, 0 unpaid).
    pub percent: u32,
    /// The amount, in minor units.
    pub amount_minor: i64,
}

/// What the computation reads of the org.
#[derive(Debug, Clone, Copy)]
pub struct Calendar<'a> {
    /// The org's work week (its first day starts the weekly count).
    pub work_week: &'a [Weekday],
    /// Its public holidays.
    pub holidays: &'a BTreeSet<NaiveDate>,
    /// The hours of a standard day (a holiday), ms.
    pub day_ms: i64,
    /// Its overtime rules.
    pub overtime: &'a Overtime,
    /// The days of a whole pay period of this kind (what a salary pays for).
    pub salary_days: i64,
}

/// Approved leave on a day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveDay {
    /// Its type.
    pub leave_type: Token,
    /// How much, ms.
    pub ms: i64,
    /// Whether the type is paid.
    pub paid: bool,
}

/// What a member's lines are computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberInput {
    /// Their rates by the day each takes effect.
    pub rates: BTreeMap<NaiveDate, PayRate>,
    /// Approved time per local day (days of the weeks the period touches).
    pub worked: BTreeMap<NaiveDate, i64>,
    /// Approved leave per local day.
    pub leave: BTreeMap<NaiveDate, Vec<LeaveDay>>,
}

impl MemberInput {
    /// The rate in effect on `day` (see [`rate_on`]).
    pub fn rate_on(&self, day: NaiveDate) -> Option<PayRate> {
        rate_on(&self.rates, day)
    }
}

/// The rate of `rates` (by the day each takes effect) in effect on `day`:
/// none before the first, or once ended.
pub fn rate_on(rates: &BTreeMap<NaiveDate, PayRate>, day: NaiveDate) -> Option<PayRate> {
    rates
        .range(..=day)
        .next_back()
        .map(|(_, r)| *r)
        .filter(|r| *r != PayRate::Ended)
}

/// A member's lines for `period`, or the days on which they have time or
/// leave to be paid but no rate.
pub fn member_lines(
    member: &PersonId,
    period: Period,
    calendar: Calendar<'_>,
    input: &MemberInput,
) -> Result<Vec<Line>, Vec<NaiveDate>> {
    // (kind, leave type, rate, percent) -> ms; salary runs separately.
    let mut hours: BTreeMap<(LineKind, Option<Token>, i64, u32), i64> = BTreeMap::new();
    let mut salary: Vec<(i64, i64)> = Vec::new();
    let mut missing = Vec::new();
    let week_start = first_day(period.first, calendar.work_week);
    let mut weekly_regular = 0;
    for day in week_start.iter_days().take_while(|d| *d <= period.last) {
        if first_day(day, calendar.work_week) == day {
            weekly_regular = 0;
        }
        let worked = input.worked.get(&day).copied().unwrap_or(0);
        let (regular, overtime) = split_day(worked, calendar.overtime, &mut weekly_regular);
        if !period.contains(day) {
            continue;
        }
        let leave = input.leave.get(&day).map_or(&[][..], Vec::as_slice);
        let rate = match input.rate_on(day) {
            Some(PayRate::Salaried { minor }) => {
                match salary.last_mut() {
                    Some((rate, days)) if *rate == minor => *days += 1,
                    _ => salary.push((minor, 1)),
                }
                continue;
            }
            Some(PayRate::Hourly { minor }) => minor,
            Some(PayRate::Ended) | None => {
                if worked > 0 || !leave.is_empty() {
                    missing.push(day);
                }
                continue;
            }
        };
        let mut add = |kind, leave_type: Option<Token>, percent, ms: i64| {
            if ms > 0 {
                *hours.entry((kind, leave_type, rate, percent)).or_default() += ms;
            }
        };
        add(LineKind::Regular, None, 100, regular);
        for (percent, ms) in overtime {
            add(LineKind::Overtime, None, percent, ms);
        }
        for l in leave {
            let percent = if l.paid { 100 } else { 0 };
            add(LineKind::Leave, Some(l.leave_type.clone()), percent, l.ms);
        }
        let weekday = chrono::Datelike::weekday(&day).num_days_from_monday();
        let work_day = calendar.work_week.iter().any(|w| *w as u32 == weekday);
        if work_day && calendar.holidays.contains(&day) {
            add(LineKind::Holiday, None, 100, calendar.day_ms);
        }
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    let mut lines: Vec<Line> = hours
        .into_iter()
        .map(|((kind, leave_type, rate, percent), ms)| Line {
            member: member.clone(),
            kind,
            leave_type,
            corrects: None,
            ms,
            days: 0,
            rate_minor: rate,
            percent,
            amount_minor: amount_for(ms, rate, percent),
        })
        .collect();
    lines.extend(salary.into_iter().map(|(rate, days)| Line {
        member: member.clone(),
        kind: LineKind::Salary,
        leave_type: None,
        corrects: None,
        ms: 0,
        days,
        rate_minor: rate,
        percent: 100,
        amount_minor: share(rate, days, calendar.salary_days.max(1)),
    }));
    Ok(lines)
}

/// Splits a day's `worked` ms into regular time and overtime (percent,
/// ms), counting regular time towards the week's threshold.
fn split_day(worked: i64, rules: &Overtime, weekly_regular: &mut i64) -> (i64, Vec<(u32, i64)>) {
    let mut overtime = Vec::new();
    let mut regular = worked;
    if let Some(daily) = rules.daily
        && worked > daily.after_ms
    {
        regular = daily.after_ms;
        match rules.daily_double {
            Some(double) if worked > double.after_ms => {
                overtime.push((daily.percent, double.after_ms - daily.after_ms));
                overtime.push((double.percent, worked - double.after_ms));
            }
            _ => overtime.push((daily.percent, worked - daily.after_ms)),
        }
    }
    if let Some(weekly) = rules.weekly {
        let beyond = (*weekly_regular + regular - weekly.after_ms).clamp(0, regular);
        regular -= beyond;
        overtime.push((weekly.percent, beyond));
    }
    *weekly_regular += regular;
    (regular, overtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    const MON_FRI: [Weekday; 5] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
    ];

    fn rules() -> Overtime {
        Overtime {
            daily: Some(Threshold {
                after_ms: 8 * H,
                percent: 150,
            }),
            daily_double: Some(Threshold {
                after_ms: 12 * H,
                percent: 200,
            }),
            weekly: Some(Threshold {
                after_ms: 40 * H,
                percent: 150,
            }),
        }
    }

    #[test]
    fn a_day_splits_into_regular_time_and_overtime() {
        let r = rules();
        let mut week = 0;
        assert_eq!(
            split_day(13 * H, &r, &mut week),
            (8 * H, vec![(150, 4 * H), (200, H), (150, 0)])
        );
        assert_eq!(week, 8 * H);
        let mut week = 36 * H;
        assert_eq!(split_day(6 * H, &r, &mut week), (4 * H, vec![(150, 2 * H)]));
        assert_eq!(week, 40 * H);
        let none = Overtime::default();
        assert_eq!(split_day(20 * H, &none, &mut 0), (20 * H, vec![]));
    }

    proptest! {
        #[test]
        fn every_millisecond_worked_is_paid_once(
            days in prop::collection::vec(0i64..(24 * H), 1..15),
            hourly in 1i64..10_000,
        ) {
            let r = rules();
            let holidays = BTreeSet::new();
            let calendar = Calendar { work_week: &MON_FRI, holidays: &holidays, day_ms: 8 * H, overtime: &r, salary_days: 30 };
            let first = d("2026-03-02");
            let period = Period { first, last: first + chrono::Days::new(days.len() as u64 - 1) };
            let input = MemberInput {
                rates: BTreeMap::from([(first, PayRate::Hourly { minor: hourly })]),
                worked: period.days().zip(days.iter().copied()).collect(),
                leave: BTreeMap::new(),
            };
            let lines = member_lines(&Token::new("m").unwrap(), period, calendar, &input).unwrap();
            let paid: i64 = lines.iter().map(|l| l.ms).sum();
            prop_assert_eq!(paid, days.iter().sum::<i64>());
            // Overtime never makes an hour worth less.
            let amount: i64 = lines.iter().map(|l| l.amount_minor).sum();
            prop_assert!(amount + 8 >= amount_for(paid, hourly, 100));
        }
    }
}
