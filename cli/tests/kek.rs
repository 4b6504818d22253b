//! The key-encryption key end to end, with the `trackhrs` binary against
//! real servers: a role without a KEK, or with the wrong one, exits saying
//! so and writes nothing; `trackhrs keys rotate-kek` wraps every data key
//! and signing key under a new KEK while `trackhrs dev` keeps serving.

mod common;

use std::process::{Command, Stdio};

use trackhrs_harness::paths::free_port;
use trackhrs_harness::{NatsServer, TestDb};
use trackhrs_kek::Keyring;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::org::v1::identity_client::IdentityClient;
use trackhrs_schemas::org::v1::organizations_client::OrganizationsClient;

/// Runs `trackhrs args` with only `env` set among the platform's variables
/// (no recorded local platform either), for its exit and output.
fn run(args: &[&str], env: &[(&str, &str)], data_dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trackhrs"))
        .args(args)
        .env_remove("TRACKHRS_KEK")
        .env_remove("TRACKHRS_KEK_FILE")
        .env("TRACKHRS_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run trackhrs")
}

async fn auth_schema_exists(db: &TestDb) -> bool {
    let client = db.connect().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'auth'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

async fn key_bucket_messages(nats: &NatsServer) -> u64 {
    let js = async_nats::jetstream::new(nats.connect().await.unwrap());
    let mut stream = js.get_stream("KV_trackhrs_keys").await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_its_kek_or_with_another_exits_saying_so_and_writes_nothing() {
    let nats = NatsServer::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let empty = tempfile::tempdir().unwrap();
    let url = nats.url();
    let servers = [
        ("TRACKHRS_NATS_URL", url.as_str()),
        ("TRACKHRS_DATABASE_URL", db.connection_string()),
    ];
    let provisioned = run(&["provision"], &servers, empty.path());
    assert!(provisioned.status.success(), "{provisioned:?}");
    let listen = format!("127.0.0.1:{}", free_port());
    let gateway = ["gateway", "--listen", listen.as_str()];

    let without = run(&gateway, &servers, empty.path());
    let said = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success());
    assert!(
        said.contains("no key-encryption key") && said.contains("TRACKHRS_KEK_FILE"),
        "{said}"
    );
    assert!(
        !auth_schema_exists(&db).await,
        "nothing written to PostgreSQL"
    );
    assert_eq!(
        key_bucket_messages(&nats).await,
        0,
        "nothing written to NATS"
    );

    // The first process with a KEK records which one wraps the bucket; a
    // role with another one is refused before it serves anything.
    let first = Keyring::generate();
    let mut with_first = servers.to_vec();
    with_first.push(("TRACKHRS_KEK", first.as_str()));
    let status = run(&["projections", "status"], &with_first, empty.path());
    assert!(status.status.success(), "{status:?}");
    let before = key_bucket_messages(&nats).await;
    let other = Keyring::generate();
    let mut with_other = servers.to_vec();
    with_other.push(("TRACKHRS_KEK", other.as_str()));
    let wrong = run(&gateway, &with_other, empty.path());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(
        said.contains("cannot be unwrapped with this key-encryption key"),
        "{said}"
    );
    assert!(
        !auth_schema_exists(&db).await,
        "nothing written to PostgreSQL"
    );
    assert_eq!(key_bucket_messages(&nats).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_kek_wraps_every_key_under_a_new_kek_while_the_platform_serves() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let (_dev, ports) = common::spawn_dev(&data_dir);
    let (nats_port, pg_port, grpc_port) = (ports.nats, ports.pg, ports.grpc);
    let channel = common::dev_channel(&data_dir, grpc_port).await;
    let login = |email: &'static str| {
        let channel = channel.clone();
        async move {
            IdentityClient::new(channel)
                .login(pb::LoginRequest {
                    org_id: "acme".into(),
                    email: email.into(),
                    password: "trackhrs demo 2026".into(),
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    login("olive@acme.test").await.unwrap();
    let kek_file = data_dir.join("kek");
    let old = Keyring::from_file(&kek_file).unwrap().current();

    let rotated = run(&["keys", "rotate-kek"], &[], &data_dir);
    let said = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let new = Keyring::from_file(&kek_file).unwrap().current();
    assert_ne!(new, old);
    assert!(said.contains(&format!("{new} replaced {old}")), "{said}");
    assert_eq!(Keyring::read_lines(&kek_file).unwrap().len(), 1);
    let retired = data_dir.join(format!("kek.retired-{old}"));
    assert_eq!(Keyring::from_file(&retired).unwrap().current(), old);

    // The running platform goes on: it signs and verifies, and a new
    // member's data key is wrapped under the new KEK.
    let owner = login("olive@acme.test").await.unwrap();
    let mut invite = tonic::Request::new(pb::InviteMemberRequest {
        command_id: "invite-after-rotation".into(),
        org_id: "acme".into(),
        email: "newbie@acme.test".into(),
        name: "New Bie".into(),
        role: pb::Role::Employee as i32,
    });
    invite.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", owner.access_token).parse().unwrap(),
    );
    let invited = OrganizationsClient::new(channel.clone())
        .invite_member(invite)
        .await
        .unwrap()
        .into_inner();

    let nats = async_nats::connect(format!("127.0.0.1:{nats_port}"))
        .await
        .unwrap();
    let bucket = async_nats::jetstream::new(nats)
        .get_key_value("trackhrs_keys")
        .await
        .unwrap();
    let new_key = bucket
        .get(trackhrs_nats::keys::entry_name("acme", &invited.person_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(trackhrs_kek::wrapped_under(&new_key), Some(new));
    let mut names = futures::StreamExt::boxed(bucket.keys().await.unwrap());
    let mut count = 0;
    while let Some(name) = futures::StreamExt::next(&mut names).await {
        let value = bucket.get(name.unwrap()).await.unwrap().unwrap();
        assert_eq!(trackhrs_kek::wrapped_under(&value), Some(new));
        count += 1;
    }
    assert!(
        count >= 7,
        "five people, the newcomer and the check: {count}"
    );
    let (pg, conn) = tokio_postgres::connect(
        &trackhrs_harness::PgServer::connection_string_for(pg_port, "trackhrs"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let secrets = pg
        .query("SELECT secret FROM auth.signing_keys", &[])
        .await
        .unwrap();
    assert!(!secrets.is_empty());
    for row in secrets {
        assert_eq!(trackhrs_kek::wrapped_under(row.get(0)), Some(new));
    }

    // A process started now needs only the new KEK; the old one alone opens
    // nothing.
    for args in [&["auth", "keys"][..], &["projections", "status"][..]] {
        let out = run(args, &[], &data_dir);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let retired_path = retired.to_str().unwrap();
    let out = run(
        &["projections", "status"],
        &[("TRACKHRS_KEK_FILE", retired_path)],
        &data_dir,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be unwrapped"),
        "{out:?}"
    );
}
