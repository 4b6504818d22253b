//! Weeks as the org lives them: in its time zone, starting on the first day
//! of its work week. A timesheet's bounds are computed here (by the use
//! cases, and by the work projection for observed activity) and passed to
//! the `Timesheet` aggregate, which has no time zones. Pure: the time-zone
//! data is compiled in. A week
//! in which daylight saving time starts or ends is 167 or 169 hours long.

use crate::ids::{PersonId, Token};
use crate::organization::Weekday;
use crate::timesheet::Week;
use chrono::{Datelike, Days, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

/// The day a work week starts: the work day after its longest run of days
/// off (Monday for Monday to Friday, Sunday for Sunday to Thursday; Monday
/// when every day or no day is a work day), as days from Monday.
pub fn week_start(work_week: &[Weekday]) -> u64 {
    let works = |day: u64| work_week.iter().any(|w| *w as u64 == day % 7);
    (0..7u64)
        .filter(|&day| works(day))
        .map(|day| {
            let off = (1..7u64).take_while(|back| !works(day + 7 - back)).count();
            (off, day)
        })
        // Longest run of days off first; among equals, the earliest day.
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map_or(0, |(_, day)| day)
}

/// The first day of the week that holds `date` (see [`week_start`]).
pub fn first_day(date: NaiveDate, work_week: &[Weekday]) -> NaiveDate {
    let first = week_start(work_week);
    let today = u64::from(date.weekday().num_days_from_monday());
    date - Days::new((7 + today - first) % 7)
}

/// The week that holds `date`: from the local midnight of its first day to
/// that of the next week's, in `tz`.
pub fn week_of(date: NaiveDate, tz: Tz, work_week: &[Weekday]) -> Week {
    let first = first_day(date, work_week);
    Week {
        start_ms: day_start_ms(first, tz),
        end_ms: day_start_ms(first + Days::new(7), tz),
    }
}

/// The first instant of `date` in `tz`: its midnight, or where a daylight
/// saving change skips midnight (as in Santiago or Beirut), the first local
/// time after it that exists.
pub fn day_start_ms(date: NaiveDate, tz: Tz) -> i64 {
    let mut local: NaiveDateTime = date.and_time(chrono::NaiveTime::MIN);
    // A gap is at most a few hours; a quarter of an hour at a time finds
    // its end.
    for _ in 0..(4 * 24) {
        if let Some(instant) = tz.from_local_datetime(&local).earliest() {
            return instant.timestamp_millis();
        }
        local += chrono::Duration::minutes(15);
    }
    tz.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
        .timestamp_millis()
}

/// The id of `member`'s timesheet for the week starting `first_day`:
/// `<member>-<yyyy-mm-dd>`; `None` when the member's id is too long for
/// it (ids longer than 53 characters).
pub fn timesheet_id(member: &PersonId, first_day: NaiveDate) -> Option<Token> {
    Token::new(format!("{member}-{}", first_day.format("%Y-%m-%d"))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const MON_FRI: [Weekday; 5] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
    ];

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn hours(week: Week) -> i64 {
        (week.end_ms - week.start_ms) / H
    }

    #[test]
    fn weeks_start_on_the_first_work_day_at_local_midnight() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let week = week_of(d("2026-12-02"), berlin, &MON_FRI);
        assert_eq!(first_day(d("2026-12-02"), &MON_FRI), d("2026-11-30"));
        // Monday 2026-11-30 00:00 in Berlin is 23:00 UTC the day before.
        assert_eq!(week.start_ms, 1_795_993_200_000);
        assert_eq!(hours(week), 168);
        // The first day itself and the last day belong to the same week.
        assert_eq!(week_of(d("2026-11-30"), berlin, &MON_FRI), week);
        assert_eq!(week_of(d("2026-12-06"), berlin, &MON_FRI), week);
        assert_ne!(week_of(d("2026-12-07"), berlin, &MON_FRI), week);
        // A Sunday to Thursday work week starts on Sunday (Friday and
        // Saturday off), one of Tuesday to Saturday on Tuesday.
        let sun_thu = [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Sunday,
        ];
        assert_eq!(first_day(d("2026-12-02"), &sun_thu), d("2026-11-29"));
        let tue_sat = [
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
            Weekday::Saturday,
        ];
        assert_eq!(first_day(d("2026-12-02"), &tue_sat), d("2026-12-01"));
        // Monday, Wednesday and Friday: the longest time off ends on Monday.
        let mwf = [Weekday::Monday, Weekday::Wednesday, Weekday::Friday];
        assert_eq!(first_day(d("2026-12-05"), &mwf), d("2026-11-30"));
        assert_eq!(first_day(d("2026-12-02"), &[]), d("2026-11-30"));
    }

    #[test]
    fn weeks_with_a_daylight_saving_change_are_167_or_169_hours() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // Summer time starts on Sunday 2026-03-29, ends on Sunday 2026-10-25.
        assert_eq!(hours(week_of(d("2026-03-25"), berlin, &MON_FRI)), 167);
        assert_eq!(hours(week_of(d("2026-10-21"), berlin, &MON_FRI)), 169);
        assert_eq!(hours(week_of(d("2026-07-01"), berlin, &MON_FRI)), 168);
        let new_york: Tz = "America/New_York".parse().unwrap();
        // 2026-03-08 and 2026-11-01, both Sundays: in the week of the Monday before.
        assert_eq!(hours(week_of(d("2026-03-04"), new_york, &MON_FRI)), 167);
        assert_eq!(hours(week_of(d("2026-10-28"), new_york, &MON_FRI)), 169);
        // UTC never changes.
        assert_eq!(hours(week_of(d("2026-03-25"), Tz::UTC, &MON_FRI)), 168);
    }

    #[test]
    fn a_day_whose_midnight_does_not_exist_starts_when_the_clock_resumes() {
        // Santiago springs forward at midnight: 2026-09-06 starts at 01:00.
        let santiago: Tz = "America/Santiago".parse().unwrap();
        let start = day_start_ms(d("2026-09-06"), santiago);
        let local = santiago.timestamp_millis_opt(start).unwrap();
        assert_eq!(
            local.format("%Y-%m-%d %H:%M").to_string(),
            "2026-09-06 01:00"
        );
        // Weeks either side of it still meet without a gap.
        let before = week_of(d("2026-09-02"), santiago, &MON_FRI);
        let after = week_of(d("2026-09-09"), santiago, &MON_FRI);
        assert_eq!(before.end_ms, after.start_ms);
    }

    #[test]
    fn timesheet_ids_name_the_member_and_the_week() {
        let erin = PersonId::new("erin").unwrap();
        assert_eq!(
            timesheet_id(&erin, d("2026-11-30")).unwrap().as_str(),
            "erin-2026-11-30"
        );
        let long = PersonId::new("p".repeat(60)).unwrap();
        assert!(timesheet_id(&long, d("2026-11-30")).is_none());
    }
}
