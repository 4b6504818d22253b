//! The organization's history for auditors: who did what and when, newest
//! first, filtered by person and event type, in pages; nobody's name or
//! e-mail address in it; refused to the roles that may not read it.

use tonic::Code;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::*;

fn history(
    session: &pb::Session,
    request: pb::ListHistoryRequest,
) -> tonic::Request<pb::ListHistoryRequest> {
    authed(
        &session.access_token,
        pb::ListHistoryRequest {
            org_id: "acme".into(),
            ..request
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_who_did_what_and_when() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 6).await;
    let auditor = p.member(&owner, "ada", pb::Role::Auditor).await;
    let erin = p.member(&owner, "erin", pb::Role::Employee).await;
    let manny = p.member(&owner, "manny", pb::Role::Manager).await;
    let mut orgs = p.gw().orgs();
    orgs.change_role(authed(
        &owner.access_token,
        pb::ChangeRoleRequest {
            command_id: "promote-erin".into(),
            org_id: "acme".into(),
            person_id: erin.person_id.clone(),
            role: pb::Role::Admin as i32,
        },
    ))
    .await
    .unwrap();
    let deactivated = orgs
        .deactivate_member(authed(
            &owner.access_token,
            pb::MemberRequest {
                command_id: "deactivate-manny".into(),
                org_id: "acme".into(),
                person_id: manny.person_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();

    // Everything, newest first, as soon as the last command is applied.
    let all = orgs
        .list_history(history(
            &auditor,
            pb::ListHistoryRequest {
                min_position: deactivated.position,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<&str> = all.entries.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "MemberDeactivated",
            "MemberRoleChanged",
            "MemberInvited",
            "MemberInvited",
            "MemberInvited",
            "OrganizationCreated",
        ]
    );
    assert_eq!(all.next_before, 0, "one page holds it all");
    let actors: Vec<&str> = all.entries.iter().map(|e| e.actor.as_str()).collect();
    let by_owner = format!("person:{}", owner.person_id);
    assert_eq!(actors, [by_owner.as_str(); 6], "{all:?}");
    assert_eq!(all.entries[0].person_id, manny.person_id);
    assert_eq!(all.entries[1].detail, "role admin");
    assert_eq!(all.entries[4].detail, "role auditor");
    assert!(all.entries.windows(2).all(
        |w| w[0].position > w[1].position && w[0].recorded_at_micros >= w[1].recorded_at_micros
    ));
    assert!(
        !format!("{all:?}").contains('@') && !format!("{all:?}").contains("Person "),
        "names or e-mail addresses in the history: {all:?}"
    );

    // By person: what erin did or what was done to her.
    let erins = orgs
        .list_history(history(
            &auditor,
            pb::ListHistoryRequest {
                person_id: erin.person_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<&str> = erins
        .entries
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(kinds, ["MemberRoleChanged", "MemberInvited"]);

    // By event type, in pages of two.
    let mut pages = Vec::new();
    let mut before = 0;
    loop {
        let page = orgs
            .list_history(history(
                &owner,
                pb::ListHistoryRequest {
                    event_types: vec!["MemberInvited".into(), "OrganizationCreated".into()],
                    before,
                    limit: 2,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        pages.push(page.entries.len());
        if page.next_before == 0 {
            break;
        }
        before = page.next_before;
    }
    assert_eq!(pages, [2, 2]);

    // Managers and employees may not read it; bad filters are refused.
    let mo = p.member(&owner, "mo", pb::Role::Manager).await;
    let ed = p.member(&owner, "ed", pb::Role::Employee).await;
    for session in [&mo, &ed] {
        let refused = orgs
            .list_history(history(session, pb::ListHistoryRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    for (bad, field) in [
        (
            pb::ListHistoryRequest {
                limit: 501,
                ..Default::default()
            },
            "limit",
        ),
        (
            pb::ListHistoryRequest {
                event_types: vec!["Member Invited".into()],
                ..Default::default()
            },
            "event_types",
        ),
        (
            pb::ListHistoryRequest {
                person_id: "not a person!".into(),
                ..Default::default()
            },
            "person_id",
        ),
    ] {
        let refused = orgs.list_history(history(&auditor, bad)).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().starts_with(field), "{refused:?}");
    }
}

/// A deactivation revokes the member's devices in the same commit: pages of
/// one entry still show every event once, the commit whole on one page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_never_cut_a_commit() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    let erin = p.member(&owner, "erin", pb::Role::Employee).await;
    p.enroll(&erin, "laptop").await;
    p.enroll(&erin, "desktop").await;
    let mut orgs = p.gw().orgs();
    let deactivated = orgs
        .deactivate_member(authed(
            &owner.access_token,
            pb::MemberRequest {
                command_id: "deactivate-erin".into(),
                org_id: "acme".into(),
                person_id: erin.person_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let all = orgs
        .list_history(history(
            &owner,
            pb::ListHistoryRequest {
                min_position: deactivated.position,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let newest: Vec<&str> = all.iter().take(3).map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        newest,
        ["DeviceRevoked", "DeviceRevoked", "MemberDeactivated"]
    );
    assert!(all[..3].iter().all(|e| e.position == deactivated.position));

    let mut paged = Vec::new();
    let mut sizes = Vec::new();
    let mut before = 0;
    loop {
        let page = orgs
            .list_history(history(
                &owner,
                pb::ListHistoryRequest {
                    before,
                    limit: 1,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.entries.len());
        paged.extend(page.entries);
        if page.next_before == 0 {
            break;
        }
        before = page.next_before;
    }
    assert_eq!(paged, all, "pages of one lost or repeated entries");
    assert_eq!(sizes[0], 3, "the three-event commit comes whole: {sizes:?}");

    let refused = orgs
        .list_history(history(
            &owner,
            pb::ListHistoryRequest {
                before: u64::MAX,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("before"), "{refused:?}");
}
