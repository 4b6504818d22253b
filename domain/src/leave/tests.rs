//! Leave's invariants: given/when/then cases and a property test over
//! random command sequences (balances never below what the policy allows,
//! no two live requests share a day).

use proptest::prelude::*;

use super::*;
use crate::testing::AggregateTest;

const H: i64 = HOUR_MS;

fn pid(s: &str) -> PersonId {
    PersonId::new(s).unwrap()
}

fn tok(s: &str) -> Token {
    Token::new(s).unwrap()
}

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

const VACATION: TypeFacts = TypeFacts {
    has_balance: true,
    negative_allowance_ms: 8 * H,
};

fn accrued(ms: i64, boundary: &str) -> LeaveEvent {
    LeaveEvent::LeaveAccrued {
        member: pid("erin"),
        leave_type: tok("vacation"),
        boundary: d(boundary),
        ms,
    }
}

fn days(list: &[(&str, i64)]) -> BTreeMap<NaiveDate, i64> {
    list.iter().map(|(day, ms)| (d(day), *ms)).collect()
}

fn requested(id: &str, list: &[(&str, i64)]) -> LeaveEvent {
    LeaveEvent::LeaveRequested {
        member: pid("erin"),
        id: tok(id),
        leave_type: tok("vacation"),
        days: days(list),
        note: None,
    }
}

fn request(id: &str, list: &[(&str, i64)]) -> LeaveCommand {
    LeaveCommand::Request {
        actor: pid("erin"),
        member: pid("erin"),
        id: tok(id),
        leave_type: tok("vacation"),
        facts: VACATION,
        days: days(list),
        note: None,
    }
}

fn approve(id: &str) -> LeaveCommand {
    LeaveCommand::Approve {
        actor: pid("manny"),
        may_approve: true,
        id: tok(id),
        facts: VACATION,
    }
}

#[test]
fn a_request_within_the_balance_is_recorded_and_approved() {
    AggregateTest::<Leave>::given(vec![accrued(16 * H, "2026-03-01")])
        .when(request(
            "r1",
            &[("2026-03-10", 8 * H), ("2026-03-11", 4 * H)],
        ))
        .then_expect(vec![requested(
            "r1",
            &[("2026-03-10", 8 * H), ("2026-03-11", 4 * H)],
        )]);
    AggregateTest::<Leave>::given(vec![
        accrued(16 * H, "2026-03-01"),
        requested("r1", &[("2026-03-10", 8 * H)]),
    ])
    .when(approve("r1"))
    .then_expect(vec![LeaveEvent::LeaveApproved {
        id: tok("r1"),
        by: pid("manny"),
    }]);
}

#[test]
fn approval_is_refused_below_the_negative_allowance() {
    // 8 h accrued, 8 h approved: balance 0; 16 h more would go 16 h under,
    // the policy allows 8.
    let given = vec![
        accrued(8 * H, "2026-03-01"),
        requested("r1", &[("2026-03-09", 8 * H)]),
        LeaveEvent::LeaveApproved {
            id: tok("r1"),
            by: pid("manny"),
        },
        requested("r2", &[("2026-03-10", 8 * H), ("2026-03-11", 8 * H)]),
    ];
    AggregateTest::<Leave>::given(given.clone())
        .when(approve("r2"))
        .then_expect_error(LeaveError::InsufficientBalance {
            balance_h: "0.00".into(),
            needed_h: "16.00".into(),
            allowance_h: "8.00".into(),
        });
    // A type without a balance (sick leave) is never refused for one.
    AggregateTest::<Leave>::given(given)
        .when(LeaveCommand::Approve {
            actor: pid("manny"),
            may_approve: true,
            id: tok("r2"),
            facts: TypeFacts {
                has_balance: false,
                negative_allowance_ms: 0,
            },
        })
        .then_expect(vec![LeaveEvent::LeaveApproved {
            id: tok("r2"),
            by: pid("manny"),
        }]);
}

