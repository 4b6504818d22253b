//! Work end to end, against a real nats-server and PostgreSQL: teams and
//! their managers, clients, projects, attribution rules, observed activity
//! attributed to projects, a member's entries, submitting, approving and
//! reopening a week, time that arrives after the approval, time the employee
//! withdrew, the time a rules change moves, the CSV export, and bad input
//! that stores nothing.

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use tonic::Code;
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::{Span, UploadBatchRequest};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::work::v1 as wpb;
use trackhrs_schemas::work::v1::work_client::WorkClient;
use trackhrs_testkit::*;

const H: i64 = 3_600_000;

/// The Monday of last week (UTC, the org's default zone), and its 00:00 in ms.
fn last_monday() -> (NaiveDate, i64) {
    let today = Utc::now().date_naive();
    let monday = today - Duration::days(today.weekday().num_days_from_monday() as i64 + 7);
    let ms = Utc
        .from_utc_datetime(&monday.and_hms_opt(0, 0, 0).unwrap())
        .timestamp_millis();
    (monday, ms)
}

fn span(start: i64, hours: i64, app: &str) -> Span {
    Span {
        start_unix_ms: start,
        end_unix_ms: start + hours * H,
        app: app.into(),
        title: format!("{app} window"),
        url: None,
        active: true,
    }
}

fn cmd(name: &str) -> String {
    format!("work-{name}")
}

struct Org {
    p: Platform,
    owner: pb::Session,
    manny: pb::Session,
    erin: pb::Session,
    ed: pb::Session,
    ada: pb::Session,
    website: String,
    build: String,
    ops: String,
    support: String,
}

impl Org {
    fn work(&self) -> WorkClient<tonic::transport::Channel> {
        WorkClient::new(self.p.gw().channel.clone())
    }
}

