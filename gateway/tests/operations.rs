//! Operators (owners and admins of the operator organization) read the read
//! models' versions and lag and their dead letters, and replay them; every
//! other caller, an owner of another org included, is refused.

use tonic::Code;
use trackhrs_app::AppConfig;
use trackhrs_domain::Token;
use trackhrs_schemas::ops::v1 as pb;
use trackhrs_schemas::ops::v1::operations_client::OperationsClient;
use trackhrs_schemas::org::v1 as org_pb;
use trackhrs_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_the_read_models_and_replay_dead_letters() {
    // The operator org is signed up before any gateway names it; gateways
    // started with --operator-org then refuse its id on sign-up.
    let mut p = Platform::start().await;
    let operator = p.sign_up("ops", 5).await;
    let ops_admin = p.member(&operator, "alma", org_pb::Role::Admin).await;
    let ops_auditor = p.member(&operator, "audrey", org_pb::Role::Auditor).await;
    let ops_manager = p.member(&operator, "mick", org_pb::Role::Manager).await;
    let tenant = p.sign_up("acme", 5).await;
    p.add_replica(AppConfig {
        operator_org: Some(Token::new("ops").unwrap()),
        ..AppConfig::default()
    })
    .await;
    let operating = p.replicas[1].channel.clone();
    let mut client = OperationsClient::new(operating.clone());

    for session in [&operator, &ops_admin] {
        let listed = client
            .list_projections(authed(&session.access_token, pb::ListProjectionsRequest {}))
            .await
            .unwrap()
            .into_inner();
        let live: Vec<&str> = listed
            .versions
            .iter()
            .filter(|v| v.state == "live")
            .map(|v| v.name.as_str())
            .collect();
        for name in [
            "activity",
            "org_directory",
            "org_history",
            "revocation",
            "timeline",
        ] {
            assert!(live.contains(&name), "{name} is not live: {listed:?}");
        }
        let directory = listed
            .versions
            .iter()
            .find(|v| v.name == "org_directory")
            .unwrap();
        assert!(
            directory.position > 0 && directory.events_applied >= 5,
            "{directory:?}"
        );
        assert!(listed.stream_last_sequence >= directory.position);

        let letters = client
            .list_dead_letters(authed(
                &session.access_token,
                pb::ListDeadLettersRequest {
                    projection: "activity".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(letters.letters.is_empty());
        let replayed = client
            .replay_dead_letters(authed(
                &session.access_token,
                pb::ReplayDeadLettersRequest {
                    projection: "activity".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((replayed.replayed, replayed.already_applied), (0, 0));
    }

    // Owners of other orgs and the operator org's other roles get the answer
    // of any read they may not make.
    for session in [&tenant, &ops_auditor, &ops_manager] {
        let refused = client
            .list_projections(authed(&session.access_token, pb::ListProjectionsRequest {}))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        let refused = client
            .replay_dead_letters(authed(
                &session.access_token,
                pb::ReplayDeadLettersRequest {
                    projection: "activity".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    let anonymous = client
        .list_projections(pb::ListProjectionsRequest {})
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    // Names that are no read model's are refused with the field named.
    for (name, why) in [
        ("nonsense", "no read model is called"),
        ("Bad Name", "must be a read model's name"),
        ("", "required"),
    ] {
        let refused = client
            .replay_dead_letters(authed(
                &operator.access_token,
                pb::ReplayDeadLettersRequest {
                    projection: name.into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().starts_with("projection") && refused.message().contains(why),
            "{refused:?}"
        );
    }
}

/// A stranger cannot become an operator by signing up the operator org's id
/// before anyone did: a gateway that names it refuses the sign-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_orgs_id_cannot_be_signed_up() {
    let p = Platform::start_with(
        AppConfig {
            operator_org: Some(Token::new("ops").unwrap()),
            ..AppConfig::default()
        },
        1,
    )
    .await;
    let before = (p.last_sequence().await, p.credential_rows().await);
    let refused = p
        .gw()
        .identity()
        .sign_up(org_pb::SignUpRequest {
            command_id: "grab-ops".into(),
            org_id: "ops".into(),
            org_name: "Mine now".into(),
            owner_name: "Mallory".into(),
            owner_email: "mallory@evil.test".into(),
            password: PASSWORD.into(),
            seats: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(
        (p.last_sequence().await, p.credential_rows().await),
        before,
        "the refused sign-up left a trace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_operator_org_nobody_operates() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    let refused = OperationsClient::new(p.gw().channel.clone())
        .list_projections(authed(&owner.access_token, pb::ListProjectionsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_what_each_org_stores() {
    use std::collections::BTreeMap;
    use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
    use trackhrs_schemas::agent::v1::{Span, UploadBatchRequest};
    let mut p = Platform::start().await;
    let operator = p.sign_up("ops", 5).await;
    let acme = p.sign_up("acme", 5).await;
    let globex = p.sign_up("globex", 5).await;
    p.member(&globex, "gina", org_pb::Role::Employee).await;
    let device = p.enroll(&acme, "laptop").await;
    let start = trackhrs_credentials::now_secs() * 1000 - 3_600_000;
    for seq in 1..=3 {
        AgentIngestClient::new(p.gw().channel.clone())
            .upload_batch(authed(
                &device.device_token,
                UploadBatchRequest {
                    batch_id: format!("b{seq}"),
                    device_batch_seq: seq,
                    spans: (0..20)
                        .map(|i| {
                            let at = start + (seq as i64 * 20 + i) * 10_000;
                            Span {
                                start_unix_ms: at,
                                end_unix_ms: at + 10_000,
                                app: "code".into(),
                                title: format!("a window title {i}"),
                                url: None,
                                active: true,
                            }
                        })
                        .collect(),
                    retractions: vec![],
                },
            ))
            .await
            .unwrap();
    }
    p.add_replica(AppConfig {
        operator_org: Some(Token::new("ops").unwrap()),
        ..AppConfig::default()
    })
    .await;
    let mut client = OperationsClient::new(p.replicas[1].channel.clone());

    // What the stream holds, message by message, per (org, aggregate type).
    let last = p.last_sequence().await;
    let js = async_nats::jetstream::new(p.nats.connect_admin().await.unwrap());
    let stream = js.get_stream("TRACKHRS_EVENTS").await.unwrap();
    let mut expected: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for seq in 1..=last {
        let msg = stream.get_raw_message(seq).await.unwrap();
        let parts: Vec<&str> = msg.subject.split('.').collect();
        let sum = expected
            .entry((parts[1].to_owned(), parts[2].to_owned()))
            .or_default();
        sum.0 += 1;
        sum.1 += msg.payload.len() as u64;
    }

    let usage = client
        .list_org_usage(authed(
            &operator.access_token,
            pb::ListOrgUsageRequest {
                limit: 0,
                min_position: last,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(usage.position >= last);
    let mut seen: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for org in &usage.orgs {
        let kinds: (u64, u64) = org
            .kinds
            .iter()
            .fold((0, 0), |s, k| (s.0 + k.messages, s.1 + k.bytes));
        assert_eq!(kinds, (org.messages, org.bytes), "{org:?}");
        for k in &org.kinds {
            seen.insert(
                (org.org_id.clone(), k.aggregate.clone()),
                (k.messages, k.bytes),
            );
        }
    }
    assert_eq!(seen, expected);
    // Largest first: acme's uploads outweigh the others' sign-ups.
    let order: Vec<&str> = usage.orgs.iter().map(|o| o.org_id.as_str()).collect();
    assert_eq!(order[0], "acme", "{order:?}");
    assert_eq!(usage.orgs[0].kinds[0].aggregate, "device_activity");
    assert!(usage.orgs.windows(2).all(|w| w[0].bytes >= w[1].bytes));
    let one = client
        .list_org_usage(authed(
            &operator.access_token,
            pb::ListOrgUsageRequest {
                limit: 1,
                min_position: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.orgs.len(), 1);

    // Tenants see none of it; a limit beyond 1,000 is refused.
    let refused = client
        .list_org_usage(authed(
            &acme.access_token,
            pb::ListOrgUsageRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = client
        .list_org_usage(authed(
            &operator.access_token,
            pb::ListOrgUsageRequest {
                limit: 1001,
                min_position: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}
