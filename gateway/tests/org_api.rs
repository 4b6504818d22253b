//! The organization API end to end: sign-up, invitations, roles, settings,
//! devices and the read models behind the queries, against real servers.

use tonic::Code;
use trackhrs_schemas::activity::v1::activity_client::ActivityClient;
use trackhrs_schemas::agent::v1::GetPolicyRequest;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::*;

async fn policy(p: &Platform, device_token: &str) -> trackhrs_schemas::agent::v1::Policy {
    p.gw()
        .agent()
        .get_policy(authed(device_token, GetPolicyRequest {}))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_is_run_through_the_api() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    assert_eq!(owner.role, pb::Role::Owner as i32);
    let mut orgs = p.gw().orgs();

    let org = orgs
        .get_organization(authed(
            &owner.access_token,
            pb::GetOrganizationRequest {
                org_id: "acme".into(),
                min_position: 1,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (org.name.as_str(), org.seats, org.active_members),
        ("Org acme", 5, 1)
    );

    // The owner invites an admin, who accepts and invites an employee.
    let admin = p.member(&owner, "ada", pb::Role::Admin).await;
    assert_eq!(admin.role, pb::Role::Admin as i32);
    let employee = p.member(&admin, "eve", pb::Role::Employee).await;

    // Settings: the privacy policy reaches the agent.
    let changed = orgs
        .change_settings(authed(
            &admin.access_token,
            pb::ChangeSettingsRequest {
                command_id: "settings-1".into(),
                org_id: "acme".into(),
                settings: Some(pb::Settings {
                    timezone: "Europe/Berlin".into(),
                    work_week: vec![1, 2, 3, 4],
                    capture_titles: false,
                    capture_urls: false,
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let org = orgs
        .get_organization(authed(
            &employee.access_token,
            pb::GetOrganizationRequest {
                org_id: "acme".into(),
                min_position: changed.position,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let settings = org.settings.unwrap();
    assert_eq!(
        (
            settings.timezone.as_str(),
            settings.work_week.len(),
            settings.capture_titles
        ),
        ("Europe/Berlin", 4, false)
    );
    assert!(org.position >= changed.position);

    // The employee enrolls a device; its token opens an agent session.
    let device = p.enroll(&employee, "Eve's laptop").await;
    let policy = policy(&p, &device.device_token).await;
    assert_eq!(
        (
            policy.person_id.as_str(),
            policy.device_id.as_str(),
            policy.capture_titles
        ),
        (
            employee.person_id.as_str(),
            device.device_id.as_str(),
            false
        )
    );
    // With the org's classification rules in force: the default rules while
    // it has none of its own (version 0).
    assert_eq!(policy.rules_version, 0);
    assert!(
        policy.category_rules.iter().any(|r| r.name == ["Work"]),
        "{:?}",
        policy.category_rules
    );

    // Employees list only their own devices and no members; auditors read all.
    let own = orgs
        .list_devices(authed(
            &employee.access_token,
            pb::ListDevicesRequest {
                org_id: "acme".into(),
                min_position: device.result.unwrap().position,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.devices.len(), 1);
    assert_code(
        orgs.list_members(authed(
            &employee.access_token,
            pb::ListMembersRequest {
                org_id: "acme".into(),
                min_position: 0,
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
        "employee lists members",
    );
    let auditor = p.member(&owner, "aud", pb::Role::Auditor).await;
    let members = orgs
        .list_members(authed(
            &auditor.access_token,
            pb::ListMembersRequest {
                org_id: "acme".into(),
                min_position: 0,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .members;
    let mut emails: Vec<_> = members.iter().map(|m| m.email.as_str()).collect();
    emails.sort();
    assert_eq!(
        emails,
        [
            "ada@acme.test",
            "aud@acme.test",
            "eve@acme.test",
            "olive@acme.test"
        ]
    );
    // Managers read every member's timeline, so they list every device.
    let manager = p.member(&owner, "max", pb::Role::Manager).await;
    let theirs = orgs
        .list_devices(authed(
            &manager.access_token,
            pb::ListDevicesRequest {
                org_id: "acme".into(),
                min_position: 0,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].person_id, employee.person_id);
    // The auditor changes nothing.
    assert_code(
        orgs.change_seats(authed(
            &auditor.access_token,
            pb::ChangeSeatsRequest {
                command_id: "aud-seats".into(),
                org_id: "acme".into(),
                seats: 9,
            },
        ))
        .await,
        Code::PermissionDenied,
        "auditor changes seats",
    );

    // Role change and deactivation: the deactivated member's device and
    // refresh token stop working at once.
    orgs.change_role(authed(
        &owner.access_token,
        pb::ChangeRoleRequest {
            command_id: "eve-manager".into(),
            org_id: "acme".into(),
            person_id: employee.person_id.clone(),
            role: pb::Role::Manager as i32,
        },
    ))
    .await
    .unwrap();
    let deactivated = orgs
        .deactivate_member(authed(
            &admin.access_token,
            pb::MemberRequest {
                command_id: "eve-out".into(),
                org_id: "acme".into(),
                person_id: employee.person_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_code(
        p.gw()
            .agent()
            .get_policy(authed(&device.device_token, GetPolicyRequest {}))
            .await,
        Code::Unauthenticated,
        "device of a deactivated member",
    );
    assert_code(
        p.gw()
            .identity()
            .refresh(pb::RefreshRequest {
                refresh_token: employee.refresh_token.clone(),
            })
            .await,
        Code::Unauthenticated,
        "refresh of a deactivated member",
    );
    assert_code(
        p.gw()
            .identity()
            .login(pb::LoginRequest {
                org_id: "acme".into(),
                email: "eve@acme.test".into(),
                password: PASSWORD.into(),
            })
            .await,
        Code::PermissionDenied,
        "log-in of a deactivated member",
    );
    let devices = orgs
        .list_devices(authed(
            &owner.access_token,
            pb::ListDevicesRequest {
                org_id: "acme".into(),
                min_position: deactivated.position,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert!(devices.iter().all(|d| d.revoked));

    // The last owner cannot be deactivated, even by an admin.
    let status = assert_code(
        orgs.deactivate_member(authed(
            &admin.access_token,
            pb::MemberRequest {
                command_id: "owner-out".into(),
                org_id: "acme".into(),
                person_id: owner.person_id.clone(),
            },
        ))
        .await,
        Code::PermissionDenied,
        "admin deactivates the owner",
    );
    assert!(status.message().contains("not allowed"));
    let status = assert_code(
        orgs.change_role(authed(
            &owner.access_token,
            pb::ChangeRoleRequest {
                command_id: "owner-demotes-self".into(),
                org_id: "acme".into(),
                person_id: owner.person_id.clone(),
                role: pb::Role::Admin as i32,
            },
        ))
        .await,
        Code::FailedPrecondition,
        "last owner demoted",
    );
    assert!(
        status.message().contains("at least one active owner"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_commands_return_the_original_result() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    // Signing up again with the same command id and password logs in again.
    let again = p.sign_up("acme", 5).await;
    assert_eq!(again.person_id, owner.person_id);
    let mut orgs = p.gw().orgs();
    let invite = || {
        authed(
            &owner.access_token,
            pb::InviteMemberRequest {
                command_id: "invite-bob".into(),
                org_id: "acme".into(),
                email: "bob@acme.test".into(),
                name: "Bob".into(),
                role: pb::Role::Employee as i32,
            },
        )
    };
    let first = orgs.invite_member(invite()).await.unwrap().into_inner();
    let before = p.last_sequence().await;
    let second = orgs.invite_member(invite()).await.unwrap().into_inner();
    assert_eq!(p.last_sequence().await, before, "a retry stores nothing");
    assert_eq!(second.person_id, first.person_id);
    let (a, b) = (first.result.unwrap(), second.result.unwrap());
    assert_eq!(
        (a.version, a.position, a.duplicate),
        (b.version, b.position, false)
    );
    assert!(b.position > 0);
    // The retry's invitation replaces the first: only the newest token works.
    assert_code(
        p.gw()
            .identity()
            .accept_invitation(pb::AcceptInvitationRequest {
                org_id: "acme".into(),
                invitation_token: first.invitation_token,
                password: PASSWORD.into(),
            })
            .await,
        Code::Unauthenticated,
        "replaced invitation",
    );
    let bob = p
        .gw()
        .identity()
        .accept_invitation(pb::AcceptInvitationRequest {
            org_id: "acme".into(),
            invitation_token: second.invitation_token.clone(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob.person_id, first.person_id);
    // An invitation is single-use.
    assert_code(
        p.gw()
            .identity()
            .accept_invitation(pb::AcceptInvitationRequest {
                org_id: "acme".into(),
                invitation_token: second.invitation_token,
                password: PASSWORD.into(),
            })
            .await,
        Code::Unauthenticated,
        "spent invitation",
    );
    // Retrying the invitation's command id now does not reopen the account.
    let status = assert_code(
        orgs.invite_member(invite()).await,
        Code::FailedPrecondition,
        "invitation retried after it was accepted",
    );
    assert!(
        status.message().contains("already accepted"),
        "{}",
        status.message()
    );
    // A different sign-up for a taken org id is refused, stores nothing.
    let before = (p.last_sequence().await, p.credential_rows().await);
    let status = assert_code(
        p.gw()
            .identity()
            .sign_up(pb::SignUpRequest {
                command_id: "someone-else".into(),
                org_id: "acme".into(),
                org_name: "Other".into(),
                owner_name: "Mallory".into(),
                owner_email: "mallory@evil.test".into(),
                password: "another long password".into(),
                seats: 1,
            })
            .await,
        Code::FailedPrecondition,
        "sign-up of a taken org id",
    );
    assert!(status.message().contains("already exists"));
    assert_eq!((p.last_sequence().await, p.credential_rows().await), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_invitation_is_sent_again() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    let mut orgs = p.gw().orgs();
    let first = orgs
        .invite_member(authed(
            &owner.access_token,
            pb::InviteMemberRequest {
                command_id: "invite-dan".into(),
                org_id: "acme".into(),
                email: "dan@acme.test".into(),
                name: "Dan".into(),
                role: pb::Role::Employee as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    p.caught_up().await;
    let resend = || {
        authed(
            &owner.access_token,
            pb::ResendInvitationRequest {
                org_id: "acme".into(),
                person_id: first.person_id.clone(),
            },
        )
    };
    let again = orgs.resend_invitation(resend()).await.unwrap().into_inner();
    assert_ne!(again.invitation_token, first.invitation_token);
    let accept = |token: &str| pb::AcceptInvitationRequest {
        org_id: "acme".into(),
        invitation_token: token.into(),
        password: PASSWORD.into(),
    };
    let mut id = p.gw().identity();
    assert_code(
        id.accept_invitation(accept(&first.invitation_token)).await,
        Code::Unauthenticated,
        "the replaced invitation",
    );
    let dan = id
        .accept_invitation(accept(&again.invitation_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dan.person_id, first.person_id);
    assert_code(
        orgs.resend_invitation(resend()).await,
        Code::FailedPrecondition,
        "an invitation already accepted",
    );
    p.caught_up().await;
    assert_code(
        orgs.resend_invitation(authed(
            &dan.access_token,
            pb::ResendInvitationRequest {
                org_id: "acme".into(),
                person_id: owner.person_id.clone(),
            },
        ))
        .await,
        Code::PermissionDenied,
        "an employee sending invitations",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_invitations_race_for_the_last_three_seats() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 4).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut orgs = p.gw().orgs();
        let token = owner.access_token.clone();
        tasks.push(tokio::spawn(async move {
            orgs.invite_member(authed(
                &token,
                pb::InviteMemberRequest {
                    command_id: format!("race-{i}"),
                    org_id: "acme".into(),
                    email: format!("racer{i}@acme.test"),
                    name: format!("Racer {i}"),
                    role: pb::Role::Employee as i32,
                },
            ))
            .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::FailedPrecondition,
                    "{}",
                    status.message()
                );
                assert!(
                    status.message().contains("seats are taken"),
                    "{}",
                    status.message()
                );
            }
        }
    }
    assert_eq!(ok, 3);
    let org = p
        .gw()
        .orgs()
        .get_organization(authed(
            &owner.access_token,
            pb::GetOrganizationRequest {
                org_id: "acme".into(),
                min_position: p.last_sequence().await,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((org.active_members, org.seats), (4, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_comes_from_the_organization_without_waiting_for_read_models() {
    // No activity read model: the policy and its rules come from the
    // organization's aggregate, the same source ingest admits uploads by.
    let p = Platform::start_without_activity().await;
    let owner = p.sign_up("norules", 3).await;
    let device = p.enroll(&owner, "Laptop").await;
    let policy = policy(&p, &device.device_token).await;
    assert_eq!(policy.device_id, device.device_id);
    let defaults = trackhrs_domain::classifier::Rules::default_rules().len();
    assert_eq!(
        (policy.rules_version, policy.category_rules.len()),
        (0, defaults)
    );
    let rules = vec![trackhrs_schemas::activity::v1::CategoryRule {
        name: vec!["Work".into()],
        regex: Some("editor".into()),
        ignore_case: true,
        score: Some(100),
    }];
    ActivityClient::new(p.gw().channel.clone())
        .set_category_rules(authed(
            &owner.access_token,
            trackhrs_schemas::activity::v1::SetCategoryRulesRequest {
                command_id: "rules-1".into(),
                org_id: "norules".into(),
                rules,
                activitywatch_json: String::new(),
            },
        ))
        .await
        .unwrap();
    let policy = self::policy(&p, &device.device_token).await;
    assert_eq!((policy.rules_version, policy.category_rules.len()), (1, 1));
    assert_eq!(policy.category_rules[0].regex.as_deref(), Some("editor"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_show_who_has_yet_to_accept_their_invitation() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    let invited = p
        .gw()
        .orgs()
        .invite_member(authed(
            &owner.access_token,
            pb::InviteMemberRequest {
                command_id: "invite-ivy".into(),
                org_id: "acme".into(),
                email: "ivy@acme.test".into(),
                name: "Ivy".into(),
                role: pb::Role::Employee as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    p.caught_up().await;
    let pending = |members: &[pb::Member]| -> Vec<(String, bool, bool)> {
        members
            .iter()
            .map(|m| (m.person_id.clone(), m.active, m.invitation_pending))
            .collect()
    };
    let list = || {
        let mut orgs = p.gw().orgs();
        let request = authed(
            &owner.access_token,
            pb::ListMembersRequest {
                org_id: "acme".into(),
                min_position: 0,
                ..Default::default()
            },
        );
        async move {
            orgs.list_members(request)
                .await
                .unwrap()
                .into_inner()
                .members
        }
    };
    let mut expected = vec![
        (owner.person_id.clone(), true, false),
        (invited.person_id.clone(), true, true),
    ];
    expected.sort();
    let mut seen = pending(&list().await);
    seen.sort();
    assert_eq!(seen, expected);
    p.gw()
        .identity()
        .accept_invitation(pb::AcceptInvitationRequest {
            org_id: "acme".into(),
            invitation_token: invited.invitation_token,
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    assert!(list().await.iter().all(|m| !m.invitation_pending));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_and_a_reactivation_read_back() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;
    let erin = p.member(&owner, "erin", pb::Role::Employee).await;
    let erin_id = erin.person_id.clone();
    let member = |command_id: &str| pb::MemberRequest {
        command_id: command_id.into(),
        org_id: "acme".into(),
        person_id: erin_id.clone(),
    };
    // Erin's (role, active) as ListMembers shows them at `position`.
    async fn seen(p: &Platform, token: &str, erin: &str, position: u64) -> (i32, bool) {
        let request = authed(
            token,
            pb::ListMembersRequest {
                org_id: "acme".into(),
                min_position: position,
                ..Default::default()
            },
        );
        let all = p
            .gw()
            .orgs()
            .list_members(request)
            .await
            .unwrap()
            .into_inner()
            .members;
        all.into_iter()
            .find(|m| m.person_id == erin)
            .map(|m| (m.role, m.active))
            .unwrap()
    }
    async fn login(p: &Platform) -> Result<tonic::Response<pb::Session>, tonic::Status> {
        p.gw()
            .identity()
            .login(pb::LoginRequest {
                org_id: "acme".into(),
                email: "erin@acme.test".into(),
                password: PASSWORD.into(),
            })
            .await
    }
    let token = owner.access_token.as_str();
    let mut orgs = p.gw().orgs();
    let promoted = orgs
        .change_role(authed(
            token,
            pb::ChangeRoleRequest {
                command_id: "promote-erin".into(),
                org_id: "acme".into(),
                person_id: erin_id.clone(),
                role: pb::Role::Manager as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        seen(&p, token, &erin_id, promoted.position).await,
        (pb::Role::Manager as i32, true)
    );
    let deactivated = orgs
        .deactivate_member(authed(token, member("deactivate-erin")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        seen(&p, token, &erin_id, deactivated.position).await,
        (pb::Role::Manager as i32, false)
    );
    assert_code(
        login(&p).await,
        Code::PermissionDenied,
        "a deactivated member's log-in",
    );
    let reactivated = orgs
        .reactivate_member(authed(token, member("reactivate-erin")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        seen(&p, token, &erin_id, reactivated.position).await,
        (pb::Role::Manager as i32, true)
    );
    let session = login(&p).await.unwrap().into_inner();
    assert_eq!(session.role, pb::Role::Manager as i32);
}

/// Writes `n` members of `org` with the longest names (200 four-byte
/// characters) and e-mail addresses the domain accepts straight into the
/// directory read model (inviting 20,000 people through the API would take
/// the test minutes), and as many devices of the first member.
async fn crowd(p: &Platform, org: &str, n: i32, device_of: &str) {
    use trackhrs_domain::organization::{MAX_EMAIL_LEN, MAX_NAME_CHARS};
    let pg = p.db.connect().await.unwrap();
    let dir = trackhrs_projections::live_schema(&pg, "org_directory")
        .await
        .unwrap()
        .unwrap();
    let name = "\u{1D11E}".repeat(MAX_NAME_CHARS);
    // "m000001@" + padding + ".example": exactly the longest address.
    let padding = "x".repeat(MAX_EMAIL_LEN - "m000001@".len() - ".example".len());
    pg.execute(
        &format!(
            "INSERT INTO {dir}.members (org_id, person_id, email, name, role, active, position) \
             SELECT $1, 'm' || lpad(i::text, 6, '0'), 'm' || lpad(i::text, 6, '0') || '@' || $2 || '.example', \
                    $3, 'employee', true, 1 FROM generate_series(1, $4::int) i"
        ),
        &[&org, &padding, &name, &n],
    )
    .await
    .unwrap();
    pg.execute(
        &format!(
            "INSERT INTO {dir}.devices (org_id, device_id, person_id, name, revoked, position) \
             SELECT $1, 'd' || lpad(i::text, 6, '0'), $2, $3, false, 1 FROM generate_series(1, $4::int) i"
        ),
        &[&org, &device_of, &name, &n],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_members_come_in_pages_under_four_mib() {
    use prost::Message;
    const FOUR_MIB: usize = 4 << 20;
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    let employee = p.member(&owner, "eve", pb::Role::Employee).await;
    crowd(&p, "acme", 20_000, &owner.person_id).await;
    let mut orgs = p.gw().orgs();

    // The largest pages, then the default ones: every member once, in
    // order, each page within the client's 4 MiB.
    for limit in [1000, 0] {
        let (mut seen, mut after, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let page = orgs
                .list_members(authed(
                    &owner.access_token,
                    pb::ListMembersRequest {
                        org_id: "acme".into(),
                        after: after.clone(),
                        limit,
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            // Within the client's 4 MiB, and the README's 1.3 MiB.
            assert!(page.encoded_len() < FOUR_MIB, "{}", page.encoded_len());
            assert!(
                page.encoded_len() < (13 << 20) / 10,
                "{}",
                page.encoded_len()
            );
            let full = if limit == 0 { 500 } else { 1000 };
            assert!(page.members.len() == full || page.next_after.is_empty());
            pages += 1;
            seen.extend(
                page.members
                    .into_iter()
                    .map(|m| (m.person_id, m.invitation_pending)),
            );
            if page.next_after.is_empty() {
                break;
            }
            after = page.next_after;
        }
        assert_eq!(seen.len(), 20_002, "limit {limit}");
        assert!(
            seen.windows(2).all(|w| w[0].0 < w[1].0),
            "in order, once each"
        );
        assert_eq!(pages, if limit == 0 { 41 } else { 21 });
        // Who has an account is read for each page's members.
        for (person, pending) in &seen {
            let has_account = *person == owner.person_id || *person == employee.person_id;
            assert_eq!(*pending, !has_account, "{person}");
        }
    }

    // The owner's 20,000 devices, by pages of that member's devices.
    let (mut devices, mut after) = (0, String::new());
    loop {
        let page = orgs
            .list_devices(authed(
                &owner.access_token,
                pb::ListDevicesRequest {
                    org_id: "acme".into(),
                    person_id: owner.person_id.clone(),
                    after: after.clone(),
                    limit: 1000,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.encoded_len() < FOUR_MIB);
        assert!(page.devices.iter().all(|d| d.person_id == owner.person_id));
        devices += page.devices.len();
        if page.next_after.is_empty() {
            break;
        }
        after = page.next_after;
    }
    assert_eq!(devices, 20_000);

    // An employee lists only their own devices (none), and may not ask for
    // another member's.
    let mine = orgs
        .list_devices(authed(
            &employee.access_token,
            pb::ListDevicesRequest {
                org_id: "acme".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(mine.devices.is_empty() && mine.next_after.is_empty());
    assert_code(
        orgs.list_devices(authed(
            &employee.access_token,
            pb::ListDevicesRequest {
                org_id: "acme".into(),
                person_id: owner.person_id.clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
        "another member's devices",
    );

    // Bad pages are refused, naming the field.
    for (after, limit, field) in [("", 1001, "limit"), ("not an id!", 10, "after")] {
        let refused = orgs
            .list_members(authed(
                &owner.access_token,
                pb::ListMembersRequest {
                    org_id: "acme".into(),
                    after: after.into(),
                    limit,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            refused.message().starts_with(field),
            "{}",
            refused.message()
        );
    }
}