#[test]
fn bad_requests_are_refused() {
    let given = || AggregateTest::<Leave>::given(vec![accrued(80 * H, "2026-03-01")]);
    given()
        .when(request("r", &[]))
        .then_expect_error(LeaveError::NoDays);
    given()
        .when(request("r", &[("2026-03-10", -H)]))
        .then_expect_error(LeaveError::BadAmount);
    given()
        .when(request("r", &[("2026-03-10", 25 * H)]))
        .then_expect_error(LeaveError::BadAmount);
    given()
        .when(LeaveCommand::Request {
            actor: pid("manny"),
            member: pid("erin"),
            id: tok("r"),
            leave_type: tok("vacation"),
            facts: VACATION,
            days: days(&[("2026-03-10", H)]),
            note: None,
        })
        .then_expect_error(LeaveError::NotTheMember);
    AggregateTest::<Leave>::given(vec![
        accrued(80 * H, "2026-03-01"),
        requested("r1", &[("2026-03-10", 4 * H)]),
    ])
    .when(request(
        "r2",
        &[("2026-03-09", 8 * H), ("2026-03-10", 4 * H)],
    ))
    .then_expect_error(LeaveError::Overlaps {
        id: tok("r1"),
        day: d("2026-03-10"),
    });
}

#[test]
fn decisions_are_for_managers_and_admins_never_on_ones_own() {
    let given = || {
        AggregateTest::<Leave>::given(vec![
            accrued(80 * H, "2026-03-01"),
            requested("r1", &[("2026-03-10", 8 * H)]),
        ])
    };
    given()
        .when(LeaveCommand::Approve {
            actor: pid("erin"),
            may_approve: true,
            id: tok("r1"),
            facts: VACATION,
        })
        .then_expect_error(LeaveError::OwnRequest);
    given()
        .when(LeaveCommand::Deny {
            actor: pid("ed"),
            may_approve: false,
            id: tok("r1"),
            comment: None,
        })
        .then_expect_error(LeaveError::MayNotDecide);
    // Whether a request exists is not told to someone who may not decide.
    given()
        .when(LeaveCommand::Approve {
            actor: pid("ed"),
            may_approve: false,
            id: tok("nope"),
            facts: VACATION,
        })
        .then_expect_error(LeaveError::MayNotDecide);
    AggregateTest::<Leave>::given(vec![
        requested("r1", &[("2026-03-10", 8 * H)]),
        LeaveEvent::LeaveDenied {
            id: tok("r1"),
            by: pid("manny"),
            comment: None,
        },
    ])
    .when(approve("r1"))
    .then_expect_error(LeaveError::NotPending(RequestStatus::Denied));
}

#[test]
fn cancel_only_before_the_leave_starts() {
    let given = || {
        AggregateTest::<Leave>::given(vec![
            accrued(80 * H, "2026-03-01"),
            requested("r1", &[("2026-03-10", 8 * H)]),
        ])
    };
    given()
        .when(LeaveCommand::Cancel {
            actor: pid("erin"),
            id: tok("r1"),
            today: d("2026-03-09"),
        })
        .then_expect(vec![LeaveEvent::LeaveCancelled { id: tok("r1") }]);
    given()
        .when(LeaveCommand::Cancel {
            actor: pid("erin"),
            id: tok("r1"),
            today: d("2026-03-10"),
        })
        .then_expect_error(LeaveError::Started);
    given()
        .when(LeaveCommand::Cancel {
            actor: pid("manny"),
            id: tok("r1"),
            today: d("2026-03-01"),
        })
        .then_expect_error(LeaveError::NotTheMember);
}

