//! Agent ingest: a batch of spans (or of raw timeline changes) stored once
//! as one commit, its acknowledgement carrying the stream position; bad
//! batches refused with nothing stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::Code;
use trackhrs_nats::StoreConfig;
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::timeline_change::Change;
use trackhrs_schemas::agent::v1::{
    GetPolicyRequest, Span, TimelineChange, TimelineEvent, TimelineRetraction, UploadBatchRequest,
    UploadTimelineRequest,
};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::*;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `n` one-minute spans starting `start` ms, back to back.
fn spans(start: i64, n: usize) -> Vec<Span> {
    (0..n)
        .map(|i| Span {
            start_unix_ms: start + i as i64 * 60_000,
            end_unix_ms: start + (i as i64 + 1) * 60_000,
            app: "code".into(),
            title: format!("file{i}.rs - trackhrs"),
            url: None,
            active: i % 5 != 4,
        })
        .collect()
}

fn batch(id: &str, seq: u64, spans: Vec<Span>) -> UploadBatchRequest {
    UploadBatchRequest {
        batch_id: id.into(),
        device_batch_seq: seq,
        spans,
        retractions: vec![],
    }
}

async fn device(
    p: &Platform,
) -> (
    pb::Session,
    pb::EnrollDeviceResponse,
    AgentIngestClient<tonic::transport::Channel>,
) {
    let owner = p.sign_up("acme", 5).await;
    let device = p.enroll(&owner, "laptop").await;
    (
        owner,
        device,
        AgentIngestClient::new(p.gw().channel.clone()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_stored_once_however_often_it_is_sent() {
    let p = Platform::start().await;
    let (_, device, mut ingest) = device(&p).await;
    let token = device.device_token.clone();
    let start = now_ms() - 3 * 3_600_000;
    let first = ingest
        .upload_batch(authed(&token, batch("b-1", 1, spans(start, 10))))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    assert_eq!(first.stream_sequence, p.last_sequence().await);

    // Sent again, and twice at once: the original acknowledgement each time.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut ingest = ingest.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            ingest
                .upload_batch(authed(&token, batch("b-1", 1, spans(start, 10))))
                .await
        }));
    }
    for task in tasks {
        let again = task.await.unwrap().unwrap().into_inner();
        assert_eq!(
            (again.stream_sequence, again.duplicate),
            (first.stream_sequence, true)
        );
    }
    assert_eq!(
        p.last_sequence().await,
        first.stream_sequence,
        "stored once"
    );

    // Two batches racing for the next sequence number: one wins, the other
    // is told the number is taken, and nothing is stored twice.
    let racers: Vec<_> = ["b-2a", "b-2b"]
        .into_iter()
        .map(|id| {
            let mut ingest = ingest.clone();
            let token = token.clone();
            tokio::spawn(async move {
                ingest
                    .upload_batch(authed(&token, batch(id, 2, spans(start + 3_600_000, 5))))
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
    let lost = outcomes.into_iter().find_map(Result::err).unwrap();
    assert_eq!(lost.code(), Code::FailedPrecondition, "{}", lost.message());
    assert_eq!(p.last_sequence().await, first.stream_sequence + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_again_after_the_duplicate_window_gets_its_original_ack() {
    let store_config = StoreConfig {
        duplicate_window: Duration::from_secs(1),
        ..StoreConfig::with_kek(trackhrs_harness::test_kek())
    };
    let p = Platform::start_full(Default::default(), 1, store_config).await;
    let (_, device, mut ingest) = device(&p).await;
    let token = device.device_token;
    let start = now_ms() - 20 * 3_600_000;
    let mut acks = Vec::new();
    // 40 batches: more than the 32 command ids an aggregate remembers.
    for seq in 1..=40u64 {
        let ack = ingest
            .upload_batch(authed(
                &token,
                batch(
                    &format!("b-{seq}"),
                    seq,
                    spans(start + seq as i64 * 600_000, 5),
                ),
            ))
            .await
            .unwrap()
            .into_inner();
        acks.push(ack.stream_sequence);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let last = p.last_sequence().await;
    for seq in [40u64, 1] {
        let again = ingest
            .upload_batch(authed(
                &token,
                batch(
                    &format!("b-{seq}"),
                    seq,
                    spans(start + seq as i64 * 600_000, 5),
                ),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (again.stream_sequence, again.duplicate),
            (acks[seq as usize - 1], true),
            "batch {seq}"
        );
    }
    // A different batch reusing an old number is refused.
    let status = assert_code(
        ingest
            .upload_batch(authed(&token, batch("other", 1, spans(start, 1))))
            .await,
        Code::FailedPrecondition,
        "a reused sequence number",
    );
    assert!(
        status.message().contains("already used"),
        "{}",
        status.message()
    );
    assert_eq!(p.last_sequence().await, last, "nothing stored again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_and_store_nothing() {
    let p = Platform::start().await;
    let (owner, device, mut ingest) = device(&p).await;
    let token = device.device_token.clone();
    let start = now_ms() - 3_600_000;
    let before = p.last_sequence().await;

    let status = assert_code(
        ingest
            .upload_batch(authed(
                &token,
                batch("big", 1, spans(start - 2_000 * 60_000, 1001)),
            ))
            .await,
        Code::ResourceExhausted,
        "oversized batch",
    );
    assert!(
        status.message().contains("at most 1000"),
        "{}",
        status.message()
    );

    let mut backwards = spans(start, 3);
    backwards[1].end_unix_ms = backwards[1].start_unix_ms - 1;
    let mut overlapping = spans(start, 3);
    overlapping[2].start_unix_ms -= 30_000;
    let future = spans(now_ms() + 3_600_000, 1);
    let ancient = spans(now_ms() - 40 * 24 * 3_600_000, 1);
    for (what, spans, needle) in [
        (
            "end before start",
            backwards,
            "span 1 ends before it starts",
        ),
        ("overlap", overlapping, "span 2 overlaps"),
        ("far future", future, "span 0 ends in the future"),
        ("too old", ancient, "span 0 starts too long ago"),
        ("empty", vec![], "at least one span"),
    ] {
        let status = assert_code(
            ingest
                .upload_batch(authed(&token, batch("bad", 1, spans)))
                .await,
            Code::InvalidArgument,
            what,
        );
        assert!(
            status.message().contains(needle),
            "{what}: {}",
            status.message()
        );
    }
    assert_code(
        ingest
            .upload_batch(authed(
                "thd_notarealtokennotarealtokennotarealtokenxx",
                batch("x", 1, spans(start, 1)),
            ))
            .await,
        Code::Unauthenticated,
        "unknown device",
    );
    assert_code(
        ingest
            .upload_batch(authed(&owner.access_token, batch("x", 1, spans(start, 1))))
            .await,
        Code::Unauthenticated,
        "a person's access token",
    );
    assert_code(
        ingest
            .upload_batch(authed(&token, batch("gap", 2, spans(start, 1))))
            .await,
        Code::FailedPrecondition,
        "a skipped sequence number",
    );
    assert_eq!(
        p.last_sequence().await,
        before,
        "a refused batch stored something"
    );

    // Revoked: refused, nothing stored.
    let revoked = p
        .gw()
        .orgs()
        .revoke_device(authed(
            &owner.access_token,
            pb::RevokeDeviceRequest {
                command_id: "revoke".into(),
                org_id: "acme".into(),
                device_id: device.device_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_code(
        ingest
            .upload_batch(authed(&token, batch("late", 1, spans(start, 1))))
            .await,
        Code::Unauthenticated,
        "revoked device",
    );
    assert_eq!(p.last_sequence().await, revoked.position);
}

fn timeline_event(key: &str, version: u64, start_ms: i64, data: &str) -> TimelineChange {
    TimelineChange {
        change: Some(Change::Event(TimelineEvent {
            bucket_id: "aw-watcher-vim_laptop".into(),
            bucket_type: "app.editor.activity".into(),
            client: "aw-watcher-vim".into(),
            event_key: key.into(),
            version,
            start_unix_us: start_ms * 1000,
            end_unix_us: (start_ms + 5_000) * 1000,
            data_json: data.into(),
        })),
    }
}

fn timeline(id: &str, seq: u64, changes: Vec<TimelineChange>) -> UploadTimelineRequest {
    UploadTimelineRequest {
        batch_id: id.into(),
        device_timeline_seq: seq,
        changes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_batch_is_stored_once_and_bad_ones_store_nothing() {
    let p = Platform::start().await;
    let (owner, device, ingest) = device(&p).await;
    let token = device.device_token.clone();
    let start = now_ms() - 60_000;
    let good = timeline(
        "t-1",
        1,
        vec![
            timeline_event("s-1", 1, start, r#"{"file": "main.rs"}"#),
            TimelineChange {
                change: Some(Change::Retraction(TimelineRetraction {
                    bucket_id: "aw-watcher-vim_laptop".into(),
                    event_key: "s-0".into(),
                })),
            },
        ],
    );
    // Sent four times at once: one commit, the same acknowledgement.
    let acks = futures::future::join_all((0..4).map(|_| {
        let mut ingest = ingest.clone();
        let request = authed(&token, good.clone());
        async move { ingest.upload_timeline(request).await.unwrap().into_inner() }
    }))
    .await;
    assert!(
        acks.iter()
            .all(|a| a.stream_sequence == acks[0].stream_sequence)
    );
    assert_eq!(acks.iter().filter(|a| !a.duplicate).count(), 1);
    let stored = p.last_sequence().await;
    assert_eq!(stored, acks[0].stream_sequence);

    let mut ingest = ingest;
    let next = |changes| timeline("t-2", 2, changes);
    let too_many = (0..1001)
        .map(|i| timeline_event(&format!("s-{i}"), 1, start, "{}"))
        .collect();
    assert_code(
        ingest.upload_timeline(authed(&token, next(too_many))).await,
        Code::ResourceExhausted,
        "too many changes",
    );
    let cases = [
        (
            "data not an object",
            timeline_event("s-2", 1, start, "[1]"),
            "change 0 has data that is not a JSON object",
        ),
        (
            "malformed data",
            timeline_event("s-2", 1, start, "{\"a\":"),
            "change 0 has data that is not a JSON object",
        ),
        (
            "far future",
            timeline_event("s-2", 1, now_ms() + 3_600_000, "{}"),
            "change 0 ends in the future",
        ),
        (
            "NUL in data",
            timeline_event("s-2", 1, start, r#"{"a": "x\u0000"}"#),
            "change 0 has data with a NUL character",
        ),
        (
            "version 0",
            timeline_event("s-2", 0, start, "{}"),
            "change 0 has version 0",
        ),
        (
            "no key",
            timeline_event("", 1, start, "{}"),
            "change 0 needs a bucket",
        ),
        (
            "empty change",
            TimelineChange { change: None },
            "an event or a retraction",
        ),
    ];
    for (what, change, needle) in cases {
        let status = assert_code(
            ingest
                .upload_timeline(authed(&token, next(vec![change])))
                .await,
            Code::InvalidArgument,
            what,
        );
        assert!(
            status.message().contains(needle),
            "{what}: {}",
            status.message()
        );
    }
    assert_code(
        ingest.upload_timeline(authed(&token, next(vec![]))).await,
        Code::InvalidArgument,
        "no changes",
    );
    assert_code(
        ingest
            .upload_timeline(authed(
                &token,
                timeline("t-3", 3, vec![timeline_event("s-2", 1, start, "{}")]),
            ))
            .await,
        Code::FailedPrecondition,
        "a skipped sequence number",
    );
    assert_code(
        ingest
            .upload_timeline(authed(
                &owner.access_token,
                next(vec![timeline_event("s-2", 1, start, "{}")]),
            ))
            .await,
        Code::Unauthenticated,
        "a person's access token",
    );
    assert_eq!(
        p.last_sequence().await,
        stored,
        "a refused batch stored something"
    );

    // The policy tells an agent whose store was lost where to go on.
    let policy = p
        .gw()
        .agent()
        .get_policy(authed(&token, GetPolicyRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policy.last_timeline_seq, 1);
}