/// acme: olive (owner), manny (manager of team Core, with erin in it), erin
/// and ed (employees, ed in no team), ada (auditor); client Globex with the
/// billable project Website (budget 10 h, task Build), project Ops (task
/// Support); one rule: "code" activity is Website/Build.
async fn org() -> Org {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 10).await;
    let manny = p.member(&owner, "manny", pb::Role::Manager).await;
    let erin = p.member(&owner, "erin", pb::Role::Employee).await;
    let ed = p.member(&owner, "ed", pb::Role::Employee).await;
    let ada = p.member(&owner, "ada", pb::Role::Auditor).await;
    let mut w = WorkClient::new(p.gw().channel.clone());
    let t = |s: &pb::Session| s.access_token.clone();
    let team = w
        .create_team(authed(
            &t(&owner),
            wpb::CreateTeamRequest {
                command_id: cmd("team"),
                org_id: "acme".into(),
                name: "Core".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    w.set_team_managers(authed(
        &t(&owner),
        wpb::SetTeamManagersRequest {
            command_id: cmd("managers"),
            org_id: "acme".into(),
            team_id: team.clone(),
            managers: vec![manny.person_id.clone()],
        },
    ))
    .await
    .unwrap();
    w.set_member_team(authed(
        &t(&owner),
        wpb::SetMemberTeamRequest {
            command_id: cmd("erin-team"),
            org_id: "acme".into(),
            person_id: erin.person_id.clone(),
            team_id: team,
        },
    ))
    .await
    .unwrap();
    let client = w
        .create_client(authed(
            &t(&manny),
            wpb::CreateClientRequest {
                command_id: cmd("client"),
                org_id: "acme".into(),
                name: "Globex".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let project = |command: &str, name: &str, client: &str, billable: bool, hours: u32| {
        // 100.00 an hour for a project with a budget.
        let rate_minor = if hours > 0 { 10_000 } else { 0 };
        wpb::CreateProjectRequest {
            command_id: cmd(command),
            org_id: "acme".into(),
            name: name.into(),
            client_id: client.into(),
            billable,
            budget: Some(wpb::Budget {
                hours,
                money_minor: 0,
                rate_minor,
            }),
            members: vec![],
        }
    };
    let website = w
        .create_project(authed(
            &t(&manny),
            project("website", "Website", &client, true, 10),
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let ops = w
        .create_project(authed(&t(&owner), project("ops", "Ops", "", false, 0)))
        .await
        .unwrap()
        .into_inner()
        .id;
    let task = |command: &str, project: &str, name: &str| wpb::AddTaskRequest {
        command_id: cmd(command),
        org_id: "acme".into(),
        project_id: project.into(),
        name: name.into(),
    };
    let build = w
        .add_task(authed(&t(&manny), task("build", &website, "Build")))
        .await
        .unwrap()
        .into_inner()
        .id;
    let support = w
        .add_task(authed(&t(&owner), task("support", &ops, "Support")))
        .await
        .unwrap()
        .into_inner()
        .id;
    w.set_attribution_rules(authed(
        &t(&owner),
        wpb::SetAttributionRulesRequest {
            command_id: cmd("rules-1"),
            org_id: "acme".into(),
            rules: vec![wpb::AttributionRule {
                project_id: website.clone(),
                task_id: build.clone(),
                regex: "^code$".into(),
                ignore_case: true,
            }],
        },
    ))
    .await
    .unwrap();
    Org {
        p,
        owner,
        manny,
        erin,
        ed,
        ada,
        website,
        build,
        ops,
        support,
    }
}

async fn upload(o: &Org, device_token: &str, seq: u64, spans: Vec<Span>) -> u64 {
    AgentIngestClient::new(o.p.gw().channel.clone())
        .upload_batch(authed(
            device_token,
            UploadBatchRequest {
                batch_id: format!("batch-{seq}"),
                device_batch_seq: seq,
                spans,
                retractions: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .stream_sequence
}

async fn week(o: &Org, token: &str, person: &str, date: NaiveDate, min: u64) -> wpb::WeekView {
    o.work()
        .get_week(authed(
            token,
            wpb::GetWeekRequest {
                org_id: "acme".into(),
                person_id: person.into(),
                date: date.to_string(),
                min_position: min,
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

/// The whole text of a streamed CSV answer.
async fn read_csv(stream: &mut tonic::Streaming<wpb::CsvChunk>) -> String {
    let mut csv = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        csv.extend(chunk.data);
    }
    String::from_utf8(csv).unwrap()
}

fn time_of(view: &wpb::WeekView, project: &str, source: &str) -> i64 {
    view.time
        .iter()
        .filter(|t| t.project_id == project && t.source == source)
        .map(|t| t.ms)
        .sum()
}

async fn project_time(o: &Org, token: &str, from: NaiveDate, min: u64) -> Vec<wpb::ProjectTimeRow> {
    o.work()
        .get_project_time(authed(
            token,
            wpb::GetProjectTimeRequest {
                org_id: "acme".into(),
                from: from.to_string(),
                to: (from + Duration::days(6)).to_string(),
                min_position: min,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .rows
}

fn add_entry(
    kind: wpb::EntryKind,
    project: &str,
    task: &str,
    start: i64,
    end: i64,
    tag: &str,
) -> wpb::AddEntryRequest {
    wpb::AddEntryRequest {
        command_id: cmd(tag),
        org_id: "acme".into(),
        kind: kind as i32,
        project_id: project.into(),
        task_id: task.into(),
        start_ms: start,
        end_ms: end,
        note: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_from_activity_to_approval_and_what_arrives_after_it() {
    let o = org().await;
    let (monday, at) = last_monday();
    let device = o.p.enroll(&o.erin, "laptop").await;
    // Monday 09-11 coding (Website/Build by the rule), 11-12 Slack
    // (unattributed).
    let uploaded = upload(
        &o,
        &device.device_token,
        1,
        vec![span(at + 9 * H, 2, "code"), span(at + 11 * H, 1, "slack")],
    )
    .await;
    let erin = o.erin.access_token.clone();
    let view = week(&o, &erin, "", monday, uploaded).await;
    assert_eq!(time_of(&view, &o.website, "rule"), 2 * H);
    assert_eq!(time_of(&view, "", "rule"), H, "Slack is unattributed");
    assert_eq!(view.week.as_ref().unwrap().status, "open");
    assert_eq!(view.stretches.len(), 1, "{:?}", view.stretches);

    // Erin assigns the Slack hour to Ops/Support and adds a manual hour on
    // Tuesday.
    let mut w = o.work();
    w.add_entry(authed(
        &erin,
        add_entry(
            wpb::EntryKind::Assignment,
            &o.ops,
            &o.support,
            at + 11 * H,
            at + 12 * H,
            "assign",
        ),
    ))
    .await
    .unwrap();
    let manual = w
        .add_entry(authed(
            &erin,
            add_entry(
                wpb::EntryKind::Manual,
                &o.ops,
                &o.support,
                at + 33 * H,
                at + 34 * H,
                "meeting",
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    let view = week(&o, &erin, "", monday, manual.result.unwrap().position).await;
    assert_eq!(time_of(&view, &o.ops, "assigned"), H);
    assert_eq!(time_of(&view, &o.ops, "manual"), H);
    assert_eq!(time_of(&view, "", "rule"), 0);
    assert_eq!(view.week.as_ref().unwrap().total_ms, 4 * H);
    assert_eq!(view.entries.len(), 2);

    // Project time: per project, task, member and day, billable or not.
    let rows = project_time(&o, &o.owner.access_token, monday, 0).await;
    let website: Vec<_> = rows.iter().filter(|r| r.project_id == o.website).collect();
    assert_eq!(website.len(), 1);
    assert_eq!(
        (
            website[0].task_id.as_str(),
            website[0].day.as_str(),
            website[0].billable,
            website[0].ms
        ),
        (o.build.as_str(), monday.to_string().as_str(), true, 2 * H)
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.project_id == o.ops)
            .map(|r| r.ms)
            .sum::<i64>(),
        2 * H
    );
    // Ed sees only his own time (none); the auditor sees Erin's.
    assert!(
        project_time(&o, &o.ed.access_token, monday, 0)
            .await
            .is_empty()
    );
    assert_eq!(
        project_time(&o, &o.ada.access_token, monday, 0).await.len(),
        rows.len()
    );

    // Submit: the week is locked, and it is in Manny's queue.
    let submitted = w
        .submit_week(authed(
            &erin,
            wpb::SubmitWeekRequest {
                command_id: cmd("submit"),
                org_id: "acme".into(),
                date: monday.to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let locked = w
        .add_entry(authed(
            &erin,
            add_entry(
                wpb::EntryKind::Manual,
                &o.ops,
                &o.support,
                at + 40 * H,
                at + 41 * H,
                "locked",
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        locked.code(),
        Code::FailedPrecondition,
        "{}",
        locked.message()
    );
    let queue = w
        .list_approvals(authed(
            &o.manny.access_token,
            wpb::ListApprovalsRequest {
                org_id: "acme".into(),
                min_position: submitted.position,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queue.weeks.len(), 1);
    assert_eq!(queue.weeks[0].person_id, o.erin.person_id);
    assert_eq!(queue.weeks[0].status, "submitted");
    // Employees have no queue.
    let none = w
        .list_approvals(authed(
            &erin,
            wpb::ListApprovalsRequest {
                org_id: "acme".into(),
                min_position: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::PermissionDenied);

    // Manny approves (he manages Erin's team).
    let decide = |who: &pb::Session,
                  person: &str,
                  decision: wpb::decide_week_request::Decision,
                  tag: &str| {
        authed(
            &who.access_token,
            wpb::DecideWeekRequest {
                command_id: cmd(tag),
                org_id: "acme".into(),
                person_id: person.into(),
                date: monday.to_string(),
                decision: Some(decision),
            },
        )
    };
    use wpb::decide_week_request::Decision as D;
    let approved = w
        .decide_week(decide(
            &o.manny,
            &o.erin.person_id,
            D::Approve("fine".into()),
            "approve",
        ))
        .await
        .unwrap()
        .into_inner();
    let view = week(
        &o,
        &o.manny.access_token,
        &o.erin.person_id,
        monday,
        approved.position,
    )
    .await;
    let wk = view.week.unwrap();
    assert_eq!(
        (
            wk.status.as_str(),
            wk.decision.as_str(),
            wk.decided_by.as_str(),
            wk.comment.as_str()
        ),
        ("approved", "approved", o.manny.person_id.as_str(), "fine")
    );

    // Activity for the approved week arrives late (the agent was offline):
    // stored, not in the approved totals, shown for review.
    let late = upload(
        &o,
        &device.device_token,
        2,
        vec![span(at + 14 * H, 1, "code")],
    )
    .await;
    let view = week(&o, &erin, "", monday, late).await;
    let wk = view.week.clone().unwrap();
    assert_eq!((wk.total_ms, wk.late_ms), (4 * H, H));
    assert_eq!(time_of(&view, &o.website, "late"), H);
    let rows = project_time(&o, &o.owner.access_token, monday, late).await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.project_id == o.website)
            .map(|r| r.ms)
            .sum::<i64>(),
        2 * H,
        "late time is not in project time"
    );
    let queue = w
        .list_approvals(authed(
            &o.owner.access_token,
            wpb::ListApprovalsRequest {
                org_id: "acme".into(),
                min_position: late,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            queue.weeks.len(),
            queue.weeks[0].status.as_str(),
            queue.weeks[0].late_ms
        ),
        (1, "approved", H)
    );

    // Only owners and admins reopen, with a reason; then the late hour counts.
    let refused = w
        .decide_week(decide(
            &o.manny,
            &o.erin.person_id,
            D::Reopen("late hour".into()),
            "reopen-manny",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let reopened = w
        .decide_week(decide(
            &o.owner,
            &o.erin.person_id,
            D::Reopen("count the late hour".into()),
            "reopen",
        ))
        .await
        .unwrap()
        .into_inner();
    let view = week(&o, &erin, "", monday, reopened.position).await;
    let wk = view.week.unwrap();
    assert_eq!(
        (
            wk.status.as_str(),
            wk.decision.as_str(),
            wk.total_ms,
            wk.late_ms
        ),
        ("open", "reopened", 5 * H, 0)
    );
    assert_eq!(wk.comment, "count the late hour");

    // Manny may not decide on Ed's week (not his team); nobody on their own.
    let ed = o.ed.access_token.clone();
    w.submit_week(authed(
        &ed,
        wpb::SubmitWeekRequest {
            command_id: cmd("ed-submit"),
            org_id: "acme".into(),
            date: monday.to_string(),
        },
    ))
    .await
    .unwrap();
    let not_his = w
        .decide_week(decide(
            &o.manny,
            &o.ed.person_id,
            D::Approve(String::new()),
            "manny-ed",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        not_his.code(),
        Code::PermissionDenied,
        "{}",
        not_his.message()
    );
    let rejected = w
        .decide_week(decide(
            &o.owner,
            &o.ed.person_id,
            D::Reject("add your Monday".into()),
            "reject-ed",
        ))
        .await
        .unwrap()
        .into_inner();
    let view = week(&o, &ed, "", monday, rejected.position).await;
    assert_eq!(view.week.unwrap().decision, "rejected");

    // The CSV export: a header, then one line per project, task, member and day.
    let mut stream = w
        .export_project_time(authed(
            &o.owner.access_token,
            wpb::GetProjectTimeRequest {
                org_id: "acme".into(),
                from: monday.to_string(),
                to: (monday + Duration::days(6)).to_string(),
                min_position: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let csv = read_csv(&mut stream).await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "day,person_id,project_id,task_id,billable,ms,hours"
    );
    let build_line = format!(
        "{monday},{},{},{},yes,{},3.00",
        o.erin.person_id,
        o.website,
        o.build,
        3 * H
    );
    assert!(lines.contains(&build_line.as_str()), "{csv}");
    assert_eq!(lines.len(), 4, "{csv}");

    // The timesheets as CSV: one line per member-week, where it stands.
    let mut stream = w
        .export_timesheets(authed(
            &o.owner.access_token,
            wpb::GetProjectTimeRequest {
                org_id: "acme".into(),
                from: monday.to_string(),
                to: monday.to_string(),
                min_position: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let csv = read_csv(&mut stream).await;
    let mut lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.remove(0),
        "week_start,person_id,status,decision,decided_by,total_ms,late_ms,total_hours"
    );
    lines.sort();
    let mut expected = vec![
        format!(
            "{monday},{},open,reopened,{},{},0,5.00",
            o.erin.person_id,
            o.owner.person_id,
            5 * H
        ),
        format!(
            "{monday},{},open,rejected,{},0,0,0.00",
            o.ed.person_id, o.owner.person_id
        ),
    ];
    expected.sort();
    assert_eq!(lines, expected, "{csv}");

    // Budget used: 3 h of Website at 100.00 an hour, and 30 % of its 10 h.
    let catalog = w
        .get_catalog(authed(
            &o.owner.access_token,
            wpb::GetCatalogRequest {
                org_id: "acme".into(),
                min_position: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let website = catalog
        .projects
        .iter()
        .find(|p| p.project_id == o.website)
        .unwrap();
    assert_eq!(
        (website.booked_ms, website.booked_money_minor),
        (3 * H, 30_000)
    );
    let ops = catalog
        .projects
        .iter()
        .find(|p| p.project_id == o.ops)
        .unwrap();
    assert_eq!(
        (ops.booked_ms, ops.booked_money_minor),
        (2 * H, 0),
        "no rate, no money"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_change_moves_time_between_projects_and_reports_it() {
    let o = org().await;
    let (monday, at) = last_monday();
    let device = o.p.enroll(&o.erin, "laptop").await;
    let uploaded = upload(
        &o,
        &device.device_token,
        1,
        vec![
            span(at + 9 * H, 2, "code"),
            span(at + 11 * H, 3, "terminal"),
        ],
    )
    .await;
    let rows = project_time(&o, &o.owner.access_token, monday, uploaded).await;
    assert_eq!(rows.iter().map(|r| r.ms).sum::<i64>(), 2 * H);
    let changed = o
        .work()
        .set_attribution_rules(authed(
            &o.owner.access_token,
            wpb::SetAttributionRulesRequest {
                command_id: cmd("rules-2"),
                org_id: "acme".into(),
                rules: vec![wpb::AttributionRule {
                    project_id: o.ops.clone(),
                    task_id: String::new(),
                    regex: "code|terminal".into(),
                    ignore_case: false,
                }],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let moved = o
        .work()
        .get_moved_time(authed(
            &o.owner.access_token,
            wpb::GetMovedTimeRequest {
                org_id: "acme".into(),
                rules_version: 2,
                min_position: changed.position,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let of = |project: &str| {
        moved
            .projects
            .iter()
            .find(|m| m.project_id == project)
            .map(|m| (m.before_ms, m.after_ms))
    };
    assert_eq!(of(&o.website), Some((2 * H, 0)));
    assert_eq!(of(&o.ops), Some((0, 5 * H)));
    assert_eq!(of(""), Some((3 * H, 0)), "unattributed time moved too");
    let rows = project_time(&o, &o.owner.access_token, monday, changed.position).await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.project_id == o.ops)
            .map(|r| r.ms)
            .sum::<i64>(),
        5 * H
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_name_the_field_and_store_nothing() {
    let o = org().await;
    let other = o.p.sign_up("globex", 5).await;
    let foreign_project = o
        .work()
        .create_project(authed(
            &other.access_token,
            wpb::CreateProjectRequest {
                command_id: cmd("foreign"),
                org_id: "globex".into(),
                name: "Secret".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let (_, at) = last_monday();
    let erin = o.erin.access_token.clone();
    let before = o.p.last_sequence().await;
    let cases = [
        (
            "end before start",
            add_entry(
                wpb::EntryKind::Manual,
                &o.ops,
                &o.support,
                at + 2 * H,
                at + H,
                "bad-1",
            ),
            Code::InvalidArgument,
            "end_ms",
        ),
        (
            "longer than 24 h",
            add_entry(
                wpb::EntryKind::Manual,
                &o.ops,
                &o.support,
                at,
                at + 25 * H,
                "bad-2",
            ),
            Code::InvalidArgument,
            "end_ms",
        ),
        (
            "unknown project",
            add_entry(
                wpb::EntryKind::Manual,
                "pr_nope",
                &o.support,
                at,
                at + H,
                "bad-3",
            ),
            Code::NotFound,
            "project_id",
        ),
        (
            "another org's project",
            add_entry(
                wpb::EntryKind::Manual,
                &foreign_project,
                &o.support,
                at,
                at + H,
                "bad-4",
            ),
            Code::NotFound,
            "project_id",
        ),
        (
            "a task of another project",
            add_entry(
                wpb::EntryKind::Manual,
                &o.website,
                &o.support,
                at,
                at + H,
                "bad-5",
            ),
            Code::NotFound,
            "task_id",
        ),
        (
            "no kind",
            wpb::AddEntryRequest {
                kind: 0,
                ..add_entry(
                    wpb::EntryKind::Manual,
                    &o.ops,
                    &o.support,
                    at,
                    at + H,
                    "bad-6",
                )
            },
            Code::InvalidArgument,
            "kind",
        ),
        (
            "before 1970",
            add_entry(
                wpb::EntryKind::Manual,
                &o.ops,
                &o.support,
                -2 * H,
                -H,
                "bad-7",
            ),
            Code::InvalidArgument,
            "start_ms",
        ),
        (
            "a NUL in the note",
            wpb::AddEntryRequest {
                note: "a\u{0}b".into(),
                ..add_entry(
                    wpb::EntryKind::Manual,
                    &o.ops,
                    &o.support,
                    at,
                    at + H,
                    "bad-8",
                )
            },
            Code::InvalidArgument,
            "note",
        ),
    ];
    for (what, request, code, field) in cases {
        let status = o
            .work()
            .add_entry(authed(&erin, request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(
            status.message().starts_with(field),
            "{what}: {}",
            status.message()
        );
    }
    // Auditors change nothing, their own weeks included; a far-off date is
    // refused before any week is computed.
    let auditor = o
        .work()
        .add_entry(authed(
            &o.ada.access_token,
            add_entry(
                wpb::EntryKind::Manual,
                &o.ops,
                &o.support,
                at,
                at + H,
                "ada",
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        auditor.code(),
        Code::PermissionDenied,
        "{}",
        auditor.message()
    );
    let far = o
        .work()
        .get_week(authed(
            &erin,
            wpb::GetWeekRequest {
                org_id: "acme".into(),
                person_id: String::new(),
                date: "+262142-12-31".into(),
                min_position: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(far.code(), Code::InvalidArgument, "{}", far.message());
    // Overlapping another entry.
    o.work()
        .add_entry(authed(
            &erin,
            add_entry(
                wpb::EntryKind::Manual,
                &o.ops,
                &o.support,
                at + 8 * H,
                at + 10 * H,
                "first",
            ),
        ))
        .await
        .unwrap();
    let after_first = o.p.last_sequence().await;
    let overlap = o
        .work()
        .add_entry(authed(
            &erin,
            add_entry(
                wpb::EntryKind::Assignment,
                &o.website,
                &o.build,
                at + 9 * H,
                at + 11 * H,
                "overlap",
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        overlap.code(),
        Code::FailedPrecondition,
        "{}",
        overlap.message()
    );
    // An archived project takes no new time.
    o.work()
        .change_project(authed(
            &o.owner.access_token,
            wpb::ChangeProjectRequest {
                command_id: cmd("archive"),
                org_id: "acme".into(),
                project_id: o.website.clone(),
                change: Some(wpb::change_project_request::Change::Archived(true)),
            },
        ))
        .await
        .unwrap();
    let after_archive = o.p.last_sequence().await;
    let archived = o
        .work()
        .add_entry(authed(
            &erin,
            add_entry(
                wpb::EntryKind::Manual,
                &o.website,
                &o.build,
                at + 12 * H,
                at + 13 * H,
                "archived",
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        archived.code(),
        Code::FailedPrecondition,
        "{}",
        archived.message()
    );
    // Employees manage no projects; attribution rules must name real ones.
    let denied = o
        .work()
        .create_project(authed(
            &erin,
            wpb::CreateProjectRequest {
                command_id: cmd("erin-project"),
                org_id: "acme".into(),
                name: "Mine".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let unknown = o
        .work()
        .set_attribution_rules(authed(
            &o.owner.access_token,
            wpb::SetAttributionRulesRequest {
                command_id: cmd("rules-bad"),
                org_id: "acme".into(),
                rules: vec![wpb::AttributionRule {
                    project_id: foreign_project,
                    task_id: String::new(),
                    regex: "x".into(),
                    ignore_case: false,
                }],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().starts_with("rules[0].project"),
        "{}",
        unknown.message()
    );
    assert_eq!(after_first, before + 1, "a refused entry stored something");
    assert_eq!(
        after_archive,
        after_first + 1,
        "the overlapping entry stored something"
    );
    assert_eq!(
        o.p.last_sequence().await,
        after_archive,
        "a refused command stored something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_marks_are_recorded_once_per_crossing() {
    use trackhrs_domain::Token;
    use trackhrs_domain::project::Project;
    let o = org().await;
    let (_, at) = last_monday();
    let device = o.p.enroll(&o.erin, "laptop").await;
    // The marks the catalog shows and the project's version in the log.
    let marks = async |min: u64| -> (Vec<u32>, u64) {
        let catalog = o
            .work()
            .get_catalog(authed(
                &o.owner.access_token,
                wpb::GetCatalogRequest {
                    org_id: "acme".into(),
                    min_position: min,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let project = catalog
            .projects
            .iter()
            .find(|p| p.project_id == o.website)
            .unwrap();
        let (org, id) = (Token::new("acme").unwrap(), Token::new(&o.website).unwrap());
        let version =
            o.p.store
                .load_fresh::<Project>(&org, &id)
                .await
                .unwrap()
                .version;
        (project.marks.clone(), version)
    };
    // Website: 10 h. 8 h of coding passes 80 %.
    let first = upload(
        &o,
        &device.device_token,
        1,
        (0..4)
            .map(|i| span(at + (8 + 2 * i) * H, 2, "code"))
            .collect(),
    )
    .await;
    let wait_for = async |want: Vec<u32>, min: u64| {
        for _ in 0..100 {
            let (got, version) = marks(min).await;
            if got == want {
                return version;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the marks never became {want:?}");
    };
    // Created, a task, the 80 % mark.
    assert_eq!(wait_for(vec![80], first).await, 3);
    // Two more hours: 100 %.
    let second = upload(
        &o,
        &device.device_token,
        2,
        vec![span(at + 34 * H, 2, "code")],
    )
    .await;
    assert_eq!(wait_for(vec![80, 100], second).await, 4);
    // More time crosses nothing again.
    let third = upload(
        &o,
        &device.device_token,
        3,
        vec![span(at + 40 * H, 1, "code")],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        wait_for(vec![80, 100], third).await,
        4,
        "a mark was recorded twice"
    );
    // A larger budget (100 h) leaves both marks behind: cleared in the next
    // check after the budget change (version 5).
    let budget = |hours: u32, tag: &str| {
        authed(
            &o.owner.access_token,
            wpb::ChangeProjectRequest {
                command_id: cmd(tag),
                org_id: "acme".into(),
                project_id: o.website.clone(),
                change: Some(wpb::change_project_request::Change::Budget(wpb::Budget {
                    hours,
                    money_minor: 0,
                    rate_minor: 10_000,
                })),
            },
        )
    };
    o.work()
        .change_project(budget(100, "budget-100"))
        .await
        .unwrap();
    let fourth = upload(
        &o,
        &device.device_token,
        4,
        vec![span(at + 42 * H, 1, "code")],
    )
    .await;
    assert_eq!(wait_for(vec![], fourth).await, 7);
    // Back to 10 h: both are crossed again, each once.
    o.work()
        .change_project(budget(10, "budget-10"))
        .await
        .unwrap();
    let fifth = upload(
        &o,
        &device.device_token,
        5,
        vec![span(at + 44 * H, 1, "code")],
    )
    .await;
    assert_eq!(wait_for(vec![80, 100], fifth).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_see_the_time_of_their_teams_only() {
    use trackhrs_schemas::activity::v1 as apb;
    use trackhrs_schemas::activity::v1::activity_client::ActivityClient;
    let o = org().await;
    let (monday, at) = last_monday();
    let erin = o.p.enroll(&o.erin, "erin-laptop").await;
    let ed = o.p.enroll(&o.ed, "ed-laptop").await;
    upload(&o, &erin.device_token, 1, vec![span(at + 9 * H, 1, "code")]).await;
    let last = upload(&o, &ed.device_token, 1, vec![span(at + 9 * H, 2, "code")]).await;
    let dashboard = |token: &str, people: Vec<String>| {
        authed(
            token,
            apb::GetDashboardRequest {
                org_id: "acme".into(),
                from: monday.to_string(),
                to: monday.to_string(),
                person_ids: people,
                min_position: last,
            },
        )
    };
    let mut activity = ActivityClient::new(o.p.gw().channel.clone());
    let seen = |d: &apb::Dashboard| {
        let mut people: Vec<String> = d.days.iter().map(|day| day.person_id.clone()).collect();
        people.sort();
        people
    };
    // Manny manages Core, where Erin is; Ed is in no team.
    let manny = activity
        .get_dashboard(dashboard(&o.manny.access_token, vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen(&manny), vec![o.erin.person_id.clone()]);
    let refused = activity
        .get_dashboard(dashboard(
            &o.manny.access_token,
            vec![o.ed.person_id.clone()],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // The owner sees both; project time follows the same rule.
    let owner = activity
        .get_dashboard(dashboard(&o.owner.access_token, vec![]))
        .await
        .unwrap()
        .into_inner();
    let mut both = vec![o.erin.person_id.clone(), o.ed.person_id.clone()];
    both.sort();
    assert_eq!(seen(&owner), both);
    let rows = project_time(&o, &o.manny.access_token, monday, last).await;
    assert!(!rows.is_empty() && rows.iter().all(|r| r.person_id == o.erin.person_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_the_employee_withdrew_leaves_the_dashboard_and_project_time() {
    use trackhrs_schemas::activity::v1 as apb;
    use trackhrs_schemas::activity::v1::activity_client::ActivityClient;
    use trackhrs_schemas::agent::v1::Retraction;

    let o = org().await;
    let (monday, at) = last_monday();
    let laptop = o.p.enroll(&o.erin, "laptop").await;
    let desktop = o.p.enroll(&o.erin, "desktop").await;
    // Laptop: 09-11 coding (Website/Build), 11-12 Slack. Desktop, at the
    // same time: 09-10 Figma (unattributed).
    upload(
        &o,
        &laptop.device_token,
        1,
        vec![span(at + 9 * H, 2, "code"), span(at + 11 * H, 1, "slack")],
    )
    .await;
    upload(
        &o,
        &desktop.device_token,
        1,
        vec![span(at + 9 * H, 1, "figma")],
    )
    .await;
    let retract = |seq: u64, ranges: &[(i64, i64)]| UploadBatchRequest {
        batch_id: format!("retract-{seq}"),
        device_batch_seq: seq,
        spans: vec![],
        retractions: ranges
            .iter()
            .map(|&(from, to)| Retraction {
                start_unix_ms: at + from,
                end_unix_ms: at + to,
            })
            .collect(),
    };
    let mut ingest = AgentIngestClient::new(o.p.gw().channel.clone());
    // A retraction that ends before it starts is refused, naming the
    // field; nothing is stored and its sequence number stays free.
    let status = ingest
        .upload_batch(authed(
            &laptop.device_token,
            retract(2, &[(10 * H, 12 * H), (13 * H, 13 * H)]),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("retractions:"), "{status:?}");
    // The laptop withdraws 10-12 (the second coding hour and the Slack
    // hour), a half hour before anything it recorded, and 12-13, after it.
    let withdrawn = ingest
        .upload_batch(authed(
            &laptop.device_token,
            retract(
                2,
                &[(10 * H, 12 * H), (8 * H, 8 * H + H / 2), (12 * H, 13 * H)],
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .stream_sequence;

    let erin = o.erin.access_token.clone();
    let view = week(&o, &erin, "", monday, withdrawn).await;
    assert_eq!(time_of(&view, &o.website, "rule"), H);
    assert_eq!(
        time_of(&view, "", "rule"),
        H,
        "the desktop's Figma hour stays"
    );
    let rows = project_time(&o, &o.owner.access_token, monday, withdrawn).await;
    let website: i64 = rows
        .iter()
        .filter(|r| r.project_id == o.website)
        .map(|r| r.ms)
        .sum();
    assert_eq!(website, H);

    let mut activity = ActivityClient::new(o.p.gw().channel.clone());
    let request = |min_position| {
        authed(
            &o.owner.access_token,
            apb::GetDashboardRequest {
                org_id: "acme".into(),
                from: monday.to_string(),
                to: monday.to_string(),
                person_ids: vec![],
                min_position,
            },
        )
    };
    let dash = activity
        .get_dashboard(request(withdrawn))
        .await
        .unwrap()
        .into_inner();
    let day = dash
        .days
        .iter()
        .find(|d| d.person_id == o.erin.person_id)
        .expect("erin's Monday");
    assert_eq!((day.active_ms, day.removed_ms), (2 * H, 2 * H));
    let apps: Vec<(&str, i64)> = day
        .apps
        .iter()
        .map(|a| (a.name.as_str(), a.active_ms))
        .collect();
    assert_eq!(apps, [("code", H), ("figma", H)]);
    assert!(
        dash.top_titles.iter().all(|t| t.title != "slack window"),
        "{:?}",
        dash.top_titles
    );
    let summary = activity
        .get_dashboard_summary(request(withdrawn))
        .await
        .unwrap()
        .into_inner();
    let member = summary
        .members
        .iter()
        .find(|m| m.person_id == o.erin.person_id)
        .expect("erin");
    assert_eq!((member.active_ms, member.removed_ms), (2 * H, 2 * H));
    // Nothing of the withdrawn Slack hour is kept: no title left in either
    // read model (an erasure finds a person's titles through their time, so
    // one left without time would outlive it).
    let pg = o.p.db.connect().await.unwrap();
    for name in ["activity", "work"] {
        let schema = trackhrs_projections::live_schema(&pg, name)
            .await
            .unwrap()
            .expect("a live version");
        let count = |title: &'static str| {
            let (pg, schema) = (&pg, &schema);
            async move {
                pg.query_one(
                    &format!("SELECT count(*) FROM {schema}.activities WHERE title = $1"),
                    &[&title],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
            }
        };
        assert_eq!(
            (count("slack window").await, count("code window").await),
            (0, 1),
            "{name}"
        );
    }

    // The next batch takes back another half hour of coding.
    let again = ingest
        .upload_batch(authed(
            &laptop.device_token,
            retract(3, &[(9 * H, 9 * H + H / 2)]),
        ))
        .await
        .unwrap()
        .into_inner()
        .stream_sequence;
    let dash = activity
        .get_dashboard(request(again))
        .await
        .unwrap()
        .into_inner();
    let day = &dash.days[0];
    assert_eq!((day.active_ms, day.removed_ms), (H + H / 2, 2 * H + H / 2));
    let view = week(&o, &erin, "", monday, again).await;
    assert_eq!(time_of(&view, &o.website, "rule"), H / 2);

    // A span across a week's end is kept as a row in each week; withdrawn
    // across the end, each keeps its part outside, and both weeks count
    // it again (two weeks before: Sunday 23:00 to Monday 01:00 UTC).
    let tablet = o.p.enroll(&o.erin, "tablet").await;
    let boundary = at - 7 * 24 * H;
    upload(
        &o,
        &tablet.device_token,
        1,
        vec![span(boundary - H, 2, "code")],
    )
    .await;
    let across = ingest
        .upload_batch(authed(
            &tablet.device_token,
            UploadBatchRequest {
                batch_id: "tablet-retract".into(),
                device_batch_seq: 2,
                spans: vec![],
                retractions: vec![Retraction {
                    start_unix_ms: boundary - H / 2,
                    end_unix_ms: boundary + H / 2,
                }],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .stream_sequence;
    let weeks_ago = |days: i64| monday - Duration::days(days);
    for days in [7, 8] {
        let view = week(&o, &erin, "", weeks_ago(days), across).await;
        assert_eq!(
            time_of(&view, &o.website, "rule"),
            H / 2,
            "{days} days back"
        );
    }
}
