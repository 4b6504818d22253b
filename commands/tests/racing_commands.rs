//! Command handling against a real nats-server: racing writers retry on
//! conflict, and the aggregate's invariant (members never exceed seats) holds.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use trackhrs_commands::{CommandError, CommandHandler};
use trackhrs_domain::Token;
use trackhrs_domain::organization::{OrgCommand, OrgError, Organization, Role};
use trackhrs_harness::NatsServer;
use trackhrs_nats::{CommitMeta, EventStore, Loaded, StoreConfig};

fn tok(s: &str) -> Token {
    Token::new(s).unwrap()
}

fn meta(id: &str) -> CommitMeta {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    CommitMeta::new(id, "user:owner", micros)
}

async fn handler(server: &NatsServer) -> CommandHandler {
    let client = server.connect().await.unwrap();
    CommandHandler::new(
        EventStore::provision_and_open(client, StoreConfig::with_kek(trackhrs_harness::test_kek()))
            .await
            .unwrap(),
    )
    .with_max_attempts(200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_racing_invitations_never_exceed_the_seats() {
    let server = NatsServer::start().await.unwrap();
    // Two handlers on two connections, as two replicas of the command role.
    let replicas = [handler(&server).await, handler(&server).await];
    let (org, id) = (tok("acme"), tok("org"));
    replicas[0]
        .execute::<Organization>(
            &org,
            &id,
            OrgCommand::Create {
                name: "Acme".into(),
                owner: tok("owner"),
                owner_email: "o@acme.test".into(),
                owner_name: "Olive".into(),
                seats: 10,
            },
            &meta("create"),
        )
        .await
        .unwrap();
    // Both replicas cache the state at version 1, then 64 invitations race.
    for r in &replicas {
        r.store().load::<Organization>(&org, &id).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..64 {
        let h = replicas[i % 2].clone();
        let (org, id) = (org.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            h.execute::<Organization>(
                &org,
                &id,
                OrgCommand::InviteMember {
                    actor: tok("owner"),
                    member: tok(&format!("m{i}")),
                    email: format!("m{i}@acme.test"),
                    name: format!("Member {i}"),
                    role: Role::Employee,
                },
                &meta(&format!("invite-{i}")),
            )
            .await
        }));
    }
    let (mut accepted, mut denied) = (BTreeSet::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(done) => {
                assert!(
                    accepted.insert(done.version),
                    "two commands got version {}",
                    done.version
                );
            }
            Err(CommandError::Denied(OrgError::SeatsExhausted { seats: 10 })) => denied += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    // The owner holds one seat: exactly nine invitations fit, at versions 2..=10.
    assert_eq!(accepted, (2..=10).collect::<BTreeSet<u64>>());
    assert_eq!(denied, 55);

    let loaded: Loaded<Organization> = replicas[1].store().load_fresh(&org, &id).await.unwrap();
    assert_eq!(loaded.version, 10, "no gap, no duplicate");
    assert_eq!(loaded.state.active_members(), 10);
    assert!(loaded.state.active_members() <= loaded.state.seats as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_command_returns_its_original_result_instead_of_a_denial() {
    let server = NatsServer::start().await.unwrap();
    let h = handler(&server).await;
    let (org, id) = (tok("acme"), tok("org"));
    let create = OrgCommand::Create {
        name: "Acme".into(),
        owner: tok("owner"),
        owner_email: "o@acme.test".into(),
        owner_name: "Olive".into(),
        seats: 3,
    };
    let first = h
        .execute::<Organization>(&org, &id, create.clone(), &meta("create"))
        .await
        .unwrap();
    // Deciding again would say "already exists"; a retry gets the original result.
    let retry = h
        .execute::<Organization>(&org, &id, create.clone(), &meta("create"))
        .await
        .unwrap();
    assert_eq!(first.version, retry.version);
    assert_eq!(
        first.appended.unwrap().position,
        retry.appended.unwrap().position
    );
    assert!(retry.appended.unwrap().duplicate);
    // A new command id with the same content is a new command, and is denied.
    let other = h
        .execute::<Organization>(&org, &id, create, &meta("create-again"))
        .await;
    assert!(matches!(
        other,
        Err(CommandError::Denied(OrgError::AlreadyExists))
    ));
    // A command that changes nothing stores nothing.
    let same = h
        .execute::<Organization>(
            &org,
            &id,
            OrgCommand::ChangeSeats {
                actor: tok("owner"),
                seats: 3,
            },
            &meta("noop"),
        )
        .await
        .unwrap();
    assert_eq!((same.appended, same.version), (None, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_deciding_the_same_week_at_once_store_exactly_one_decision() {
    use trackhrs_domain::timesheet::{
        Bookable, Entry, EntryKind, TaskRef, Timesheet, TimesheetCommand, TimesheetError, Week,
        WeekStatus,
    };
    let server = NatsServer::start().await.unwrap();
    let replicas = [handler(&server).await, handler(&server).await];
    let org = tok("acme");
    // Eight weeks, each submitted, then approved and rejected at once by two
    // managers on two replicas that both hold the submitted week.
    for n in 0..8i64 {
        let start_ms = 1_795_993_200_000 + n * 168 * 3_600_000;
        let week = Week {
            start_ms,
            end_ms: start_ms + 168 * 3_600_000,
        };
        let id = tok(&format!("erin-w{n}"));
        let setup = [
            TimesheetCommand::AddEntry {
                actor: tok("erin"),
                member: tok("erin"),
                week,
                id: tok("e1"),
                entry: Entry {
                    kind: EntryKind::Manual,
                    task: TaskRef {
                        project: tok("apollo"),
                        task: tok("design"),
                    },
                    start_ms: start_ms + 9 * 3_600_000,
                    end_ms: start_ms + 12 * 3_600_000,
                },
                project: Bookable {
                    active: true,
                    member_allowed: true,
                },
                note: None,
            },
            TimesheetCommand::Submit {
                actor: tok("erin"),
                member: tok("erin"),
                week,
            },
        ];
        for (step, command) in setup.into_iter().enumerate() {
            replicas[0]
                .execute::<Timesheet>(&org, &id, command, &meta(&format!("w{n}-{step}")))
                .await
                .unwrap();
        }
        for r in &replicas {
            r.store().load::<Timesheet>(&org, &id).await.unwrap();
        }
        let decisions = [
            TimesheetCommand::Approve {
                actor: tok("manny"),
                may_approve: true,
                comment: None,
            },
            TimesheetCommand::Reject {
                actor: tok("mona"),
                may_approve: true,
                comment: "Friday is missing".into(),
            },
        ];
        let mut tasks = Vec::new();
        for (i, decision) in decisions.into_iter().enumerate() {
            let (h, org, id) = (replicas[i].clone(), org.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                h.execute::<Timesheet>(&org, &id, decision, &meta(&format!("w{n}-decide-{i}")))
                    .await
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        assert_eq!(
            outcomes.iter().filter(|o| o.is_ok()).count(),
            1,
            "week {n}: {outcomes:?}"
        );
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Err(CommandError::Denied(TimesheetError::NotSubmitted)))),
            "week {n}: the other decision is refused as no longer submitted: {outcomes:?}"
        );
        // The log holds the entry, the submission and one decision.
        let loaded: Loaded<Timesheet> = replicas[1]
            .store()
            .load_fresh::<Timesheet>(&org, &id)
            .await
            .unwrap();
        assert_eq!(loaded.version, 3, "week {n}");
        let approved = outcomes[0].is_ok();
        let expected = if approved {
            WeekStatus::Approved
        } else {
            WeekStatus::Open
        };
        assert_eq!(loaded.state.status, expected, "week {n}");
    }
}
