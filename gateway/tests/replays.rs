//! A replayed command id returns the stored result, but never a fresh secret
//! to someone who may no longer ask for it, and never a side effect that
//! would undo what happened since.

use tonic::Code;
use trackhrs_schemas::agent::v1::GetPolicyRequest;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::*;

fn invite(org: &str, command_id: &str, email: &str, role: pb::Role) -> pb::InviteMemberRequest {
    pb::InviteMemberRequest {
        command_id: command_id.into(),
        org_id: org.into(),
        email: email.into(),
        name: "Zoe".into(),
        role: role as i32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_admin_replaying_an_invite_gets_no_new_invitation() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    let admin = p.member(&owner, "adam", pb::Role::Admin).await;
    let first = p
        .gw()
        .orgs()
        .invite_member(authed(
            &admin.access_token,
            invite("acme", "invite-zoe", "zoe@acme.test", pb::Role::Employee),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.invitation_token.is_empty());
    // While still an admin, a replay is answered with the stored result.
    let again = p
        .gw()
        .orgs()
        .invite_member(authed(
            &admin.access_token,
            invite("acme", "invite-zoe", "zoe@acme.test", pb::Role::Employee),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(again.result.unwrap().duplicate);
    p.gw()
        .orgs()
        .change_role(authed(
            &owner.access_token,
            pb::ChangeRoleRequest {
                command_id: "demote-adam".into(),
                org_id: "acme".into(),
                person_id: admin.person_id.clone(),
                role: pb::Role::Employee as i32,
            },
        ))
        .await
        .unwrap();
    let rows = p.credential_rows().await;
    // The access token still says admin; the replay is checked on the
    // organization as it is now.
    assert_code(
        p.gw()
            .orgs()
            .invite_member(authed(
                &admin.access_token,
                invite("acme", "invite-zoe", "zoe@acme.test", pb::Role::Employee),
            ))
            .await,
        Code::PermissionDenied,
        "a demoted admin's replayed invite",
    );
    assert_eq!(p.credential_rows().await, rows, "a credential was written");
    // The token handed out before still works: nothing was replaced.
    p.gw()
        .identity()
        .accept_invitation(pb::AcceptInvitationRequest {
            org_id: "acme".into(),
            invitation_token: again.invitation_token,
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cannot_resend_an_owners_invitation() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    let admin = p.member(&owner, "adam", pb::Role::Admin).await;
    let invited = p
        .gw()
        .orgs()
        .invite_member(authed(
            &owner.access_token,
            invite("acme", "invite-co-owner", "otto@acme.test", pb::Role::Owner),
        ))
        .await
        .unwrap()
        .into_inner();
    p.caught_up().await;
    let resend = |token: &str| {
        let mut orgs = p.gw().orgs();
        let request = authed(
            token,
            pb::ResendInvitationRequest {
                org_id: "acme".into(),
                person_id: invited.person_id.clone(),
            },
        );
        async move { orgs.resend_invitation(request).await }
    };
    let rows = p.credential_rows().await;
    assert_code(
        resend(&admin.access_token).await,
        Code::PermissionDenied,
        "an admin resending an owner's invitation",
    );
    assert_eq!(p.credential_rows().await, rows, "a credential was written");
    // The owner may, and the new token makes the co-owner.
    let sent = resend(&owner.access_token).await.unwrap().into_inner();
    let session = p
        .gw()
        .identity()
        .accept_invitation(pb::AcceptInvitationRequest {
            org_id: "acme".into(),
            invitation_token: sent.invitation_token,
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.role, pb::Role::Owner as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_retry_of_a_deactivation_revokes_nothing_issued_after_a_reactivation() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    let erin = p.member(&owner, "erin", pb::Role::Employee).await;
    let member = |command_id: &str| pb::MemberRequest {
        command_id: command_id.into(),
        org_id: "acme".into(),
        person_id: erin.person_id.clone(),
    };
    let mut orgs = p.gw().orgs();
    orgs.deactivate_member(authed(&owner.access_token, member("deactivate-erin")))
        .await
        .unwrap();
    // Her old session is gone.
    assert_code(
        p.gw()
            .identity()
            .refresh(pb::RefreshRequest {
                refresh_token: erin.refresh_token.clone(),
            })
            .await,
        Code::Unauthenticated,
        "a deactivated member's refresh",
    );
    orgs.reactivate_member(authed(&owner.access_token, member("reactivate-erin")))
        .await
        .unwrap();
    let again = p
        .gw()
        .identity()
        .login(pb::LoginRequest {
            org_id: "acme".into(),
            email: "erin@acme.test".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let device = p.enroll(&again, "Laptop").await;
    // The owner's client retries the old deactivation.
    let retried = orgs
        .deactivate_member(authed(&owner.access_token, member("deactivate-erin")))
        .await
        .unwrap()
        .into_inner();
    assert!(retried.duplicate);
    p.caught_up().await;
    p.gw()
        .agent()
        .get_policy(authed(&device.device_token, GetPolicyRequest {}))
        .await
        .expect("the device enrolled after the reactivation still works");
    p.gw()
        .identity()
        .refresh(pb::RefreshRequest {
            refresh_token: again.refresh_token,
        })
        .await
        .expect("the session after the reactivation still works");
}
