//! Leave and payroll end to end over gRPC, against a real nats-server and
//! PostgreSQL: the golden month of March 2026 in Berlin (overtime across a
//! week that began in February, a rate change on the 16th, a day of paid
//! leave, a public holiday, the 23-hour Sunday of the clock change, two
//! members who join in the middle of the month), reviewed and finalized,
//! corrected by an adjustment in April; who sees which lines; bad input
//! refused with nothing stored; a rebuild of the read model equal to the
//! cent; racing approvals of leave; the accrual job on two replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{NaiveDate, TimeZone};
use tonic::Code;
use trackhrs_app::AppConfig;
use trackhrs_projections::{Runner, RunnerConfig, Waited, wait_for_position};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::pay::v1 as ppb;
use trackhrs_schemas::pay::v1::change_policy_request::Change;
use trackhrs_schemas::pay::v1::pay_client::PayClient;
use trackhrs_schemas::work::v1 as wpb;
use trackhrs_schemas::work::v1::work_client::WorkClient;
use trackhrs_testkit::*;

const H: i64 = 3_600_000;
const M: i64 = 60_000;

fn cmd(name: &str) -> String {
    format!("pay-{name}")
}

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// `date` at `hour`:`minute` in Berlin, in ms since the epoch.
fn berlin(date: &str, hour: u32, minute: u32) -> i64 {
    chrono_tz::Europe::Berlin
        .from_local_datetime(&d(date).and_hms_opt(hour, minute, 0).unwrap())
        .earliest()
        .unwrap()
        .timestamp_millis()
}

struct Org {
    p: Platform,
    owner: pb::Session,
    manny: pb::Session,
    hana: pb::Session,
    jo: pb::Session,
    sal: pb::Session,
    project: String,
    task: String,
}

impl Org {
    fn pay(&self) -> PayClient<tonic::transport::Channel> {
        PayClient::new(self.p.gw().channel.clone())
    }

    fn work(&self) -> WorkClient<tonic::transport::Channel> {
        WorkClient::new(self.p.gw().channel.clone())
    }

    async fn change(&self, tag: &str, change: Change) -> Result<wpb::Created, tonic::Status> {
        self.change_as(&self.owner, tag, change).await
    }

