//! Payroll's invariants and the golden month, computed by hand.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::compute::{Calendar, LeaveDay, MemberInput, Threshold, member_lines};
use super::*;
use crate::organization::Weekday;
use crate::testing::AggregateTest;

const H: i64 = HOUR_MS;
const M: i64 = 60_000;

fn pid(s: &str) -> PersonId {
    PersonId::new(s).unwrap()
}

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

/// Daily 8 h at 1.5x, 12 h at 2x; weekly 40 h at 1.5x.
fn overtime() -> Overtime {
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

fn march() -> Period {
    Period {
        first: d("2026-03-01"),
        last: d("2026-03-31"),
    }
}

fn worked(list: &[(&str, i64)]) -> BTreeMap<NaiveDate, i64> {
    list.iter().map(|(day, ms)| (d(day), *ms)).collect()
}

fn hourly(list: &[(&str, i64)]) -> BTreeMap<NaiveDate, PayRate> {
    list.iter()
        .map(|(day, minor)| (d(day), PayRate::Hourly { minor: *minor }))
        .collect()
}

/// Hana, hourly 20.00 then 22.00 from 16 March, in March 2026 (Berlin; the
/// clocks go forward on Sunday 29 March, a 23-hour day).
fn hana() -> MemberInput {
    let mut days = vec![
        // The week of 23 Feb: 40 h before March starts.
        ("2026-02-23", 8 * H),
        ("2026-02-24", 8 * H),
        ("2026-02-25", 8 * H),
        ("2026-02-26", 8 * H),
        ("2026-02-27", 8 * H),
        // Sunday 1 March: 4 h, all beyond the week's 40 h.
        ("2026-03-01", 4 * H),
        // 10 h on Monday 2 March: 2 h daily overtime.
        ("2026-03-02", 10 * H),
    ];
    for day in [
        "2026-03-03",
        "2026-03-04",
        "2026-03-05",
        "2026-03-06",
        "2026-03-09",
        "2026-03-10",
        "2026-03-11",
        "2026-03-12",
        // 13 March: vacation.
        "2026-03-16",
        "2026-03-17",
        "2026-03-18",
        // 19 March: public holiday.
        "2026-03-20",
        "2026-03-23",
        "2026-03-24",
        "2026-03-25",
        "2026-03-26",
        "2026-03-27",
        "2026-03-30",
        "2026-03-31",
    ] {
        days.push((day, 8 * H));
    }
    // The night of the change: 00:00 to 06:00 local is 5 hours.
    days.push(("2026-03-29", 5 * H));
    MemberInput {
        rates: hourly(&[("2026-01-01", 2_000), ("2026-03-16", 2_200)]),
        worked: worked(&days),
        leave: BTreeMap::from([(
            d("2026-03-13"),
            vec![LeaveDay {
                leave_type: Token::new("vacation").unwrap(),
                ms: 8 * H,
                paid: true,
            }],
        )]),
    }
}

/// Jo joins on 18 March at 17.35 an hour.
fn jo() -> MemberInput {
    let mut days = vec![("2026-03-18", 7 * H + 20 * M), ("2026-03-20", 8 * H)];
    for day in [
        "2026-03-23",
        "2026-03-24",
        "2026-03-25",
        "2026-03-26",
        "2026-03-27",
    ] {
        days.push((day, 8 * H));
    }
    days.push(("2026-03-30", 9 * H));
    days.push(("2026-03-31", 9 * H));
    MemberInput {
        rates: hourly(&[("2026-03-18", 1_735)]),
        worked: worked(&days),
        leave: BTreeMap::new(),
    }
}

/// Sal joins on 11 March with a salary of 3,100.00 a month (and works some
/// hours, which a salary does not pay by the hour).
fn sal() -> MemberInput {
    MemberInput {
        rates: BTreeMap::from([(d("2026-03-11"), PayRate::Salaried { minor: 310_000 })]),
        worked: worked(&[("2026-03-11", 9 * H), ("2026-03-12", 8 * H)]),
        leave: BTreeMap::new(),
    }
}

fn holidays() -> BTreeSet<NaiveDate> {
    BTreeSet::from([d("2026-03-19")])
}

fn line(
    kind: LineKind,
    ms: i64,
    rate: i64,
    percent: u32,
    amount: i64,
) -> (LineKind, i64, i64, u32, i64) {
    (kind, ms, rate, percent, amount)
}

fn lines_of(member: &str, input: &MemberInput) -> Vec<(LineKind, i64, i64, u32, i64)> {
    let rules = overtime();
    let holidays = holidays();
    let calendar = Calendar {
        work_week: &MON_FRI,
        holidays: &holidays,
        day_ms: 8 * H,
        overtime: &rules,
        salary_days: 31,
    };
    let mut lines: Vec<_> = member_lines(&pid(member), march(), calendar, input)
        .unwrap()
        .into_iter()
        .map(|l| {
            (
                l.kind,
                if l.kind == LineKind::Salary {
                    l.days
                } else {
                    l.ms
                },
                l.rate_minor,
                l.percent,
                l.amount_minor,
            )
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn the_golden_month_to_the_cent() {
    use LineKind::*;
    // Hana: 72 h regular at 20.00 = 1,440.00; 6 h overtime at 1.5x 20.00
    // (4 h on Sunday 1 March beyond the week's 40 h, which began in
    // February; 2 h beyond 8 on 2 March) = 180.00; the vacation day at
    // 20.00 = 160.00; from 16 March at 22.00: 88 h regular = 1,936.00, 5 h
    // on the 23-hour Sunday beyond the week's 40 h at 1.5x = 165.00, the
    // holiday on 19 March = 176.00. Total 4,057.00.
    let hana = lines_of("hana", &hana());
    assert_eq!(
        hana,
        vec![
            line(Regular, 72 * H, 2_000, 100, 144_000),
            line(Regular, 88 * H, 2_200, 100, 193_600),
            line(Overtime, 5 * H, 2_200, 150, 16_500),
            line(Overtime, 6 * H, 2_000, 150, 18_000),
            line(Leave, 8 * H, 2_000, 100, 16_000),
            line(Holiday, 8 * H, 2_200, 100, 17_600),
        ]
    );
    assert_eq!(hana.iter().map(|l| l.4).sum::<i64>(), 405_700);
    // Jo: 71 h 20 min regular at 17.35 = 1,237.633... -> 1,237.63; 2 h
    // daily overtime at 1.5x = 52.05; the holiday = 138.80. Total 1,428.48.
    let jo = lines_of("jo", &jo());
    assert_eq!(
        jo,
        vec![
            line(Regular, 71 * H + 20 * M, 1_735, 100, 123_763),
            line(Overtime, 2 * H, 1_735, 150, 5_205),
            line(Holiday, 8 * H, 1_735, 100, 13_880),
        ]
    );
    assert_eq!(jo.iter().map(|l| l.4).sum::<i64>(), 142_848);
    // Sal: 3,100.00 x 21 / 31 days = 2,100.00.
    assert_eq!(
        lines_of("sal", &sal()),
        vec![line(Salary, 21, 310_000, 100, 210_000)]
    );
}

#[test]
fn time_without_a_rate_is_named_not_paid() {
    let rules = overtime();
    let holidays = holidays();
    let calendar = Calendar {
        work_week: &MON_FRI,
        holidays: &holidays,
        day_ms: 8 * H,
        overtime: &rules,
        salary_days: 31,
    };
    let mut input = jo();
    input.worked.insert(d("2026-03-17"), H);
    assert_eq!(
        member_lines(&pid("jo"), march(), calendar, &input),
        Err(vec![d("2026-03-17")])
    );
}

fn admin(change: PolicyChange) -> PayrollCommand {
    PayrollCommand::Change {
        is_admin: true,
        change,
    }
}

fn set_up() -> Vec<PayrollEvent> {
    vec![
        PayrollEvent::CurrencySet {
            currency: Currency::parse("EUR").unwrap(),
        },
        PayrollEvent::ScheduleSet {
            from: d("2026-01-01"),
            kind: PeriodKind::Monthly,
        },
    ]
}

fn pay(member: &str, amount: i64) -> Line {
    Line {
        member: pid(member),
        kind: LineKind::Regular,
        leave_type: None,
        corrects: None,
        ms: H,
        days: 0,
        rate_minor: amount,
        percent: 100,
        amount_minor: amount,
    }
}

fn terms() -> Terms {
    Terms {
        overtime: Overtime::default(),
        day_ms: 8 * H,
        holidays: BTreeSet::new(),
        paid_leave: BTreeSet::new(),
        salary_days: 31,
    }
}

fn draft(first: &str, today: &str, lines: Vec<Line>) -> PayrollCommand {
    PayrollCommand::Draft {
        is_admin: true,
        first: d(first),
        today: d(today),
        lines,
        terms: terms(),
        missing: vec![],
        recomputed: BTreeMap::new(),
    }
}

fn drafted(first: &str, last: &str, n: u32, lines: Vec<Line>) -> PayrollEvent {
    PayrollEvent::RunDrafted {
        period: Period {
            first: d(first),
            last: d(last),
        },
        draft: n,
        lines,
        missing: vec![],
        terms: Some(terms()),
    }
}

fn finalized(first: &str, n: u32) -> PayrollEvent {
    PayrollEvent::RunFinalized {
        first: d(first),
        draft: n,
    }
}

#[test]
fn policy_changes_are_checked() {
    let given = || AggregateTest::<Payroll>::given(set_up());
    given()
        .when(PayrollCommand::Change {
            is_admin: false,
            change: PolicyChange::DayMs(8 * H),
        })
        .then_expect_error(PayrollError::NotAdmin);
    given()
        .when(admin(PolicyChange::Currency("XXX".into())))
        .then_expect_error(PayrollError::Money(
            crate::money::MoneyError::UnknownCurrency("XXX".into()),
        ));
    given()
        .when(admin(PolicyChange::Rate {
            member: pid("erin"),
            is_member: true,
            from: d("2026-03-01"),
            rate: PayRate::Hourly { minor: 0 },
        }))
        .then_expect_error(PayrollError::BadRate);
    given()
        .when(admin(PolicyChange::Rate {
            member: pid("stranger"),
            is_member: false,
            from: d("2026-03-01"),
            rate: PayRate::Hourly { minor: 2_000 },
        }))
        .then_expect_error(PayrollError::NotAMember);
    let mut bad = overtime();
    bad.daily_double = Some(Threshold {
        after_ms: 6 * H,
        percent: 200,
    });
    given()
        .when(admin(PolicyChange::Overtime(bad)))
        .then_expect_error(PayrollError::Overtime(
            "the double-time threshold is above the daily one",
        ));
    given()
        .when(admin(PolicyChange::Holiday {
            date: d("2026-12-25"),
            name: Some("\u{0}".into()),
        }))
        .then_expect_error(PayrollError::BadName);
}

#[test]
fn a_run_covers_a_period_that_has_ended_and_is_not_before_a_finalized_one() {
    let given = || AggregateTest::<Payroll>::given(set_up());
    given()
        .when(draft("2026-03-01", "2026-03-31", vec![]))
        .then_expect_error(PayrollError::NotEnded {
            first: d("2026-03-01"),
            last: d("2026-03-31"),
        });
    given()
        .when(draft("2026-03-02", "2026-04-02", vec![]))
        .then_expect_error(PayrollError::NotAPeriod {
            first: d("2026-03-02"),
            starts: Some(d("2026-03-01")),
        });
    given()
        .when(draft("2026-03-01", "2026-04-01", vec![pay("erin", 100)]))
        .then_expect(vec![drafted(
            "2026-03-01",
            "2026-03-31",
            1,
            vec![pay("erin", 100)],
        )]);
    AggregateTest::<Payroll>::given(vec![])
        .when(draft("2026-03-01", "2026-04-01", vec![]))
        .then_expect_error(PayrollError::NoCurrency);
    let mut done = set_up();
    done.extend([
        drafted("2026-04-01", "2026-04-30", 1, vec![]),
        finalized("2026-04-01", 1),
    ]);
    AggregateTest::<Payroll>::given(done.clone())
        .when(draft("2026-03-01", "2026-06-01", vec![]))
        .then_expect_error(PayrollError::LaterFinalized(d("2026-04-01")));
    AggregateTest::<Payroll>::given(done.clone())
        .when(draft("2026-04-01", "2026-06-01", vec![]))
        .then_expect_error(PayrollError::Finalized(d("2026-04-01")));
    // The schedule never changes for a day a run covers.
    AggregateTest::<Payroll>::given(done)
        .when(admin(PolicyChange::Schedule {
            from: d("2026-04-16"),
            kind: PeriodKind::SemiMonthly,
        }))
        .then_expect_error(PayrollError::ScheduleOverlapsRun {
            from: d("2026-04-16"),
            first: d("2026-04-01"),
            last: d("2026-04-30"),
        });
}

#[test]
fn finalizing_needs_nothing_missing_the_reviewed_draft_and_earlier_runs_final() {
    let missing = vec![Missing::Week {
        member: pid("erin"),
        first_day: d("2026-03-30"),
    }];
    let mut given = set_up();
    given.push(PayrollEvent::RunDrafted {
        period: march(),
        draft: 1,
        lines: vec![],
        missing: missing.clone(),
        terms: None,
    });
    let finalize = |n| PayrollCommand::Finalize {
        is_admin: true,
        first: d("2026-03-01"),
        draft: n,
    };
    AggregateTest::<Payroll>::given(given.clone())
        .when(finalize(1))
        .then_expect_error(PayrollError::Missing(missing));
    let error = PayrollError::Missing(vec![Missing::Week {
        member: pid("erin"),
        first_day: d("2026-03-30"),
    }]);
    assert_eq!(
        error.to_string(),
        "1 missing: the week of 2026-03-30 of erin is not approved"
    );
    given.push(drafted("2026-03-01", "2026-03-31", 2, vec![]));
    AggregateTest::<Payroll>::given(given.clone())
        .when(finalize(1))
        .then_expect_error(PayrollError::StaleDraft {
            reviewed: 1,
            current: 2,
        });
    given.push(drafted("2026-04-01", "2026-04-30", 1, vec![]));
    AggregateTest::<Payroll>::given(given.clone())
        .when(PayrollCommand::Finalize {
            is_admin: true,
            first: d("2026-04-01"),
            draft: 1,
        })
        .then_expect_error(PayrollError::EarlierDraft(d("2026-03-01")));
    AggregateTest::<Payroll>::given(given)
        .when(finalize(2))
        .then_expect(vec![finalized("2026-03-01", 2)]);
}

#[test]
fn a_correction_of_a_finalized_run_is_an_adjustment_of_the_next() {
    let mut given = set_up();
    given.extend([
        drafted(
            "2026-03-01",
            "2026-03-31",
            1,
            vec![pay("hana", 405_700), pay("jo", 142_848)],
        ),
        finalized("2026-03-01", 1),
    ]);
    // March is now worth 66.00 more for Hana (a reopened week), the same
    // for Jo.
    let recomputed = BTreeMap::from([(
        d("2026-03-01"),
        BTreeMap::from([(pid("hana"), 412_300), (pid("jo"), 142_848)]),
    )]);
    let adjustment = Line {
        member: pid("hana"),
        kind: LineKind::Adjustment,
        leave_type: None,
        corrects: Some(d("2026-03-01")),
        ms: 0,
        days: 0,
        rate_minor: 0,
        percent: 100,
        amount_minor: 6_600,
    };
    let command = PayrollCommand::Draft {
        is_admin: true,
        first: d("2026-04-01"),
        today: d("2026-05-01"),
        lines: vec![pay("hana", 100)],
        terms: terms(),
        missing: vec![],
        recomputed: recomputed.clone(),
    };
    AggregateTest::<Payroll>::given(given.clone())
        .when(command)
        .then_expect(vec![drafted(
            "2026-04-01",
            "2026-04-30",
            1,
            vec![pay("hana", 100), adjustment.clone()],
        )]);
    // Once April is finalized with it, May adjusts nothing more for March.
    given.extend([
        drafted(
            "2026-04-01",
            "2026-04-30",
            1,
            vec![pay("hana", 100), adjustment],
        ),
        finalized("2026-04-01", 1),
    ]);
    AggregateTest::<Payroll>::given(given)
        .when(PayrollCommand::Draft {
            is_admin: true,
            first: d("2026-05-01"),
            today: d("2026-06-01"),
            lines: vec![],
            terms: terms(),
            missing: vec![],
            recomputed,
        })
        .then_expect(vec![drafted("2026-05-01", "2026-05-31", 1, vec![])]);
}

#[test]
fn runs_go_one_period_after_another_and_currency_stays_with_its_rates() {
    let mut given = set_up();
    given.extend([
        drafted("2026-03-01", "2026-03-31", 1, vec![]),
        finalized("2026-03-01", 1),
    ]);
    // April skipped: May is refused, naming April.
    AggregateTest::<Payroll>::given(given.clone())
        .when(draft("2026-05-01", "2026-06-01", vec![]))
        .then_expect_error(PayrollError::PreviousOpen(d("2026-04-01")));
    // April drafted but not finalized: May still waits.
    given.push(drafted("2026-04-01", "2026-04-30", 1, vec![]));
    AggregateTest::<Payroll>::given(given.clone())
        .when(draft("2026-05-01", "2026-06-01", vec![]))
        .then_expect_error(PayrollError::PreviousOpen(d("2026-04-01")));
    // Rates are set in the currency: it no longer changes.
    AggregateTest::<Payroll>::given(vec![
        PayrollEvent::CurrencySet {
            currency: Currency::parse("EUR").unwrap(),
        },
        PayrollEvent::RateSet {
            member: pid("erin"),
            from: d("2026-01-01"),
            rate: PayRate::Hourly { minor: 2_500 },
        },
    ])
    .when(admin(PolicyChange::Currency("JPY".into())))
    .then_expect_error(PayrollError::CurrencyFixed);
}

#[test]
fn an_ended_rate_pays_nothing_after_it_and_a_cut_period_pays_its_days_of_a_salary() {
    let rules = overtime();
    let holidays = BTreeSet::new();
    let calendar = |salary_days| Calendar {
        work_week: &MON_FRI,
        holidays: &holidays,
        day_ms: 8 * H,
        overtime: &rules,
        salary_days,
    };
    // Jo leaves after 20 March: his time up to then is paid.
    let mut input = jo();
    input.rates.insert(d("2026-03-21"), PayRate::Ended);
    input.worked.retain(|day, _| *day < d("2026-03-21"));
    let lines = member_lines(&pid("jo"), march(), calendar(31), &input).unwrap();
    let regular: i64 = lines
        .iter()
        .filter(|l| l.kind == LineKind::Regular)
        .map(|l| l.ms)
        .sum();
    assert_eq!(regular, 15 * H + 20 * M, "18 and 20 March");
    // Time recorded after he left is named, not paid.
    input.worked.insert(d("2026-03-24"), H);
    assert!(member_lines(&pid("jo"), march(), calendar(31), &input).is_err());
    // A salary of 2,800.00 every two weeks, for a period cut to 7 days.
    let sal = MemberInput {
        rates: BTreeMap::from([(d("2026-01-01"), PayRate::Salaried { minor: 280_000 })]),
        ..MemberInput::default()
    };
    let week = Period {
        first: d("2026-03-02"),
        last: d("2026-03-08"),
    };
    let lines = member_lines(&pid("sal"), week, calendar(14), &sal).unwrap();
    assert_eq!(lines[0].amount_minor, 140_000);
}

#[derive(Debug, Clone)]
enum Step {
    Draft(u8, i64),
    Finalize(u8, u32),
    Schedule(u8),
}

proptest! {
    #[test]
    fn a_finalized_run_never_changes(
        steps in prop::collection::vec(
            prop_oneof![
                (0u8..6, 0i64..1_000).prop_map(|(m, a)| Step::Draft(m, a)),
                (0u8..6, 1u32..4).prop_map(|(m, n)| Step::Finalize(m, n)),
                (0u8..8).prop_map(Step::Schedule),
            ],
            1..40,
        ),
    ) {
        let mut state = Payroll::default();
        for e in set_up() {
            state.apply(&e);
        }
        let month = |m: u8| d("2026-01-01").checked_add_months(chrono::Months::new(u32::from(m))).unwrap();
        let mut locked: BTreeMap<NaiveDate, Run> = BTreeMap::new();
        for s in steps {
            let command = match s {
                Step::Draft(m, amount) => draft(&month(m).to_string(), "2027-01-01", vec![pay("erin", amount)]),
                Step::Finalize(m, n) => PayrollCommand::Finalize { is_admin: true, first: month(m), draft: n },
                Step::Schedule(m) => admin(PolicyChange::Schedule { from: month(m), kind: PeriodKind::SemiMonthly }),
            };
            if let Ok(events) = state.handle(command) {
                for e in &events {
                    state.apply(e);
                }
            }
            for (first, run) in &locked {
                prop_assert_eq!(state.runs.get(first), Some(run));
            }
            for (first, run) in &state.runs {
                if run.status == RunStatus::Finalized {
                    locked.entry(*first).or_insert_with(|| run.clone());
                }
            }
            // Runs never overlap.
            let periods: Vec<Period> = state.runs.values().map(|r| r.period).collect();
            for pair in periods.windows(2) {
                prop_assert!(pair[0].last < pair[1].first);
            }
        }
    }
}
