//! The right to be forgotten end to end, on a whole platform: an erasure
//! is a fact in the log; every read model drops its copies of the person's
//! names, e-mails, titles, URLs and raw timeline data within the projection
//! lag, without a rebuild (read here from PostgreSQL directly); the log
//! keeps every earlier message byte for byte; and a key bucket restored
//! from a copy taken before the erasure is erased again when a store opens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trackhrs_domain::Token;
use trackhrs_domain::organization::Organization;
use trackhrs_projections::{Waited, live_schema, wait_for_position};
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::timeline_change::Change;
use trackhrs_schemas::agent::v1::{
    Span, TimelineChange, TimelineEvent, UploadBatchRequest, UploadTimelineRequest,
};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::work::v1 as wpb;
use trackhrs_schemas::work::v1::work_client::WorkClient;
use trackhrs_testkit::*;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn tok(s: &str) -> Token {
    Token::new(s).unwrap()
}

fn span(start: i64, title: &str) -> Span {
    Span {
        start_unix_ms: start,
        end_unix_ms: start + 60_000,
        app: "code".into(),
        title: title.into(),
        url: None,
        active: true,
    }
}

async fn upload(p: &Platform, device_token: &str, titles: &[&str]) {
    let start = now_ms() - 3_600_000;
    AgentIngestClient::new(p.gw().channel.clone())
        .upload_batch(authed(
            device_token,
            UploadBatchRequest {
                batch_id: format!("b-{device_token:.8}"),
                device_batch_seq: 1,
                spans: titles
                    .iter()
                    .enumerate()
                    .map(|(i, t)| span(start + i as i64 * 60_000, t))
                    .collect(),
                retractions: vec![],
            },
        ))
        .await
        .unwrap();
}

