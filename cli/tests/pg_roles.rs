//! Least privilege on PostgreSQL, tried against a real server: the roles of
//! `infra/postgres/roles.sql`; `trackhrs migrate` applies the credential
//! schema as the migration role; the gateway and the projections run under
//! their own roles and the platform works (sign-up, invitation, the member
//! list read from the read model, a deactivation revoked by the policy);
//! then each role tries what it must not do and is refused.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use trackhrs_harness::paths::free_port;
use trackhrs_harness::{NatsServer, PgServer, wait_until};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::org::v1::identity_client::IdentityClient;
use trackhrs_schemas::org::v1::organizations_client::OrganizationsClient;

fn url(port: u16, user: &str) -> String {
    format!("host=127.0.0.1 port={port} user={user} dbname=trackhrs")
}

async fn connect(port: u16, user: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&url(port, user), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Runs `sql` as `client`'s role and returns the SQLSTATE it was refused
/// with; fails the test if it is allowed.
async fn refused(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("allowed: {sql}"),
        Err(e) => e.code().map(|c| c.code().to_owned()).unwrap_or_default(),
    }
}

fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_runs_under_its_own_role_and_is_refused_the_rest() {
    let pg = PgServer::start_private().await.unwrap();
    let port = pg.port();
    let superuser = connect_db(port, "postgres").await;
    superuser
        .batch_execute("CREATE DATABASE trackhrs")
        .await
        .unwrap();
    let admin = connect(port, "postgres").await;
    admin
        .batch_execute(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../infra/postgres/roles.sql"),
            )
            .unwrap(),
        )
        .await
        .unwrap();

    let nats = NatsServer::start().await.unwrap();
    let nats_url = nats.url();
    let env = |user: &str| {
        vec![
            ("TRACKHRS_NATS_URL", nats_url.clone()),
            ("TRACKHRS_DATABASE_URL", url(port, user)),
            ("TRACKHRS_KEK", trackhrs_harness::TEST_KEK.to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
    };
    let run = |args: &[&str], e: Vec<(&'static str, String)>| {
        let refs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        common::trackhrs(args, &refs)
    };
    run(&["provision"], env("trackhrs_migrate"));
    run(
        &[
            "migrate",
            "--grant-gateway",
            "trackhrs_gateway",
            "--grant-projections",
            "trackhrs_projections",
        ],
        env("trackhrs_migrate"),
    );

    let spawn = |args: Vec<String>, e: Vec<(&'static str, String)>| {
        common::KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_trackhrs"))
                .args(args)
                .envs(e)
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _projections = spawn(
        vec!["projections".into(), "run".into()],
        env("trackhrs_projections"),
    );
    let grpc = free_port();
    let _gateway = spawn(
        vec![
            "gateway".into(),
            "--listen".into(),
            format!("127.0.0.1:{grpc}"),
        ],
        env("trackhrs_gateway"),
    );
    let channel: tonic::transport::Channel = wait_until(Duration::from_secs(60), || async move {
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
            .ok()?
            .connect()
            .await
            .ok()
    })
    .await
    .expect("the gateway did not come up under its role");

    // The platform works under these roles.
    let owner = IdentityClient::new(channel.clone())
        .sign_up(pb::SignUpRequest {
            command_id: "sign-up".into(),
            org_id: "acme".into(),
            org_name: "Acme".into(),
            owner_name: "Olive".into(),
            owner_email: "olive@acme.test".into(),
            password: "correct horse battery".into(),
            seats: 5,
        })
        .await
        .unwrap()
        .into_inner();
    let mut orgs = OrganizationsClient::new(channel.clone());
    let invited = orgs
        .invite_member(authed(
            &owner.access_token,
            pb::InviteMemberRequest {
                command_id: "invite-erin".into(),
                org_id: "acme".into(),
                email: "erin@acme.test".into(),
                name: "Erin".into(),
                role: pb::Role::Employee as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    IdentityClient::new(channel.clone())
        .accept_invitation(pb::AcceptInvitationRequest {
            org_id: "acme".into(),
            invitation_token: invited.invitation_token,
            password: "correct horse battery".into(),
        })
        .await
        .unwrap();
    let deactivated = orgs
        .deactivate_member(authed(
            &owner.access_token,
            pb::MemberRequest {
                command_id: "deactivate-erin".into(),
                org_id: "acme".into(),
                person_id: invited.person_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let position = deactivated.position;
    let members = orgs
        .list_members(authed(
            &owner.access_token,
            pb::ListMembersRequest {
                org_id: "acme".into(),
                min_position: position,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), 2, "the gateway reads the projections' rows");
    // The revocation policy (projections role, column grants only) got past
    // the deactivation without a dead letter.
    let policy = wait_until(Duration::from_secs(30), || {
        let admin = &admin;
        async move {
            let row = admin
                .query_opt(
                    "SELECT position, dead_letters FROM trackhrs_catalog.projection_versions \
                     WHERE name = 'revocation' AND state = 'live'",
                    &[],
                )
                .await
                .ok()??;
            let (at, dead): (i64, i64) = (row.get(0), row.get(1));
            (at as u64 >= position).then_some(dead)
        }
    })
    .await
    .expect("the revocation policy did not get past the deactivation");
    assert_eq!(policy, 0);

    // Migrations ran under their own role.
    let owner_of = |schema: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_one(
                    "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1",
                    &[&schema],
                )
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(owner_of("auth").await, "trackhrs_migrate");
    assert_eq!(owner_of("trackhrs_catalog").await, "trackhrs_projections");

    // The projections' role reads no credential.
    let projections = connect(port, "trackhrs_projections").await;
    for sql in [
        "SELECT * FROM auth.accounts",
        "SELECT email_lower FROM auth.invitations",
        "SELECT token_hash FROM auth.refresh_tokens",
        "SELECT token_hash FROM auth.device_tokens",
        "SELECT secret FROM auth.signing_keys",
        "DELETE FROM auth.refresh_tokens",
    ] {
        assert_eq!(refused(&projections, sql).await, "42501", "{sql}");
    }
    // The gateway's role drops, alters and truncates no read model, and
    // changes no schema.
    let directory: String = admin
        .query_one(
            "SELECT schema_name FROM trackhrs_catalog.projection_versions \
             WHERE name = 'org_directory' AND state = 'live'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let gateway = connect(port, "trackhrs_gateway").await;
    for sql in [
        format!("DROP TABLE {directory}.members"),
        format!("TRUNCATE {directory}.members"),
        format!("ALTER TABLE {directory}.members ADD COLUMN x int"),
        format!("DROP SCHEMA {directory} CASCADE"),
        "DROP TABLE trackhrs_catalog.projection_versions".to_owned(),
        "DROP TABLE auth.accounts".to_owned(),
        "CREATE SCHEMA intruder".to_owned(),
    ] {
        assert_eq!(refused(&gateway, &sql).await, "42501", "{sql}");
    }
    let still: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {directory}.members"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, 2);
}

async fn connect_db(port: u16, db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &PgServer::connection_string_for(port, db),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
}
