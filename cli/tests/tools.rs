//! The operator tools against real servers: `provision` (idempotent),
//! `auth keys` / `rotate-key` / `retire-key` (with a running gateway
//! replica noticing), and `events tail` with `--org`, `--from` and
//! `--follow`; `erase-person` (the person's log-in, device and copies in
//! the read models gone, the log untouched but for the erasure).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tonic::Code;
use trackhrs_harness::{NatsServer, wait_until};
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::{Platform, authed};

fn tail_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_creates_the_stream_once_and_refuses_nothing_the_second_time() {
    let nats = NatsServer::start().await.unwrap();
    let env = [("TRACKHRS_NATS_URL", nats.url())];
    for _ in 0..2 {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        common::trackhrs(&["provision"], &env);
    }
    let js = async_nats::jetstream::new(nats.connect().await.unwrap());
    let mut stream = js.get_stream("TRACKHRS_EVENTS").await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert!(config.deny_delete && config.deny_purge, "{config:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_rotate_and_retire_while_a_replica_serves() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;
    let (nats_url, db_url) = (p.nats.url(), p.db.connection_string().to_owned());
    let env = common::platform_env(&nats_url, &db_url);
    let keys = |env: &[(&str, &str)]| {
        String::from_utf8(common::trackhrs(&["auth", "keys"], env).stdout).unwrap()
    };
    let listed = keys(&env);
    let first: Vec<&str> = listed.lines().collect();
    assert_eq!(first.len(), 1, "{listed}");
    assert!(first[0].contains("active"), "{listed}");
    let old_kid = first[0].split_whitespace().next().unwrap().to_owned();

    common::trackhrs(&["auth", "rotate-key"], &env);
    let listed = keys(&env);
    assert_eq!(
        listed.lines().filter(|l| l.contains("active")).count(),
        2,
        "{listed}"
    );
    // Tokens the old key signed still verify.
    let get = |token: String| {
        let mut orgs = p.gw().orgs();
        async move {
            orgs.get_organization(authed(
                &token,
                pb::GetOrganizationRequest {
                    org_id: "acme".into(),
                    min_position: 0,
                },
            ))
            .await
        }
    };
    get(owner.access_token.clone()).await.unwrap();

    // Retired: the running replica refuses what the old key signed once it
    // reloads its keys (every 30 s).
    common::trackhrs(&["auth", "retire-key", &old_kid], &env);
    assert!(keys(&env).contains("retired"));
    let refused = wait_until(Duration::from_secs(45), || async {
        match get(owner.access_token.clone()).await {
            Err(status) if status.code() == Code::Unauthenticated => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        refused.is_some(),
        "the replica kept accepting a retired key"
    );
    // A new log-in is signed by the remaining key and works.
    let again = p
        .gw()
        .identity()
        .login(pb::LoginRequest {
            org_id: "acme".into(),
            email: "olive@acme.test".into(),
            password: trackhrs_testkit::PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    get(again.access_token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_person_erases_a_member_end_to_end_and_refuses_a_stranger() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;
    let erin = p.member(&owner, "erin", pb::Role::Employee).await;
    let device = p.enroll(&erin, "erins laptop").await;
    let (nats_url, db_url) = (p.nats.url(), p.db.connection_string().to_owned());
    let env = common::platform_env(&nats_url, &db_url);
    let pg = p.db.connect().await.unwrap();
    let credentials = |person: String| {
        let pg = &pg;
        async move {
            let mut rows = 0;
            for table in ["accounts", "invitations", "refresh_tokens", "device_tokens"] {
                rows += pg
                    .query_one(
                        &format!("SELECT count(*) FROM auth.{table} WHERE person_id = $1"),
                        &[&person],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0);
            }
            rows
        }
    };
    assert!(credentials(erin.person_id.clone()).await >= 2);
    let before = p.last_sequence().await;

    let out = common::trackhrs(
        &["erase-person", "--org", "acme", "--person", &erin.person_id],
        &env,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("erased {}", erin.person_id)),
        "{said}"
    );
    assert_eq!(
        p.last_sequence().await,
        before + 1,
        "one commit: the erasure"
    );
    assert_eq!(credentials(erin.person_id.clone()).await, 0);
    assert!(
        credentials(owner.person_id.clone()).await > 0,
        "nobody else's"
    );

    // Her log-in and her device are refused; the directory drops her.
    let login = p
        .gw()
        .identity()
        .login(pb::LoginRequest {
            org_id: "acme".into(),
            email: "erin@acme.test".into(),
            password: trackhrs_testkit::PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(login.code(), Code::Unauthenticated, "{login:?}");
    let upload = AgentIngestClient::new(p.gw().channel.clone())
        .upload_batch(authed(
            &device.device_token,
            trackhrs_schemas::agent::v1::UploadBatchRequest {
                batch_id: "after-erasure".into(),
                device_batch_seq: 1,
                spans: vec![],
                retractions: vec![],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(upload.code(), Code::Unauthenticated, "{upload:?}");
    let directory = trackhrs_projections::live_schema(&pg, "org_directory")
        .await
        .unwrap()
        .unwrap();
    let erased = wait_until(Duration::from_secs(30), || async {
        let row = pg
            .query_one(
                &format!(
                    "SELECT email FROM {directory}.members WHERE org_id = 'acme' AND person_id = $1"
                ),
                &[&erin.person_id],
            )
            .await
            .unwrap();
        row.get::<_, Option<String>>(0).is_none().then_some(())
    })
    .await;
    assert!(erased.is_some(), "the directory kept her e-mail");

    // Again: nothing more to do; a stranger is refused and nothing stored.
    let again = common::trackhrs(
        &["erase-person", "--org", "acme", "--person", &erin.person_id],
        &env,
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 credential rows"));
    let stranger = Command::new(env!("CARGO_BIN_EXE_trackhrs"))
        .args(["erase-person", "--org", "acme", "--person", "nobody"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!stranger.status.success());
    let err = String::from_utf8_lossy(&stranger.stderr);
    assert!(err.contains("no such person in this organization"), "{err}");
    assert_eq!(p.last_sequence().await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_filters_by_org_and_position_and_follows() {
    let p = Platform::start().await;
    p.sign_up("acme", 3).await;
    let globex = p.sign_up("globex", 3).await;
    let (nats_url, db_url) = (p.nats.url(), p.db.connection_string().to_owned());
    let env = common::platform_env(&nats_url, &db_url);

    let all = tail_lines(&common::trackhrs(&["events", "tail"], &env));
    assert_eq!(all.len(), 2, "{all:#?}");
    let acme = tail_lines(&common::trackhrs(
        &["events", "tail", "--org", "acme"],
        &env,
    ));
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0]["org_id"], "acme");
    let second = all[1]["stream_sequence"].as_u64().unwrap().to_string();
    let from = tail_lines(&common::trackhrs(
        &["events", "tail", "--from", &second],
        &env,
    ));
    assert_eq!(from.len(), 1);
    assert_eq!(from[0]["org_id"], "globex");
    // Correlation and causation ids are shown.
    assert!(
        from[0]["correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert!(
        from[0]["causation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );

    // --follow prints what is stored after it started.
    let mut child = Command::new(env!("CARGO_BIN_EXE_trackhrs"))
        .args(["events", "tail", "--follow", "--org", "globex"])
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.contains("\"globex\""), "{first}");
    p.gw()
        .orgs()
        .change_seats(authed(
            &globex.access_token,
            pb::ChangeSeatsRequest {
                command_id: "seats-5".into(),
                org_id: "globex".into(),
                seats: 5,
            },
        ))
        .await
        .unwrap();
    let followed = lines_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(followed.contains("seats-5"), "{followed}");
    let _ = child.kill();
    let _ = child.wait();
}