/// Waits until every read model has applied everything stored.
async fn all_caught_up(p: &Platform) {
    let last = p.last_sequence().await;
    let pg = p.db.connect().await.unwrap();
    for name in ["org_directory", "activity", "timeline", "work"] {
        let waited = wait_for_position(&pg, name, last, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(matches!(waited, Waited::Reached(_)), "{name}: {waited:?}");
    }
}

/// Every message of the log: (sequence, subject, payload).
async fn log(p: &Platform) -> Vec<(u64, String, Vec<u8>)> {
    let js = async_nats::jetstream::new(p.nats.connect_admin().await.unwrap());
    let stream = js.get_stream("TRACKHRS_EVENTS").await.unwrap();
    let mut out = Vec::new();
    for seq in 1..=p.last_sequence().await {
        let msg = stream.get_raw_message(seq).await.unwrap();
        out.push((seq, msg.subject.to_string(), msg.payload.to_vec()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_reaches_every_read_model_and_survives_a_restored_key_bucket() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    let erin = p.member(&owner, "erin", pb::Role::Employee).await;
    let erin_device = p.enroll(&erin, "erins laptop").await;
    let owner_device = p.enroll(&owner, "olives laptop").await;
    upload(
        &p,
        &erin_device.device_token,
        &["erin-secret.rs - trackhrs", "README.md - trackhrs"],
    )
    .await;
    upload(
        &p,
        &owner_device.device_token,
        &["README.md - trackhrs", "olive.rs - trackhrs"],
    )
    .await;
    let start = now_ms() - 600_000;
    AgentIngestClient::new(p.gw().channel.clone())
        .upload_timeline(authed(
            &erin_device.device_token,
            UploadTimelineRequest {
                batch_id: "t-erin".into(),
                device_timeline_seq: 1,
                changes: vec![TimelineChange {
                    change: Some(Change::Event(TimelineEvent {
                        bucket_id: "aw-watcher-vim_laptop".into(),
                        bucket_type: "app.editor.activity".into(),
                        client: "aw-watcher-vim".into(),
                        event_key: "e1".into(),
                        version: 1,
                        start_unix_us: start * 1000,
                        end_unix_us: (start + 5_000) * 1000,
                        data_json: r#"{"file":"erin-diary.txt"}"#.into(),
                    })),
                }],
            },
        ))
        .await
        .unwrap();
    // Her manual hour yesterday with a note, on a project of the owner's.
    let mut w = WorkClient::new(p.gw().channel.clone());
    let project = w
        .create_project(authed(
            &owner.access_token,
            wpb::CreateProjectRequest {
                command_id: "erasure-project".into(),
                org_id: "acme".into(),
                name: "Website".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let task = w
        .add_task(authed(
            &owner.access_token,
            wpb::AddTaskRequest {
                command_id: "erasure-task".into(),
                org_id: "acme".into(),
                project_id: project.clone(),
                name: "Build".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let yesterday_10h = (now_ms() / 86_400_000 - 1) * 86_400_000 + 10 * 3_600_000;
    w.add_entry(authed(
        &erin.access_token,
        wpb::AddEntryRequest {
            command_id: "erasure-entry".into(),
            org_id: "acme".into(),
            kind: wpb::EntryKind::Manual as i32,
            project_id: project,
            task_id: task,
            start_ms: yesterday_10h,
            end_ms: yesterday_10h + 3_600_000,
            note: "erin's dentist appointment".into(),
        },
    ))
    .await
    .unwrap();
    all_caught_up(&p).await;

    let pg = p.db.connect().await.unwrap();
    let directory = live_schema(&pg, "org_directory").await.unwrap().unwrap();
    let activity = live_schema(&pg, "activity").await.unwrap().unwrap();
    let timeline = live_schema(&pg, "timeline").await.unwrap().unwrap();
    let work = live_schema(&pg, "work").await.unwrap().unwrap();
    let work_texts = || {
        let (pg, work) = (&pg, &work);
        async move {
            let mut texts: Vec<String> = pg
                .query(
                    &format!(
                        "SELECT title FROM {work}.activities WHERE title IS NOT NULL \
                         UNION ALL SELECT note FROM {work}.entries WHERE note IS NOT NULL"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            texts.sort();
            texts
        }
    };
    let member = |person: String| {
        let (pg, directory) = (&pg, &directory);
        async move {
            let row = pg
                .query_one(
                    &format!(
                        "SELECT email, name FROM {directory}.members \
                         WHERE org_id = 'acme' AND person_id = $1"
                    ),
                    &[&person],
                )
                .await
                .unwrap();
            (
                row.get::<_, Option<String>>(0),
                row.get::<_, Option<String>>(1),
            )
        }
    };
    let device_name = |device: String| {
        let (pg, directory) = (&pg, &directory);
        async move {
            pg.query_one(
                &format!("SELECT name FROM {directory}.devices WHERE device_id = $1"),
                &[&device],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
        }
    };
    let titles = || {
        let (pg, activity) = (&pg, &activity);
        async move {
            let mut titles: Vec<String> = pg
                .query(
                    &format!("SELECT title FROM {activity}.activities WHERE title IS NOT NULL"),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            titles.sort();
            titles
        }
    };
    let erin_time = || {
        let (pg, activity) = (&pg, &activity);
        let person = erin.person_id.clone();
        async move {
            pg.query_one(
                &format!(
                    "SELECT coalesce(sum(ms), 0)::bigint FROM {activity}.daily WHERE person_id = $1"
                ),
                &[&person],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    let erin_timeline = || {
        let (pg, timeline) = (&pg, &timeline);
        let person = erin.person_id.clone();
        async move {
            pg.query(
                &format!("SELECT data::text FROM {timeline}.events WHERE person_id = $1"),
                &[&person],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, Option<String>>(0))
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        member(erin.person_id.clone()).await,
        (Some("erin@acme.test".into()), Some("Person erin".into()))
    );
    assert_eq!(
        titles().await,
        [
            "README.md - trackhrs",
            "erin-secret.rs - trackhrs",
            "olive.rs - trackhrs"
        ]
    );
    assert_eq!(
        work_texts().await,
        [
            "README.md - trackhrs",
            "erin's dentist appointment",
            "erin-secret.rs - trackhrs",
            "olive.rs - trackhrs"
        ]
    );
    let time_before = erin_time().await;
    assert_eq!(time_before, 120_000);
    assert!(
        erin_timeline().await[0]
            .as_deref()
            .unwrap()
            .contains("erin-diary")
    );

    let log_before = log(&p).await;
    let admin = async_nats::jetstream::new(p.nats.connect_admin().await.unwrap());
    let bucket = admin.get_key_value("trackhrs_keys").await.unwrap();
    let erins_key = trackhrs_nats::keys::entry_name("acme", &erin.person_id);
    let backup = bucket.get(&erins_key).await.unwrap().unwrap();

    let app = &p.gw().app;
    app.erase_person(&tok("acme"), &tok(&erin.person_id))
        .await
        .unwrap();
    all_caught_up(&p).await;

    assert_eq!(member(erin.person_id.clone()).await, (None, None));
    assert_eq!(
        member(owner.person_id.clone()).await,
        (Some("olive@acme.test".into()), Some("Olive Owner".into())),
        "nobody else is touched"
    );
    assert_eq!(device_name(erin_device.device_id.clone()).await, None);
    assert_eq!(
        device_name(owner_device.device_id.clone()).await.as_deref(),
        Some("olives laptop")
    );
    assert_eq!(
        titles().await,
        ["README.md - trackhrs", "olive.rs - trackhrs"],
        "her own titles go; one the owner saw too stays"
    );
    assert_eq!(erin_time().await, time_before, "her time stays");
    assert_eq!(
        work_texts().await,
        ["README.md - trackhrs", "olive.rs - trackhrs"],
        "the work read model drops her note and her own titles"
    );
    assert_eq!(erin_timeline().await, [None], "her raw timeline data goes");

    // The log: every earlier message as it was, and one commit more.
    let log_after = log(&p).await;
    assert_eq!(&log_after[..log_before.len()], &log_before[..]);
    assert_eq!(log_after.len(), log_before.len() + 1);
    assert_eq!(
        log_after.last().unwrap().1,
        format!("evt.acme.erasure.{}", erin.person_id)
    );
    // Erasing again changes nothing; a stranger is not found.
    app.erase_person(&tok("acme"), &tok(&erin.person_id))
        .await
        .unwrap();
    assert_eq!(p.last_sequence().await, log_after.len() as u64);
    let stranger = app
        .erase_person(&tok("acme"), &tok("nobody"))
        .await
        .unwrap_err();
    assert_eq!(stranger.kind(), trackhrs_app::ErrorKind::NotFound);

    // A restore of the key bucket from before the erasure brings her key
    // back; a store that opens destroys it again before any read.
    bucket.put(&erins_key, backup).await.unwrap();
    let reopened =
        trackhrs_nats::EventStore::open(p.nats.connect().await.unwrap(), p.store_config.clone())
            .await
            .unwrap();
    assert!(
        reopened
            .keys()
            .key_for_read("acme", &erin.person_id)
            .await
            .unwrap()
            .is_empty()
    );
    let org = reopened
        .load_fresh::<Organization>(
            &tok("acme"),
            &tok(trackhrs_domain::organization::AGGREGATE_ID),
        )
        .await
        .unwrap();
    let her = &org.state.members[&tok(&erin.person_id)];
    assert_eq!(her.email.value(), None, "still erased");
}