#[test]
fn accruals_and_carry_overs_are_recorded_once() {
    AggregateTest::<Leave>::given(vec![accrued(8 * H, "2026-03-01")])
        .when(LeaveCommand::Accrue {
            member: pid("erin"),
            leave_type: tok("vacation"),
            boundary: d("2026-03-01"),
            ms: 8 * H,
        })
        .then_expect(vec![]);
    // 2025: 40 h accrued, 8 h taken in 2025, 8 h booked in 2026; the cap
    // of 16 h takes 40 - 8 - 16 = 16 h.
    let given = vec![
        accrued(40 * H, "2025-06-01"),
        accrued(8 * H, "2026-01-01"),
        requested("r1", &[("2025-07-01", 8 * H)]),
        LeaveEvent::LeaveApproved {
            id: tok("r1"),
            by: pid("manny"),
        },
        requested("r2", &[("2026-02-02", 8 * H)]),
        LeaveEvent::LeaveApproved {
            id: tok("r2"),
            by: pid("manny"),
        },
    ];
    let carry = LeaveCommand::CarryOver {
        member: pid("erin"),
        leave_type: tok("vacation"),
        year: 2026,
        cap_ms: 16 * H,
    };
    let forfeited = LeaveEvent::LeaveForfeited {
        member: pid("erin"),
        leave_type: tok("vacation"),
        year: 2026,
        ms: 16 * H,
    };
    AggregateTest::<Leave>::given(given.clone())
        .when(carry.clone())
        .then_expect(vec![forfeited.clone()]);
    // Leave approved for the new year already took from the balance: the
    // cap never takes it below zero. 40 h accrued in 2025, 32 h of January
    // approved: 8 h left, the cap of 0 takes those 8, not 40.
    AggregateTest::<Leave>::given(vec![
        accrued(40 * H, "2025-06-01"),
        requested("r9", &[("2026-01-05", 16 * H), ("2026-01-06", 16 * H)]),
        LeaveEvent::LeaveApproved {
            id: tok("r9"),
            by: pid("manny"),
        },
    ])
    .when(LeaveCommand::CarryOver {
        member: pid("erin"),
        leave_type: tok("vacation"),
        year: 2026,
        cap_ms: 0,
    })
    .then_expect(vec![LeaveEvent::LeaveForfeited {
        member: pid("erin"),
        leave_type: tok("vacation"),
        year: 2026,
        ms: 8 * H,
    }]);
    let mut state = Leave::default();
    for e in given.iter().chain([&forfeited]) {
        state.apply(e);
    }
    // 48 accrued - 16 taken - 16 forfeited.
    assert_eq!(state.balance(&tok("vacation")), 16 * H);
    assert_eq!(state.handle(carry), Ok(vec![]));
}

#[derive(Debug, Clone)]
enum Step {
    Accrue(i64),
    Request(u8, u8, i64),
    Approve(u8),
    Deny(u8),
    Cancel(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1i64..40).prop_map(|h| Step::Accrue(h * H)),
        (0u8..8, 1u8..4, 1i64..9).prop_map(|(day, len, h)| Step::Request(day, len, h * H)),
        (0u8..12).prop_map(Step::Approve),
        (0u8..12).prop_map(Step::Deny),
        (0u8..12).prop_map(Step::Cancel),
    ]
}

proptest! {
    #[test]
    fn no_sequence_takes_a_balance_below_its_allowance_or_overlaps(
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let mut state = Leave::default();
        let mut next = 0;
        let first = d("2026-03-02");
        for s in steps {
            let command = match s {
                Step::Accrue(ms) => {
                    next += 1;
                    LeaveCommand::Accrue {
                        member: pid("erin"),
                        leave_type: tok("vacation"),
                        boundary: first + chrono::Days::new(next),
                        ms,
                    }
                }
                Step::Request(day, len, ms) => {
                    next += 1;
                    let start = first + chrono::Days::new(u64::from(day));
                    LeaveCommand::Request {
                        actor: pid("erin"),
                        member: pid("erin"),
                        id: tok(&format!("r{next}")),
                        leave_type: tok("vacation"),
                        facts: VACATION,
                        days: (0..len).map(|i| (start + chrono::Days::new(u64::from(i)), ms)).collect(),
                        note: None,
                    }
                }
                Step::Approve(i) => approve(&format!("r{i}")),
                Step::Deny(i) => LeaveCommand::Deny {
                    actor: pid("manny"),
                    may_approve: true,
                    id: tok(&format!("r{i}")),
                    comment: None,
                },
                Step::Cancel(i) => LeaveCommand::Cancel {
                    actor: pid("erin"),
                    id: tok(&format!("r{i}")),
                    today: first,
                },
            };
            if let Ok(events) = state.handle(command) {
                for e in &events {
                    state.apply(e);
                }
            }
            prop_assert!(state.balance(&tok("vacation")) >= -VACATION.negative_allowance_ms);
            let mut seen = std::collections::BTreeSet::new();
            for r in state.requests.values().filter(|r| r.live()) {
                for day in r.days.keys() {
                    prop_assert!(seen.insert(*day), "two live requests on {day}");
                }
            }
        }
    }
}
