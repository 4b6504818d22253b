//! The agent app against a real gateway: heartbeats become spans in the
//! SQLite outbox, batches upload through gRPC ingest, and a batch whose
//! acknowledgement was lost (the agent died between the gateway storing it
//! and the outbox deleting it) is sent again and stored once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trackhrs_agent::heartbeat::{Event, Merger, SpanData};
use trackhrs_agent::outbox::Outbox;
use trackhrs_agent::privacy::Policy;
use trackhrs_agent::sync::{SyncConfig, Uploaded, Uploader};
use trackhrs_domain::Token;
use trackhrs_domain::activity::DeviceActivity;
use trackhrs_domain::organization::OrgCommand;
use trackhrs_harness::{NatsServer, TestDb};
use trackhrs_nats::{EventStore, StoreConfig};

const OPEN: Policy = Policy {
    capture_titles: true,
    capture_urls: true,
};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_uploads_every_span_once_even_when_an_ack_is_lost() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.connect().await.unwrap();
    let store =
        EventStore::provision_and_open(client, StoreConfig::with_kek(trackhrs_harness::test_kek()))
            .await
            .unwrap();
    let db = TestDb::create().await.unwrap();
    let gateway = trackhrs_platform::Platform::build(
        store.clone(),
        db.connection_string().parse().unwrap(),
        trackhrs_platform::Settings {
            pg_pool: 4,
            gateway: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let app = gateway.app().expect("a gateway").clone();
    let org = Token::new("acme").unwrap();
    let owner = Token::new("olive").unwrap();
    app.org_commands()
        .execute(
            &org,
            "test",
            "create",
            OrgCommand::Create {
                name: "Acme".into(),
                owner: owner.clone(),
                owner_email: "olive@acme.test".into(),
                owner_name: "Olive".into(),
                seats: 3,
            },
        )
        .await
        .unwrap();
    app.org_commands()
        .execute(
            &org,
            "person:olive",
            "enroll",
            OrgCommand::EnrollDevice {
                actor: owner,
                device: Token::new("laptop").unwrap(),
                name: "Laptop".into(),
            },
        )
        .await
        .unwrap();
    let token = app
        .credentials()
        .put_device_token("acme", "laptop", "olive")
        .await
        .unwrap();
    let addr = gateway.gateway_addr().unwrap();
    tokio::spawn(gateway.run(std::future::pending()));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // An hour of polls, once a second, switching windows every 5 minutes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let outbox = Arc::new(Mutex::new(Outbox::open(&path).unwrap()));
    let mut merger = Merger::new(Duration::from_secs(1));
    let start = now_ms() - 2 * 3_600_000;
    for s in 0..3600i64 {
        let app = ["code", "firefox", "slack"][(s / 300 % 3) as usize];
        let beat = Event {
            start_ms: start + s * 1000,
            duration_ms: 0,
            data: SpanData {
                app: app.into(),
                title: format!("{app} window {}", s / 300),
                url: None,
                active: true,
            },
        };
        if let Some(span) = merger.heartbeat(beat) {
            outbox.lock().unwrap().push(&span).unwrap();
        }
    }
    let last = merger.flush().unwrap();
    outbox.lock().unwrap().push(&last).unwrap();
    assert_eq!(outbox.lock().unwrap().waiting().unwrap(), 12);

    let config = SyncConfig {
        max_spans: 5,
        ..SyncConfig::default()
    };
    // The first batch reaches the gateway, but the agent "dies" before it
    // deletes it: the outbox reopened from disk still holds it.
    let first = outbox
        .lock()
        .unwrap()
        .next_batch(config.max_spans)
        .unwrap()
        .unwrap();
    let mut uploader = Uploader::new(channel, &token, config).unwrap();
    uploader.send(&first, &OPEN).await.unwrap();
    drop(outbox);
    let outbox = Arc::new(Mutex::new(Outbox::open(&path).unwrap()));

    let uploaded = uploader.drain(outbox.clone(), &OPEN).await.unwrap();
    assert_eq!(uploaded.len(), 3, "{uploaded:?}");
    assert!(
        matches!(
            uploaded[0],
            Uploaded::Stored {
                seq: 1,
                duplicate: true,
                ..
            }
        ),
        "the batch stored before the crash is recognised: {uploaded:?}"
    );
    assert!(matches!(
        uploaded[2],
        Uploaded::Stored {
            seq: 3,
            duplicate: false,
            ..
        }
    ));
    assert_eq!(outbox.lock().unwrap().waiting().unwrap(), 0);

    // The device's timeline holds every span exactly once, covering the hour.
    let timeline = store
        .load_fresh::<DeviceActivity>(&org, &Token::new("laptop").unwrap())
        .await
        .unwrap()
        .state;
    assert_eq!((timeline.last_seq, timeline.spans), (3, 12));
    assert_eq!(timeline.last_end_ms, Some(start + 3_599_000));
}