    async fn change_as(
        &self,
        who: &pb::Session,
        tag: &str,
        change: Change,
    ) -> Result<wpb::Created, tonic::Status> {
        self.pay()
            .change_policy(authed(
                &who.access_token,
                ppb::ChangePolicyRequest {
                    command_id: cmd(tag),
                    org_id: "acme".into(),
                    change: Some(change),
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// A manual entry of `who` from `start` for `ms`; returns its id.
    async fn entry(&self, who: &pb::Session, start: i64, ms: i64) -> String {
        self.work()
            .add_entry(authed(
                &who.access_token,
                wpb::AddEntryRequest {
                    command_id: cmd(&format!("entry-{}-{start}", who.person_id)),
                    org_id: "acme".into(),
                    kind: wpb::EntryKind::Manual as i32,
                    project_id: self.project.clone(),
                    task_id: self.task.clone(),
                    start_ms: start,
                    end_ms: start + ms,
                    note: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .id
    }

    async fn submit(&self, who: &pb::Session, week: &str) {
        self.work()
            .submit_week(authed(
                &who.access_token,
                wpb::SubmitWeekRequest {
                    command_id: cmd(&format!("submit-{}-{week}-{}", who.person_id, now())),
                    org_id: "acme".into(),
                    date: week.into(),
                },
            ))
            .await
            .unwrap();
    }

    async fn decide(
        &self,
        who: &pb::Session,
        week: &str,
        decision: wpb::decide_week_request::Decision,
    ) -> u64 {
        self.work()
            .decide_week(authed(
                &self.owner.access_token,
                wpb::DecideWeekRequest {
                    command_id: cmd(&format!("decide-{}-{week}-{}", who.person_id, now())),
                    org_id: "acme".into(),
                    person_id: who.person_id.clone(),
                    date: week.into(),
                    decision: Some(decision),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .position
    }

    async fn approve(&self, who: &pb::Session, week: &str) -> u64 {
        self.decide(
            who,
            week,
            wpb::decide_week_request::Decision::Approve(String::new()),
        )
        .await
    }

    async fn draft(&self, first: &str, min_position: u64) -> Result<u64, tonic::Status> {
        self.pay()
            .draft_run(authed(
                &self.owner.access_token,
                ppb::DraftRunRequest {
                    command_id: cmd(&format!("draft-{first}-{}", now())),
                    org_id: "acme".into(),
                    first_day: first.into(),
                    min_position,
                },
            ))
            .await
            .map(|r| r.into_inner().position)
    }

    async fn finalize(&self, first: &str, draft: u32) -> Result<u64, tonic::Status> {
        self.pay()
            .finalize_run(authed(
                &self.owner.access_token,
                ppb::FinalizeRunRequest {
                    command_id: cmd(&format!("finalize-{first}-{draft}-{}", now())),
                    org_id: "acme".into(),
                    first_day: first.into(),
                    draft,
                },
            ))
            .await
            .map(|r| r.into_inner().position)
    }

    async fn run(
        &self,
        who: &pb::Session,
        first: &str,
        min: u64,
    ) -> Result<ppb::RunView, tonic::Status> {
        self.pay()
            .get_run(authed(
                &who.access_token,
                ppb::GetRunRequest {
                    org_id: "acme".into(),
                    first_day: first.into(),
                    min_position: min,
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }
}

fn now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn rate(person: &str, from: &str, salaried: bool, amount: &str) -> Change {
    Change::Rate(ppb::Rate {
        person_id: person.into(),
        from: from.into(),
        salaried,
        amount: amount.into(),
        amount_minor: 0,
        ended: false,
    })
}

fn threshold(hours: i64, percent: u32) -> Option<ppb::Threshold> {
    Some(ppb::Threshold {
        after_ms: hours * H,
        percent,
    })
}

/// acme in Berlin, Monday to Friday: olive (owner), manny (manager), hana,
/// jo and sal (employees); a project with a task to book on; EUR, monthly
/// pay periods from 2026, overtime 8 h a day at 1.5x, 12 h at 2x, 40 h a
/// week at 1.5x; 19 March a public holiday; a paid leave type without a
/// balance (`Special`).
async fn org(config: AppConfig, replicas: usize) -> (Org, String) {
    let p = Platform::start_with(config, replicas).await;
    let owner = p.sign_up("acme", 10).await;
    let manny = p.member(&owner, "manny", pb::Role::Manager).await;
    let hana = p.member(&owner, "hana", pb::Role::Employee).await;
    let jo = p.member(&owner, "jo", pb::Role::Employee).await;
    let sal = p.member(&owner, "sal", pb::Role::Employee).await;
    p.gw()
        .orgs()
        .change_settings(authed(
            &owner.access_token,
            pb::ChangeSettingsRequest {
                command_id: cmd("berlin"),
                org_id: "acme".into(),
                settings: Some(pb::Settings {
                    timezone: "Europe/Berlin".into(),
                    work_week: (1..=5).collect(),
                    capture_titles: true,
                    capture_urls: true,
                }),
            },
        ))
        .await
        .unwrap();
    let mut w = WorkClient::new(p.gw().channel.clone());
    let project = w
        .create_project(authed(
            &owner.access_token,
            wpb::CreateProjectRequest {
                command_id: cmd("project"),
                org_id: "acme".into(),
                name: "Operations".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let task = w
        .add_task(authed(
            &owner.access_token,
            wpb::AddTaskRequest {
                command_id: cmd("task"),
                org_id: "acme".into(),
                project_id: project.clone(),
                name: "Shift".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let o = Org {
        p,
        owner,
        manny,
        hana,
        jo,
        sal,
        project,
        task,
    };
    o.change("currency", Change::Currency("EUR".into()))
        .await
        .unwrap();
    o.change(
        "schedule",
        Change::Schedule(ppb::Schedule {
            from: "2026-01-01".into(),
            kind: ppb::PeriodKind::Monthly as i32,
        }),
    )
    .await
    .unwrap();
    o.change(
        "overtime",
        Change::Overtime(ppb::Overtime {
            daily: threshold(8, 150),
            daily_double: threshold(12, 200),
            weekly: threshold(40, 150),
        }),
    )
    .await
    .unwrap();
    o.change(
        "holiday",
        Change::Holiday(ppb::Holiday {
            date: "2026-03-19".into(),
            name: "Founders' Day".into(),
        }),
    )
    .await
    .unwrap();
    let special = o
        .change(
            "special",
            Change::LeaveType(ppb::LeaveType {
                name: "Special".into(),
                paid: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .id;
    (o, special)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_golden_month_is_paid_to_the_cent_finalized_and_corrected_in_the_next_run() {
    let (o, special) = org(AppConfig::default(), 1).await;
    for (tag, person, from, salaried, amount) in [
        ("hana-1", &o.hana, "2026-01-01", false, "20.00"),
        ("hana-2", &o.hana, "2026-03-16", false, "22"),
        ("jo", &o.jo, "2026-03-18", false, "17.35"),
        ("sal", &o.sal, "2026-03-11", true, "3100.00"),
    ] {
        o.change(tag, rate(&person.person_id, from, salaried, amount))
            .await
            .unwrap();
    }

    // Hana: 40 h in the week of 23 February, 4 h on Sunday 1 March, 10 h on
    // 2 March, 8 h on the other work days but 13 March (leave) and 19 March
    // (holiday), and 00:00-06:00 on Sunday 29 March (5 hours: the clocks
    // go forward).
    let mut hana_days: Vec<(&str, i64)> = vec![
        ("2026-02-23", 8 * H),
        ("2026-02-24", 8 * H),
        ("2026-02-25", 8 * H),
        ("2026-02-26", 8 * H),
        ("2026-02-27", 8 * H),
        ("2026-03-01", 4 * H),
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
        "2026-03-16",
        "2026-03-17",
        "2026-03-18",
        "2026-03-20",
        "2026-03-23",
        "2026-03-24",
        "2026-03-25",
        "2026-03-26",
        "2026-03-27",
        "2026-03-30",
        "2026-03-31",
    ] {
        hana_days.push((day, 8 * H));
    }
    let mut entries = BTreeMap::new();
    for (day, ms) in &hana_days {
        entries.insert(*day, o.entry(&o.hana, berlin(day, 9, 0), *ms).await);
    }
    let night = berlin("2026-03-29", 0, 0);
    assert_eq!(berlin("2026-03-29", 6, 0) - night, 5 * H, "the 23-hour day");
    o.entry(&o.hana, night, 5 * H).await;
    let mut jo_days = vec![("2026-03-18", 7 * H + 20 * M), ("2026-03-20", 8 * H)];
    for day in [
        "2026-03-23",
        "2026-03-24",
        "2026-03-25",
        "2026-03-26",
        "2026-03-27",
    ] {
        jo_days.push((day, 8 * H));
    }
    jo_days.push(("2026-03-30", 9 * H));
    jo_days.push(("2026-03-31", 9 * H));
    for (day, ms) in &jo_days {
        o.entry(&o.jo, berlin(day, 9, 0), *ms).await;
    }
    // Sal's hours are in his salary.
    o.entry(&o.sal, berlin("2026-03-11", 8, 0), 9 * H).await;

    // Hana's day of special leave, approved by the owner.
    let leave = o
        .pay()
        .request_leave(authed(
            &o.hana.access_token,
            ppb::RequestLeaveRequest {
                command_id: cmd("hana-leave"),
                org_id: "acme".into(),
                leave_type_id: special.clone(),
                from: "2026-03-13".into(),
                to: "2026-03-13".into(),
                day_ms: 0,
                note: "family".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    // Auditors read; they request nothing.
    let audrey = o.p.member(&o.owner, "audrey", pb::Role::Auditor).await;
    let refused = o
        .pay()
        .request_leave(authed(
            &audrey.access_token,
            ppb::RequestLeaveRequest {
                command_id: cmd("audrey-leave"),
                org_id: "acme".into(),
                leave_type_id: special.clone(),
                from: "2026-03-16".into(),
                to: "2026-03-16".into(),
                day_ms: 0,
                note: String::new(),
            },
        ))
        .await;
    assert_code(refused, Code::PermissionDenied, "an auditor requests leave");
    // Another employee learns nothing of it, existing or not.
    let nosy = |request: &str| {
        let mut client = o.pay();
        let request = authed(
            &o.jo.access_token,
            ppb::DecideLeaveRequest {
                command_id: cmd(&format!("nosy-{request}")),
                org_id: "acme".into(),
                person_id: o.hana.person_id.clone(),
                request_id: request.into(),
                approve: true,
                comment: String::new(),
            },
        );
        async move { client.decide_leave(request).await.unwrap_err() }
    };
    let (real, made_up) = (nosy(&leave).await, nosy("lv_made_up").await);
    assert_eq!(real.code(), Code::PermissionDenied);
    assert_eq!(
        (real.code(), real.message()),
        (made_up.code(), made_up.message())
    );
    o.pay()
        .decide_leave(authed(
            &o.owner.access_token,
            ppb::DecideLeaveRequest {
                command_id: cmd("hana-leave-ok"),
                org_id: "acme".into(),
                person_id: o.hana.person_id.clone(),
                request_id: leave,
                approve: true,
                comment: String::new(),
            },
        ))
        .await
        .unwrap();

    // Every week approved but Hana's last.
    let hana_weeks = [
        "2026-02-23",
        "2026-03-02",
        "2026-03-09",
        "2026-03-16",
        "2026-03-23",
        "2026-03-30",
    ];
    let mut position = 0;
    for week in hana_weeks {
        o.submit(&o.hana, week).await;
        if week != "2026-03-30" {
            position = o.approve(&o.hana, week).await;
        }
    }
    for week in ["2026-03-16", "2026-03-23", "2026-03-30"] {
        o.submit(&o.jo, week).await;
        position = o.approve(&o.jo, week).await;
    }

    // The draft names what is missing; finalizing is refused, saying so.
    let drafted = o.draft("2026-03-01", position).await.unwrap();
    let draft = o.run(&o.owner, "2026-03-01", drafted).await.unwrap();
    let run = draft.run.unwrap();
    assert_eq!(run.status, "draft");
    assert_eq!(
        run.missing,
        [ppb::Missing {
            person_id: o.hana.person_id.clone(),
            what: "week".into(),
            day: "2026-03-30".into(),
        }]
    );
    let refused = assert_code(
        o.finalize("2026-03-01", 1).await,
        Code::FailedPrecondition,
        "finalize with a week missing",
    );
    assert!(
        refused.message().contains("the week of 2026-03-30"),
        "{}",
        refused.message()
    );

    let approved = o.approve(&o.hana, "2026-03-30").await;
    let drafted = o.draft("2026-03-01", approved).await.unwrap();
    let view = o.run(&o.owner, "2026-03-01", drafted).await.unwrap();
    let run = view.run.clone().unwrap();
    assert_eq!((run.draft, run.missing.len()), (2, 0));
    assert_eq!((view.currency.as_str(), view.minor_digits), ("EUR", 2));
    let lines_of = |person: &str| -> Vec<(String, i64, i64, i64, u32, i64)> {
        view.lines
            .iter()
            .filter(|l| l.person_id == person)
            .map(|l| {
                (
                    l.kind.clone(),
                    l.ms,
                    l.days,
                    l.rate_minor,
                    l.percent,
                    l.amount_minor,
                )
            })
            .collect()
    };
    let line = |kind: &str, ms: i64, days: i64, rate: i64, percent: u32, amount: i64| {
        (kind.to_owned(), ms, days, rate, percent, amount)
    };
    // Hana: 1,440.00 + 1,936.00 regular, 180.00 + 165.00 overtime, 160.00
    // leave, 176.00 holiday = 4,057.00.
    assert_eq!(
        lines_of(&o.hana.person_id),
        [
            line("regular", 72 * H, 0, 2_000, 100, 144_000),
            line("regular", 88 * H, 0, 2_200, 100, 193_600),
            line("overtime", 6 * H, 0, 2_000, 150, 18_000),
            line("overtime", 5 * H, 0, 2_200, 150, 16_500),
            line("leave", 8 * H, 0, 2_000, 100, 16_000),
            line("holiday", 8 * H, 0, 2_200, 100, 17_600),
        ]
    );
    // Jo: 71 h 20 min at 17.35 = 1,237.63; 2 h overtime = 52.05; the
    // holiday = 138.80: 1,428.48.
    assert_eq!(
        lines_of(&o.jo.person_id),
        [
            line("regular", 71 * H + 20 * M, 0, 1_735, 100, 123_763),
            line("overtime", 2 * H, 0, 1_735, 150, 5_205),
            line("holiday", 8 * H, 0, 1_735, 100, 13_880),
        ]
    );
    // Sal: 3,100.00 x 21 / 31 = 2,100.00.
    assert_eq!(
        lines_of(&o.sal.person_id),
        [line("salary", 0, 21, 310_000, 100, 210_000)]
    );
    assert_eq!(run.total_minor, 405_700 + 142_848 + 210_000);
    assert_eq!(run.members, 3);

    // Finalizing the reviewed draft only; then it never changes.
    assert_code(
        o.finalize("2026-03-01", 1).await,
        Code::FailedPrecondition,
        "finalize an older draft",
    );
    let finalized = o.finalize("2026-03-01", 2).await.unwrap();
    assert_code(
        o.draft("2026-03-01", 0).await,
        Code::FailedPrecondition,
        "draft a finalized run",
    );
    let locked = o.run(&o.owner, "2026-03-01", finalized).await.unwrap();
    assert_eq!(locked.run.as_ref().unwrap().status, "finalized");
    assert_eq!(locked.lines, view.lines);

    // Who sees what: Jo his own lines only; Manny (a manager, the org does
    // not share pay with managers) nothing of the others; an employee runs
    // no payroll.
    let jo_view = o.run(&o.jo, "2026-03-01", 0).await.unwrap();
    assert!(jo_view.lines.iter().all(|l| l.person_id == o.jo.person_id));
    assert_eq!(jo_view.run.unwrap().total_minor, 142_848);
    let manny_view = o.run(&o.manny, "2026-03-01", 0).await.unwrap();
    assert!(manny_view.lines.is_empty());
    let jo_policy = o
        .pay()
        .get_policy(authed(
            &o.jo.access_token,
            ppb::GetPolicyRequest {
                org_id: "acme".into(),
                min_position: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        jo_policy
            .rates
            .iter()
            .all(|r| r.person_id == o.jo.person_id)
    );
    assert_eq!(jo_policy.rates.len(), 1);
    assert_eq!(jo_policy.rates[0].amount, "17.35");
    let refused = o
        .pay()
        .draft_run(authed(
            &o.jo.access_token,
            ppb::DraftRunRequest {
                command_id: cmd("jo-drafts"),
                org_id: "acme".into(),
                first_day: "2026-04-01".into(),
                min_position: 0,
            },
        ))
        .await;
    assert_code(refused, Code::PermissionDenied, "an employee drafts");

    // The CSV of the finalized run: a line per line, amounts that add up.
    let mut stream = o
        .pay()
        .export_run(authed(
            &o.owner.access_token,
            ppb::GetRunRequest {
                org_id: "acme".into(),
                first_day: "2026-03-01".into(),
                min_position: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut csv = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        csv.extend(chunk.data);
    }
    let csv = String::from_utf8(csv).unwrap();
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some(
            "period_first,period_last,person_id,kind,leave_type,corrects,hours,days,rate,percent,amount,currency"
        )
    );
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split(',').collect()).collect();
    assert_eq!(rows.len(), view.lines.len());
    let cents: i64 = rows
        .iter()
        .map(|r| r[10].replace('.', "").parse::<i64>().unwrap())
        .sum();
    assert_eq!(cents, 758_548);
    assert!(
        rows.iter()
            .any(|r| r[3] == "regular" && r[6] == "71.33" && r[8] == "17.35" && r[10] == "1237.63")
    );

    // A correction: Hana's last week reopened, 31 March was 10 hours. April
    // pays March's difference, 2 h overtime at 22.00 x 1.5 = 66.00.
    let reopened = o
        .decide(
            &o.hana,
            "2026-03-30",
            wpb::decide_week_request::Decision::Reopen("31 March was longer".into()),
        )
        .await;
    o.work()
        .remove_entry(authed(
            &o.hana.access_token,
            wpb::RemoveEntryRequest {
                command_id: cmd("remove-31"),
                org_id: "acme".into(),
                date: "2026-03-31".into(),
                entry_id: entries["2026-03-31"].clone(),
            },
        ))
        .await
        .unwrap();
    let changed = o.entry(&o.hana, berlin("2026-03-31", 8, 0), 10 * H).await;
    assert!(!changed.is_empty());
    // While her corrected week waits for approval, April lists it and
    // adjusts nothing for March.
    let waiting = o.draft("2026-04-01", reopened).await.unwrap();
    let waiting = o.run(&o.owner, "2026-04-01", waiting).await.unwrap();
    assert!(
        waiting.run.unwrap().missing.contains(&ppb::Missing {
            person_id: o.hana.person_id.clone(),
            what: "week".into(),
            day: "2026-03-30".into(),
        }),
        "the reopened week of a finalized run is listed"
    );
    assert!(waiting.lines.iter().all(|l| l.kind != "adjustment"));
    o.submit(&o.hana, "2026-03-30").await;
    let approved = o.approve(&o.hana, "2026-03-30").await;
    let april = o.draft("2026-04-01", approved).await.unwrap();
    let april = o.run(&o.owner, "2026-04-01", april).await.unwrap();
    let adjustments: Vec<_> = april
        .lines
        .iter()
        .filter(|l| l.kind == "adjustment")
        .map(|l| (l.person_id.as_str(), l.corrects.as_str(), l.amount_minor))
        .collect();
    assert_eq!(
        adjustments,
        [(o.hana.person_id.as_str(), "2026-03-01", 6_600)]
    );
    // March itself is unchanged.
    assert_eq!(
        o.run(&o.owner, "2026-03-01", 0).await.unwrap().lines,
        view.lines
    );

    // Bad input: refused with a clear message, nothing stored.
    let before = o.p.last_sequence().await;
    let fraction = assert_code(
        o.change(
            "fraction",
            rate(&o.jo.person_id, "2026-05-01", false, "17.355"),
        )
        .await,
        Code::InvalidArgument,
        "a fraction of a cent",
    );
    assert!(
        fraction.message().contains("fraction of a minor unit"),
        "{}",
        fraction.message()
    );
    let overlap = assert_code(
        o.change(
            "overlap",
            Change::Schedule(ppb::Schedule {
                from: "2026-03-16".into(),
                kind: ppb::PeriodKind::SemiMonthly as i32,
            }),
        )
        .await,
        Code::FailedPrecondition,
        "pay periods over a finalized run",
    );
    assert!(
        overlap.message().contains("2026-03-01..2026-03-31"),
        "{}",
        overlap.message()
    );
    let negative = o
        .pay()
        .request_leave(authed(
            &o.jo.access_token,
            ppb::RequestLeaveRequest {
                command_id: cmd("negative"),
                org_id: "acme".into(),
                leave_type_id: special.clone(),
                from: "2026-05-05".into(),
                to: "2026-05-04".into(),
                day_ms: 0,
                note: String::new(),
            },
        ))
        .await;
    let negative = assert_code(negative, Code::InvalidArgument, "leave of negative length");
    assert!(negative.message().contains("negative length"));
    let not_ended = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .date_naive()
        .format("%Y-%m-01")
        .to_string();
    let open = assert_code(
        o.draft(&not_ended, 0).await,
        Code::FailedPrecondition,
        "a period that has not ended",
    );
    assert!(
        open.message().contains("has not ended"),
        "{}",
        open.message()
    );
    assert_code(
        o.draft("2026-03-02", 0).await,
        Code::InvalidArgument,
        "not a period's first day",
    );
    assert_eq!(o.p.last_sequence().await, before, "nothing stored");

    // A rebuild of the pay read model from the log: the same runs, lines
    // and totals, to the cent.
    let last = o.p.last_sequence().await;
    let pg = o.p.db.connect().await.unwrap();
    let live = wait_for_position(&pg, "pay", last, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(live, Waited::Reached(_)), "{live:?}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let rebuild = tokio::spawn(
        Runner::new(
            trackhrs_projections::pay::Pay::new(2),
            o.p.store.clone(),
            o.p.db.connection_string().parse().unwrap(),
            RunnerConfig {
                batch_max: 3,
                batch_wait: Duration::from_millis(20),
                ..RunnerConfig::default()
            },
        )
        .run(async {
            let _ = stopped.await;
        }),
    );
    let caught_up = trackhrs_harness::wait_until(Duration::from_secs(60), || async {
        let row = pg
            .query_opt(
                "SELECT position FROM trackhrs_catalog.projection_versions WHERE name = 'pay' AND version = 2",
                &[],
            )
            .await
            .ok()??;
        (row.get::<_, i64>(0) as u64 >= last).then_some(())
    })
    .await;
    let _ = stop.send(());
    rebuild.await.unwrap().unwrap();
    assert!(caught_up.is_some(), "the rebuild did not catch up");
    let rows = |schema: &'static str| {
        let pg = &pg;
        async move {
            let mut out = Vec::new();
            for table in ["runs", "lines", "requests", "leave_days", "policy"] {
                for row in pg
                    .query(
                        &format!("SELECT to_jsonb(t)::text FROM {schema}.{table} t ORDER BY 1"),
                        &[],
                    )
                    .await
                    .unwrap()
                {
                    out.push(format!("{table} {}", row.get::<_, String>(0)));
                }
            }
            out
        }
    };
    let (live, rebuilt) = (rows("proj_pay_v1").await, rows("proj_pay_v2").await);
    assert!(live.iter().any(|r| r.contains("adjustment")));
    assert_eq!(live, rebuilt);
}

fn tok(s: &str) -> trackhrs_domain::Token {
    trackhrs_domain::Token::new(s).unwrap()
}

/// A leave type that accrues 8 hours on the first day of every month
/// after `since`, with a carry-over cap; returns its id.
async fn accruing(o: &Org, tag: &str, since: &str, cap_ms: Option<i64>) -> String {
    o.change(
        tag,
        Change::LeaveType(ppb::LeaveType {
            name: tag.into(),
            paid: true,
            accrual: Some(ppb::Accrual {
                every: ppb::AccrualEvery::Month as i32,
                ms: 8 * H,
            }),
            carry_over_cap_ms: cap_ms,
            negative_allowance_ms: 0,
            since: since.into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvals_at_once_that_together_exceed_the_balance_approve_exactly_one() {
    let (o, _) = org(AppConfig::default(), 2).await;
    let ada = o.p.member(&o.owner, "ada", pb::Role::Admin).await;
    let vacation = accruing(&o, "vacation", "2099-01-01", None).await;
    let handler = trackhrs_commands::CommandHandler::new(o.p.store.clone());
    let people = [&o.hana, &o.jo, &o.sal];
    let mut requests = Vec::new();
    for (i, person) in people.iter().enumerate() {
        // 16 h accrued: two days and one day requested, 24 h together.
        handler
            .execute::<trackhrs_domain::leave::Leave>(
                &tok("acme"),
                &tok(&person.person_id),
                trackhrs_domain::leave::LeaveCommand::Accrue {
                    member: tok(&person.person_id),
                    leave_type: tok(&vacation),
                    boundary: d("2099-02-01"),
                    ms: 16 * H,
                },
                &trackhrs_nats::CommitMeta::new(format!("accrue-{i}"), "test", 0),
            )
            .await
            .unwrap();
        let mut ids = Vec::new();
        for (tag, from, to) in [
            ("a", "2099-03-02", "2099-03-03"),
            ("b", "2099-03-04", "2099-03-04"),
        ] {
            ids.push(
                o.pay()
                    .request_leave(authed(
                        &person.access_token,
                        ppb::RequestLeaveRequest {
                            command_id: cmd(&format!("race-{i}-{tag}")),
                            org_id: "acme".into(),
                            leave_type_id: vacation.clone(),
                            from: from.into(),
                            to: to.into(),
                            day_ms: 0,
                            note: String::new(),
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .id,
            );
        }
        requests.push((person.person_id.clone(), ids));
    }
    let decide = |replica: usize, who: &pb::Session, person: &str, id: &str, tag: String| {
        let mut client = PayClient::new(o.p.replicas[replica].channel.clone());
        let request = authed(
            &who.access_token,
            ppb::DecideLeaveRequest {
                command_id: cmd(&tag),
                org_id: "acme".into(),
                person_id: person.into(),
                request_id: id.into(),
                approve: true,
                comment: String::new(),
            },
        );
        async move { client.decide_leave(request).await }
    };
    for (person, ids) in &requests {
        let (first, second) = tokio::join!(
            decide(0, &o.owner, person, &ids[0], format!("olive-{person}")),
            decide(1, &ada, person, &ids[1], format!("ada-{person}")),
        );
        let outcomes = [first, second];
        let approved = outcomes.iter().filter(|r| r.is_ok()).count();
        assert_eq!(approved, 1, "{person}: {outcomes:?}");
        let refused = outcomes.into_iter().find_map(Result::err).unwrap();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(
            refused.message().contains("balance"),
            "{}",
            refused.message()
        );
        let leave =
            o.p.store
                .load_fresh::<trackhrs_domain::leave::Leave>(&tok("acme"), &tok(person))
                .await
                .unwrap();
        assert!(leave.state.balance(&tok(&vacation)) >= 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accrual_job_on_two_replicas_accrues_each_boundary_once() {
    let config = AppConfig {
        accrual_every: Duration::from_millis(100),
        ..AppConfig::default()
    };
    let store = trackhrs_nats::StoreConfig {
        lease_ttl: Duration::from_secs(2),
        ..trackhrs_nats::StoreConfig::default()
    };
    let p = Platform::start_full(config, 2, store).await;
    let owner = p.sign_up("acme", 10).await;
    let hana = p.member(&owner, "hana", pb::Role::Employee).await;
    let jo = p.member(&owner, "jo", pb::Role::Employee).await;
    let o = Org {
        p,
        owner: owner.clone(),
        manny: owner.clone(),
        hana,
        jo: jo.clone(),
        sal: jo,
        project: String::new(),
        task: String::new(),
    };
    o.change("currency", Change::Currency("EUR".into()))
        .await
        .unwrap();
    // Hana started in 2025, Jo on 10 September 2026.
    o.change("hana", rate(&o.hana.person_id, "2025-01-01", false, "20"))
        .await
        .unwrap();
    o.change("jo", rate(&o.jo.person_id, "2026-09-10", false, "20"))
        .await
        .unwrap();
    let vacation = accruing(&o, "vacation", "2025-11-15", Some(4 * H)).await;
    let today = chrono::Utc::now().date_naive();
    let months = |from: &str| -> Vec<NaiveDate> {
        d("2025-11-16")
            .iter_days()
            .take_while(|day| *day <= today)
            .filter(|day| chrono::Datelike::day(day) == 1 && *day >= d(from))
            .collect()
    };
    let (hana_months, jo_months) = (months("2025-01-01"), months("2026-09-10"));
    // A carry-over each new year after Hana's start; none for Jo.
    let hana_years = (2026..=chrono::Datelike::year(&today)).count();
    let expected = [
        (&o.hana, hana_months.len() + hana_years),
        (&o.jo, jo_months.len()),
    ];
    let versions = || async {
        let mut out = Vec::new();
        for (person, _) in &expected {
            out.push(
                o.p.store
                    .load_fresh::<trackhrs_domain::leave::Leave>(
                        &tok("acme"),
                        &tok(&person.person_id),
                    )
                    .await
                    .unwrap()
                    .version as usize,
            );
        }
        out
    };
    let wanted: Vec<usize> = expected.iter().map(|(_, n)| *n).collect();
    let done = trackhrs_harness::wait_until(Duration::from_secs(60), || async {
        (versions().await == wanted).then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "accrued {:?}, wanted {wanted:?}",
        versions().await
    );
    // Both replicas keep running the job: nothing is recorded twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(versions().await, wanted);
    let hana =
        o.p.store
            .load_fresh::<trackhrs_domain::leave::Leave>(&tok("acme"), &tok(&o.hana.person_id))
            .await
            .unwrap();
    // 2025-12-01 accrued 8 h; 2026 carries 4 h of it.
    assert_eq!(hana.state.forfeits[&tok(&vacation)][&2026], 4 * H);
    assert_eq!(
        hana.state.accruals[&tok(&vacation)]
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        hana_months
    );
}
