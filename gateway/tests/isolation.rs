//! Org isolation: every gRPC method that names an org, called as each role
//! of org B and without a token, against org A's ids, is refused, and
//! nothing is written. (The agent methods take no org: a device token
//! stands for one device of one org, so there is nothing to aim elsewhere.)

use tonic::transport::Channel;
use tonic::{Code, Status};
use trackhrs_schemas::activity::v1 as apb;
use trackhrs_schemas::activity::v1::activity_client::ActivityClient;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::org::v1::organizations_client::OrganizationsClient;
use trackhrs_schemas::work::v1 as wpb;
use trackhrs_schemas::work::v1::work_client::WorkClient;
use trackhrs_testkit::*;

fn req<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    match token {
        Some(token) => authed(token, message),
        None => tonic::Request::new(message),
    }
}

/// A's ids that B's callers aim at.
struct Target {
    org: String,
    person: String,
    device: String,
    project: String,
}

/// Calls every Work method once with `token` against `t`.
async fn call_every_work_method(
    channel: Channel,
    token: Option<&str>,
    t: &Target,
    tag: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    let mut w = WorkClient::new(channel);
    let cmd = |name: &str| format!("{tag}-work-{name}");
    let org = || t.org.clone();
    let date = "2026-11-30".to_owned();
    let export = match w
        .export_project_time(req(
            token,
            wpb::GetProjectTimeRequest {
                org_id: org(),
                from: date.clone(),
                to: date.clone(),
                min_position: 0,
            },
        ))
        .await
    {
        // A stream's refusal comes as its first message.
        Ok(stream) => stream.into_inner().message().await.map(drop),
        Err(status) => Err(status),
    };
    let timesheets = match w
        .export_timesheets(req(
            token,
            wpb::GetProjectTimeRequest {
                org_id: org(),
                from: date.clone(),
                to: date.clone(),
                min_position: 0,
            },
        ))
        .await
    {
        Ok(stream) => stream.into_inner().message().await.map(drop),
        Err(status) => Err(status),
    };
    vec![
        (
            "CreateTeam",
            w.create_team(req(
                token,
                wpb::CreateTeamRequest {
                    command_id: cmd("team"),
                    org_id: org(),
                    name: "Intruders".into(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "SetTeamManagers",
            w.set_team_managers(req(
                token,
                wpb::SetTeamManagersRequest {
                    command_id: cmd("managers"),
                    org_id: org(),
                    team_id: "tm_x".into(),
                    managers: vec![t.person.clone()],
                },
            ))
            .await
            .map(drop),
        ),
        (
            "SetMemberTeam",
            w.set_member_team(req(
                token,
                wpb::SetMemberTeamRequest {
                    command_id: cmd("member-team"),
                    org_id: org(),
                    person_id: t.person.clone(),
                    team_id: String::new(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "CreateClient",
            w.create_client(req(
                token,
                wpb::CreateClientRequest {
                    command_id: cmd("client"),
                    org_id: org(),
                    name: "Intruder".into(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "CreateProject",
            w.create_project(req(
                token,
                wpb::CreateProjectRequest {
                    command_id: cmd("project"),
                    org_id: org(),
                    name: "Intruder".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        ),
        (
            "AddTask",
            w.add_task(req(
                token,
                wpb::AddTaskRequest {
                    command_id: cmd("task"),
                    org_id: org(),
                    project_id: t.project.clone(),
                    name: "Intruder".into(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ChangeProject",
            w.change_project(req(
                token,
                wpb::ChangeProjectRequest {
                    command_id: cmd("archive"),
                    org_id: org(),
                    project_id: t.project.clone(),
                    change: Some(wpb::change_project_request::Change::Archived(true)),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "SetAttributionRules",
            w.set_attribution_rules(req(
                token,
                wpb::SetAttributionRulesRequest {
                    command_id: cmd("rules"),
                    org_id: org(),
                    rules: vec![],
                },
            ))
            .await
            .map(drop),
        ),
        (
            "GetCatalog",
            w.get_catalog(req(
                token,
                wpb::GetCatalogRequest {
                    org_id: org(),
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "AddEntry",
            w.add_entry(req(
                token,
                wpb::AddEntryRequest {
                    command_id: cmd("entry"),
                    org_id: org(),
                    kind: wpb::EntryKind::Manual as i32,
                    project_id: t.project.clone(),
                    task_id: "tk_x".into(),
                    start_ms: 1_796_000_000_000,
                    end_ms: 1_796_000_360_000,
                    note: String::new(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "RemoveEntry",
            w.remove_entry(req(
                token,
                wpb::RemoveEntryRequest {
                    command_id: cmd("remove"),
                    org_id: org(),
                    date: date.clone(),
                    entry_id: "en_x".into(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "SubmitWeek",
            w.submit_week(req(
                token,
                wpb::SubmitWeekRequest {
                    command_id: cmd("submit"),
                    org_id: org(),
                    date: date.clone(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "DecideWeek",
            w.decide_week(req(
                token,
                wpb::DecideWeekRequest {
                    command_id: cmd("decide"),
                    org_id: org(),
                    person_id: t.person.clone(),
                    date: date.clone(),
                    decision: Some(wpb::decide_week_request::Decision::Approve(String::new())),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "GetWeek",
            w.get_week(req(
                token,
                wpb::GetWeekRequest {
                    org_id: org(),
                    person_id: t.person.clone(),
                    date: date.clone(),
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ListWeeks",
            w.list_weeks(req(
                token,
                wpb::ListWeeksRequest {
                    org_id: org(),
                    date: date.clone(),
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ListApprovals",
            w.list_approvals(req(
                token,
                wpb::ListApprovalsRequest {
                    org_id: org(),
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "GetProjectTime",
            w.get_project_time(req(
                token,
                wpb::GetProjectTimeRequest {
                    org_id: org(),
                    from: date.clone(),
                    to: date.clone(),
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        ("ExportProjectTime", export),
        ("ExportTimesheets", timesheets),
        (
            "GetMovedTime",
            w.get_moved_time(req(
                token,
                wpb::GetMovedTimeRequest {
                    org_id: org(),
                    rules_version: 1,
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
    ]
}

/// Calls every Pay method once with `token` against `t`.
async fn call_every_pay_method(
    channel: Channel,
    token: Option<&str>,
    t: &Target,
    tag: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    use trackhrs_schemas::pay::v1 as ppb;
    let mut c = trackhrs_schemas::pay::v1::pay_client::PayClient::new(channel);
    let cmd = |name: &str| format!("{tag}-pay-{name}");
    let org = || t.org.clone();
    let run = || ppb::GetRunRequest {
        org_id: org(),
        first_day: "2026-03-01".into(),
        min_position: 0,
    };
    let export = match c.export_run(req(token, run())).await {
        Ok(stream) => stream.into_inner().message().await.map(drop),
        Err(status) => Err(status),
    };
    vec![
        (
            "ChangePolicy",
            c.change_policy(req(
                token,
                ppb::ChangePolicyRequest {
                    command_id: cmd("policy"),
                    org_id: org(),
                    change: Some(ppb::change_policy_request::Change::Currency("EUR".into())),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "GetPolicy",
            c.get_policy(req(
                token,
                ppb::GetPolicyRequest {
                    org_id: org(),
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "RequestLeave",
            c.request_leave(req(
                token,
                ppb::RequestLeaveRequest {
                    command_id: cmd("leave"),
                    org_id: org(),
                    leave_type_id: "vacation".into(),
                    from: "2026-12-07".into(),
                    to: "2026-12-08".into(),
                    day_ms: 0,
                    note: String::new(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "CancelLeave",
            c.cancel_leave(req(
                token,
                ppb::CancelLeaveRequest {
                    command_id: cmd("cancel"),
                    org_id: org(),
                    request_id: "lv_x".into(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "DecideLeave",
            c.decide_leave(req(
                token,
                ppb::DecideLeaveRequest {
                    command_id: cmd("decide"),
                    org_id: org(),
                    person_id: t.person.clone(),
                    request_id: "lv_x".into(),
                    approve: true,
                    comment: String::new(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ListLeave",
            c.list_leave(req(
                token,
                ppb::ListLeaveRequest {
                    org_id: org(),
                    from: "2026-12-01".into(),
                    to: "2026-12-31".into(),
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "DraftRun",
            c.draft_run(req(
                token,
                ppb::DraftRunRequest {
                    command_id: cmd("draft"),
                    org_id: org(),
                    first_day: "2026-03-01".into(),
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "FinalizeRun",
            c.finalize_run(req(
                token,
                ppb::FinalizeRunRequest {
                    command_id: cmd("finalize"),
                    org_id: org(),
                    first_day: "2026-03-01".into(),
                    draft: 1,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ListRuns",
            c.list_runs(req(
                token,
                ppb::ListRunsRequest {
                    org_id: org(),
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        ("GetRun", c.get_run(req(token, run())).await.map(drop)),
        ("ExportRun", export),
    ]
}

/// Calls every Organizations method once with `token` (None: no token)
/// against `t`; returns each method's name and outcome.
async fn call_every_method(
    channel: Channel,
    token: Option<&str>,
    t: &Target,
    tag: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    let mut c = OrganizationsClient::new(channel.clone());
    let mut a = ActivityClient::new(channel);
    let cmd = |name: &str| format!("{tag}-{name}");
    let settings = pb::Settings {
        timezone: "UTC".into(),
        work_week: vec![1],
        capture_titles: true,
        capture_urls: true,
    };
    vec![
        (
            "GetOrganization",
            c.get_organization(req(
                token,
                pb::GetOrganizationRequest {
                    org_id: t.org.clone(),
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ChangeSettings",
            c.change_settings(req(
                token,
                pb::ChangeSettingsRequest {
                    command_id: cmd("settings"),
                    org_id: t.org.clone(),
                    settings: Some(settings),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ChangeSeats",
            c.change_seats(req(
                token,
                pb::ChangeSeatsRequest {
                    command_id: cmd("seats"),
                    org_id: t.org.clone(),
                    seats: 50,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "InviteMember",
            c.invite_member(req(
                token,
                pb::InviteMemberRequest {
                    command_id: cmd("invite"),
                    org_id: t.org.clone(),
                    email: format!("{tag}@intruder.test"),
                    name: "Intruder".into(),
                    role: pb::Role::Owner as i32,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ResendInvitation",
            c.resend_invitation(req(
                token,
                pb::ResendInvitationRequest {
                    org_id: t.org.clone(),
                    person_id: t.person.clone(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ChangeRole",
            c.change_role(req(
                token,
                pb::ChangeRoleRequest {
                    command_id: cmd("role"),
                    org_id: t.org.clone(),
                    person_id: t.person.clone(),
                    role: pb::Role::Auditor as i32,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "DeactivateMember",
            c.deactivate_member(req(
                token,
                pb::MemberRequest {
                    command_id: cmd("deactivate"),
                    org_id: t.org.clone(),
                    person_id: t.person.clone(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ReactivateMember",
            c.reactivate_member(req(
                token,
                pb::MemberRequest {
                    command_id: cmd("reactivate"),
                    org_id: t.org.clone(),
                    person_id: t.person.clone(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ListMembers",
            c.list_members(req(
                token,
                pb::ListMembersRequest {
                    org_id: t.org.clone(),
                    min_position: 0,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        ),
        (
            "EnrollDevice",
            c.enroll_device(req(
                token,
                pb::EnrollDeviceRequest {
                    command_id: cmd("enroll"),
                    org_id: t.org.clone(),
                    name: "Intruder laptop".into(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ListDevices",
            c.list_devices(req(
                token,
                pb::ListDevicesRequest {
                    org_id: t.org.clone(),
                    min_position: 0,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        ),
        (
            "GetDashboard",
            a.get_dashboard(req(
                token,
                apb::GetDashboardRequest {
                    org_id: t.org.clone(),
                    from: "2026-01-01".into(),
                    to: "2026-01-31".into(),
                    person_ids: vec![t.person.clone()],
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "SetCategoryRules",
            a.set_category_rules(req(
                token,
                apb::SetCategoryRulesRequest {
                    command_id: cmd("rules"),
                    org_id: t.org.clone(),
                    rules: vec![],
                    activitywatch_json: String::new(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "PreviewCategoryRules",
            a.preview_category_rules(req(
                token,
                apb::PreviewCategoryRulesRequest {
                    org_id: t.org.clone(),
                    rules: vec![],
                    activitywatch_json: String::new(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "GetCategoryRules",
            a.get_category_rules(req(
                token,
                apb::GetCategoryRulesRequest {
                    org_id: t.org.clone(),
                    min_position: 0,
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ListHistory",
            c.list_history(req(
                token,
                pb::ListHistoryRequest {
                    org_id: t.org.clone(),
                    person_id: t.person.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        ),
        (
            "RevokeDevice",
            c.revoke_device(req(
                token,
                pb::RevokeDeviceRequest {
                    command_id: cmd("revoke"),
                    org_id: t.org.clone(),
                    device_id: t.device.clone(),
                },
            ))
            .await
            .map(drop),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_of_another_org_reaches_org_a() {
    let p = Platform::start().await;
    let a_owner = p.sign_up("org-a", 10).await;
    let a_member = p.member(&a_owner, "alice", pb::Role::Employee).await;
    let a_device = p.enroll(&a_member, "alice-laptop").await;
    let a_project = WorkClient::new(p.gw().channel.clone())
        .create_project(authed(
            &a_owner.access_token,
            wpb::CreateProjectRequest {
                command_id: "a-project".into(),
                org_id: "org-a".into(),
                name: "Apollo".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let b_owner = p.sign_up("org-b", 10).await;
    let mut b_callers = vec![("owner", Some(b_owner.clone()))];
    for (name, role) in [
        ("admin", pb::Role::Admin),
        ("manager", pb::Role::Manager),
        ("employee", pb::Role::Employee),
        ("auditor", pb::Role::Auditor),
    ] {
        b_callers.push((name, Some(p.member(&b_owner, name, role).await)));
    }
    b_callers.push(("anonymous", None));

    let a_ids = Target {
        org: "org-a".into(),
        person: a_member.person_id.clone(),
        device: a_device.device_id.clone(),
        project: a_project.clone(),
    };
    let missing_org = Target {
        org: "org-zz".into(),
        person: a_member.person_id.clone(),
        device: a_device.device_id.clone(),
        project: a_project,
    };
    let before = (p.last_sequence().await, p.credential_rows().await);
    let mut refused = 0;
    for (role, session) in &b_callers {
        let token = session.as_ref().map(|s| s.access_token.as_str());
        let mut against_a = call_every_method(p.gw().channel.clone(), token, &a_ids, role).await;
        against_a.extend(call_every_work_method(p.gw().channel.clone(), token, &a_ids, role).await);
        against_a.extend(call_every_pay_method(p.gw().channel.clone(), token, &a_ids, role).await);
        let mut against_missing =
            call_every_method(p.gw().channel.clone(), token, &missing_org, role).await;
        against_missing.extend(
            call_every_work_method(p.gw().channel.clone(), token, &missing_org, role).await,
        );
        against_missing
            .extend(call_every_pay_method(p.gw().channel.clone(), token, &missing_org, role).await);
        assert_eq!(against_a.len(), 17 + 20 + 11, "every method is called");
        for ((method, outcome), (_, missing)) in against_a.into_iter().zip(against_missing) {
            let status = outcome.expect_err(&format!("{role} of org B called {method} on org A"));
            let expected = if token.is_some() {
                Code::PermissionDenied
            } else {
                Code::Unauthenticated
            };
            assert_eq!(
                status.code(),
                expected,
                "{role} {method}: {}",
                status.message()
            );
            // An org that does not exist gets the very same answer.
            let missing = missing.expect_err("a missing org is refused too");
            assert_eq!(
                (missing.code(), missing.message()),
                (status.code(), status.message()),
                "{role} {method}: the answer reveals whether org A exists"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 6 * (17 + 20 + 11));
    assert_eq!(
        (p.last_sequence().await, p.credential_rows().await),
        before,
        "a refused call wrote to the event store or the credential store"
    );

    // B's owner naming A's member or device inside org B finds nothing, with
    // the same answer as for ids that exist nowhere.
    let mut orgs = p.gw().orgs();
    let in_b = |person: &str, tag: &str| {
        authed(
            &b_owner.access_token,
            pb::MemberRequest {
                command_id: format!("b-{tag}"),
                org_id: "org-b".into(),
                person_id: person.into(),
            },
        )
    };
    let foreign = orgs
        .deactivate_member(in_b(&a_member.person_id, "foreign"))
        .await
        .unwrap_err();
    let nowhere = orgs
        .deactivate_member(in_b("p_nowhere", "nowhere"))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::FailedPrecondition);
    assert_eq!(
        (foreign.code(), foreign.message()),
        (nowhere.code(), nowhere.message())
    );
    let listed = orgs
        .list_devices(authed(
            &b_owner.access_token,
            pb::ListDevicesRequest {
                org_id: "org-b".into(),
                min_position: p.last_sequence().await,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.devices.is_empty(), "org B sees org A's devices");
    assert_eq!(p.last_sequence().await, before.0);

    // Command ids are per aggregate: org B reusing the id of org A's
    // sign-up is a new command of its own, stored, not A's result.
    let result = orgs
        .change_seats(authed(
            &b_owner.access_token,
            pb::ChangeSeatsRequest {
                command_id: "sign-up-org-a".into(),
                org_id: "org-b".into(),
                seats: 12,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!result.duplicate);
    assert_eq!(result.position, before.0 + 1);
}
