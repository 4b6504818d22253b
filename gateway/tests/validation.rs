//! Malformed input is INVALID_ARGUMENT naming the field, and nothing is stored.

use tonic::Code;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::*;

fn sign_up() -> pb::SignUpRequest {
    pb::SignUpRequest {
        command_id: "sign-up".into(),
        org_id: "acme".into(),
        org_name: "Acme".into(),
        owner_name: "Olive".into(),
        owner_email: "olive@acme.test".into(),
        password: PASSWORD.into(),
        seats: 5,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_names_the_field_and_stores_nothing() {
    let p = Platform::start().await;
    let mut id = p.gw().identity();
    let long = "x".repeat(201);
    let cases: Vec<(&str, pb::SignUpRequest)> = vec![
        (
            "org_name",
            pb::SignUpRequest {
                org_name: "   ".into(),
                ..sign_up()
            },
        ),
        (
            "org_name",
            pb::SignUpRequest {
                org_name: long.clone(),
                ..sign_up()
            },
        ),
        (
            "owner_name",
            pb::SignUpRequest {
                owner_name: String::new(),
                ..sign_up()
            },
        ),
        (
            "owner_name",
            pb::SignUpRequest {
                owner_name: long.clone(),
                ..sign_up()
            },
        ),
        (
            "owner_email",
            pb::SignUpRequest {
                owner_email: "olive".into(),
                ..sign_up()
            },
        ),
        (
            "owner_email",
            pb::SignUpRequest {
                owner_email: "olive@acme".into(),
                ..sign_up()
            },
        ),
        (
            "owner_email",
            pb::SignUpRequest {
                owner_email: format!("{long}@acme.test{long}"),
                ..sign_up()
            },
        ),
        (
            "password",
            pb::SignUpRequest {
                password: "short".into(),
                ..sign_up()
            },
        ),
        (
            "password",
            pb::SignUpRequest {
                password: "password1234".into(),
                ..sign_up()
            },
        ),
        (
            "password",
            pb::SignUpRequest {
                password: "olive-olive-olive".into(),
                ..sign_up()
            },
        ),
        (
            "org_id",
            pb::SignUpRequest {
                org_id: "acme corp".into(),
                ..sign_up()
            },
        ),
        (
            "org_id",
            pb::SignUpRequest {
                org_id: String::new(),
                ..sign_up()
            },
        ),
        (
            "command_id",
            pb::SignUpRequest {
                command_id: String::new(),
                ..sign_up()
            },
        ),
        (
            "seats",
            pb::SignUpRequest {
                seats: 0,
                ..sign_up()
            },
        ),
    ];
    for (field, request) in cases {
        let status = assert_code(id.sign_up(request).await, Code::InvalidArgument, field);
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{field}: {}",
            status.message()
        );
    }
    assert_eq!((p.last_sequence().await, p.credential_rows().await), (0, 0));

    let owner = p.sign_up("acme", 5).await;
    let before = (p.last_sequence().await, p.credential_rows().await);
    let mut orgs = p.gw().orgs();
    let invite = |email: &str, name: &str, role: pb::Role| {
        authed(
            &owner.access_token,
            pb::InviteMemberRequest {
                command_id: "invite".into(),
                org_id: "acme".into(),
                email: email.into(),
                name: name.into(),
                role: role as i32,
            },
        )
    };
    for (field, request) in [
        ("email", invite("not-an-email", "Bob", pb::Role::Employee)),
        ("name", invite("bob@acme.test", "", pb::Role::Employee)),
        ("name", invite("bob@acme.test", &long, pb::Role::Employee)),
        (
            "role",
            invite("bob@acme.test", "Bob", pb::Role::Unspecified),
        ),
    ] {
        let status = assert_code(
            orgs.invite_member(request).await,
            Code::InvalidArgument,
            field,
        );
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{}",
            status.message()
        );
    }
    let status = assert_code(
        orgs.change_settings(authed(
            &owner.access_token,
            pb::ChangeSettingsRequest {
                command_id: "tz".into(),
                org_id: "acme".into(),
                settings: Some(pb::Settings {
                    timezone: "Mars/Olympus_Mons".into(),
                    work_week: vec![1],
                    ..Default::default()
                }),
            },
        ))
        .await,
        Code::InvalidArgument,
        "timezone",
    );
    assert!(status.message().starts_with("settings.timezone: "));
    let status = assert_code(
        orgs.enroll_device(authed(
            &owner.access_token,
            pb::EnrollDeviceRequest {
                command_id: "enroll".into(),
                org_id: "acme".into(),
                name: "\u{7}bell".into(),
            },
        ))
        .await,
        Code::InvalidArgument,
        "device name",
    );
    assert!(status.message().starts_with("name: "));
    let status = assert_code(
        p.gw()
            .identity()
            .accept_invitation(pb::AcceptInvitationRequest {
                org_id: "acme".into(),
                invitation_token: "thi_whatever".into(),
                password: "weak".into(),
            })
            .await,
        Code::InvalidArgument,
        "weak invitation password",
    );
    assert!(status.message().starts_with("password: "));
    assert_eq!((p.last_sequence().await, p.credential_rows().await), before);
}
