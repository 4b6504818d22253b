//! Faults around the activity pipeline: PostgreSQL stopped under a running
//! platform, and a poison event in the log.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use trackhrs_harness::pg::Durability;
use trackhrs_harness::{PgServer, TestDb, wait_until};
use trackhrs_projections::{VersionState, catalog};
use trackhrs_schemas::activity::v1 as apb;
use trackhrs_schemas::activity::v1::activity_client::ActivityClient;
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::{Span, UploadBatchRequest};
use trackhrs_testkit::*;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn batch(seq: u64, start: i64) -> UploadBatchRequest {
    UploadBatchRequest {
        batch_id: format!("b-{seq}"),
        device_batch_seq: seq,
        spans: (0..10)
            .map(|i| Span {
                start_unix_ms: start + i * 60_000,
                end_unix_ms: start + (i + 1) * 60_000,
                app: "code".into(),
                title: format!("file{i}.rs"),
                url: None,
                active: true,
            })
            .collect(),
        retractions: vec![],
    }
}

/// Total tracked time over the last two days, as the dashboard says.
async fn tracked_ms(p: &Platform, token: &str, min_position: u64) -> Option<i64> {
    let today = chrono::Utc::now().date_naive();
    let mut client = ActivityClient::new(p.gw().channel.clone());
    let dash = client
        .get_dashboard(authed(
            token,
            apb::GetDashboardRequest {
                org_id: "acme".into(),
                from: (today - chrono::Duration::days(2)).to_string(),
                to: today.to_string(),
                person_ids: vec![],
                min_position,
            },
        ))
        .await
        .ok()?
        .into_inner();
    Some(dash.days.iter().map(|d| d.active_ms + d.idle_ms).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_goes_on_while_postgresql_is_down_and_projections_catch_up() {
    let mut pg = PgServer::start_private().await.unwrap();
    let db = TestDb::create_on_server(&pg).await.unwrap();
    let p = Platform::start_on(Default::default(), 1, Default::default(), db).await;
    let owner = p.sign_up("acme", 3).await;
    let device = p.enroll(&owner, "laptop").await;
    let mut ingest = AgentIngestClient::new(p.gw().channel.clone());
    let start = now_ms() - 20 * 3_600_000;
    ingest
        .upload_batch(authed(&device.device_token, batch(1, start)))
        .await
        .unwrap();

    pg.stop();
    // PostgreSQL is down: uploads are still accepted and stored in the log.
    let mut last = 0;
    for seq in 2..=6u64 {
        let ack = ingest
            .upload_batch(authed(
                &device.device_token,
                batch(seq, start + seq as i64 * 3_600_000),
            ))
            .await
            .unwrap_or_else(|e| panic!("upload {seq} refused while PostgreSQL is down: {e}"))
            .into_inner();
        last = ack.stream_sequence;
    }
    // Give the projection time to hit the outage and back off.
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.restart(Durability::Throwaway).await.unwrap();

    // The projection resumes by itself and applies everything exactly once.
    let total = wait_until(Duration::from_secs(60), || async {
        tracked_ms(&p, &owner.access_token, last)
            .await
            .filter(|t| *t == 6 * 10 * 60_000)
    })
    .await;
    assert_eq!(total, Some(6 * 10 * 60_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_verify_through_a_minute_without_postgresql() {
    use trackhrs_schemas::work::v1 as wpb;
    use trackhrs_schemas::work::v1::work_client::WorkClient;
    let mut pg = PgServer::start_private().await.unwrap();
    let db = TestDb::create_on_server(&pg).await.unwrap();
    let p = Platform::start_on(Default::default(), 1, Default::default(), db).await;
    let owner = p.sign_up("acme", 3).await;
    let mut work = WorkClient::new(p.gw().channel.clone());
    pg.stop();
    // Commands need only the event store; the caller's token is checked
    // with the signing keys last loaded, which count as stale after 30 s.
    let stopped = Instant::now();
    let mut n = 0;
    while stopped.elapsed() < Duration::from_secs(60) {
        n += 1;
        work.create_client(authed(
            &owner.access_token,
            wpb::CreateClientRequest {
                command_id: format!("client-{n}"),
                org_id: "acme".into(),
                name: format!("Client {n}"),
            },
        ))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{:?} into the outage, a command was refused: {e}",
                stopped.elapsed()
            )
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert!(n >= 10, "{n} commands");
    pg.restart(Durability::Throwaway).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_the_rest_applies() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;
    let device = p.enroll(&owner, "laptop").await;
    let mut ingest = AgentIngestClient::new(p.gw().channel.clone());
    let start = now_ms() - 20 * 3_600_000;
    ingest
        .upload_batch(authed(&device.device_token, batch(1, start)))
        .await
        .unwrap();
    // Bytes that are no commit, on a device timeline subject.
    let js = async_nats::jetstream::new(p.store.client().clone());
    let poison = js
        .publish("evt.acme.device_activity.broken", "not a commit".into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let ack = ingest
        .upload_batch(authed(&device.device_token, batch(2, start + 3_600_000)))
        .await
        .unwrap()
        .into_inner();
    assert!(ack.stream_sequence > poison);
    // Both real batches are applied; the poison waits in the dead-letter stream.
    let total = wait_until(Duration::from_secs(30), || async {
        tracked_ms(&p, &owner.access_token, ack.stream_sequence)
            .await
            .filter(|t| *t == 2 * 10 * 60_000)
    })
    .await;
    assert_eq!(total, Some(2 * 10 * 60_000));
    let letters = trackhrs_projections::list_dead_letters(&p.store, Some("activity"))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].stream_sequence, poison);
    assert!(!letters[0].reason.is_empty());
    let pg = p.db.connect().await.unwrap();
    let live = catalog::version_info(&pg, "activity", 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.state, VersionState::Live);
    assert!(live.position >= ack.stream_sequence);
}
