//! The activity projection reads device batches typed (no JSON tree per
//! span): the same spans as the generic decoding, a member's erased title
//! and URL as `None`, and every malformed commit a decode error (so the
//! runner dead-letters it), never a guess.

mod common;

use bytes::Bytes;
use common::*;
use prost::Message as _;
use trackhrs_domain::activity::{
    ActivityCommand, DeviceActivity, DeviceStatus, IngestLimits, Privacy, SpanInput,
};
use trackhrs_nats::codec::decode_generic;
use trackhrs_nats::{CommitMeta, StoreError};
use trackhrs_projections::Projection;
use trackhrs_projections::activity::{Activity, ActivityCommit, OpenedSpan};
use trackhrs_schemas::events::v1::Commit;

const HOUR_MS: i64 = 3_600_000;

fn span(at: i64, app: &str, title: &str, url: Option<&str>, active: bool) -> SpanInput {
    SpanInput {
        start_ms: at,
        end_ms: at + 60_000,
        app: app.into(),
        title: title.into(),
        url: url.map(str::to_owned),
        active,
    }
}

/// Records one batch of member p1 on device d1; returns its stream position.
async fn record(env: &Env, spans: Vec<SpanInput>) -> u64 {
    let command = ActivityCommand::RecordBatch {
        device: DeviceStatus::Active,
        member: tok("p1"),
        batch_id: "b1".into(),
        seq: 1,
        spans,
        retractions: vec![],
        privacy: Privacy {
            titles: true,
            urls: true,
        },
        limits: IngestLimits {
            now_ms: now_micros() / 1000,
            max_skew_ms: 60_000,
            horizon_ms: 30 * 24 * HOUR_MS,
            max_spans: 10,
        },
    };
    env.handler
        .execute::<DeviceActivity>(
            &tok("acme"),
            &tok("d1"),
            command,
            &CommitMeta::new("b1", "device:d1", now_micros()),
        )
        .await
        .unwrap()
        .appended
        .expect("a commit")
        .position
}

/// The stored message at `sequence`: subject and bytes.
async fn stored(env: &Env, sequence: u64) -> (String, Bytes) {
    let js = async_nats::jetstream::new(env.store.client().clone());
    let msg = js
        .get_stream("TRACKHRS_EVENTS")
        .await
        .unwrap()
        .direct_get(sequence)
        .await
        .unwrap();
    (msg.subject.to_string(), msg.payload)
}

async fn typed(env: &Env, subject: &str, sequence: u64, bytes: &[u8]) -> ActivityCommit {
    Activity::decode(env.store.keys(), subject, sequence, bytes)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_batch_reads_the_same_typed_as_generically_and_erased_as_none() {
    let env = Env::start().await;
    let at = now_micros() / 1000 - 2 * HOUR_MS;
    let position = record(
        &env,
        vec![
            span(
                at,
                "firefox",
                "Docs — \"quoted\" ✓",
                Some("https://example.com/a?b=1"),
                true,
            ),
            span(at + 60_000, "code \\ editor", "main.rs", None, true),
            span(at + 120_000, "slack", "", None, false),
        ],
    )
    .await;
    let (subject, bytes) = stored(&env, position).await;

    let ActivityCommit::Device(batch) = typed(&env, &subject, position, &bytes).await else {
        panic!("a device batch");
    };
    let expected = vec![
        OpenedSpan {
            start_ms: at,
            end_ms: at + 60_000,
            app: "firefox".into(),
            title: Some("Docs — \"quoted\" ✓".into()),
            url: Some("https://example.com/a?b=1".into()),
            active: true,
        },
        OpenedSpan {
            start_ms: at + 60_000,
            end_ms: at + 120_000,
            app: "code \\ editor".into(),
            title: Some("main.rs".into()),
            url: None,
            active: true,
        },
        OpenedSpan {
            start_ms: at + 120_000,
            end_ms: at + 180_000,
            app: "slack".into(),
            title: None,
            url: None,
            active: false,
        },
    ];
    assert_eq!(batch.member.as_deref(), Some("p1"));
    assert_eq!((batch.org_id.as_str(), batch.events), ("acme", 4));
    assert_eq!(batch.stream_sequence, position);
    assert_eq!(batch.spans, expected);

    // The generic decoding of the same message says the same.
    let generic = decode_generic(env.store.keys(), &subject, position, &bytes)
        .await
        .unwrap();
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let read: Vec<OpenedSpan> = generic
        .events
        .iter()
        .filter(|e| e.event_type == "SpanRecorded")
        .map(|e| OpenedSpan {
            start_ms: e.payload["start_ms"].as_i64().unwrap(),
            end_ms: e.payload["end_ms"].as_i64().unwrap(),
            app: text(&e.payload["app"]).unwrap(),
            title: text(&e.payload["title"]["v"]),
            url: text(&e.payload["url"]["v"]),
            active: e.payload["active"].as_bool().unwrap(),
        })
        .collect();
    assert_eq!(read, expected);

    // Erased: the spans still load, their titles and URLs are gone.
    env.store.keys().erase("acme", "p1").await.unwrap();
    let ActivityCommit::Device(batch) = typed(&env, &subject, position, &bytes).await else {
        panic!("a device batch");
    };
    let erased: Vec<OpenedSpan> = expected
        .into_iter()
        .map(|s| OpenedSpan {
            title: None,
            url: None,
            ..s
        })
        .collect();
    assert_eq!(batch.spans, erased);

    // Organization commits are read as the domain's own events.
    let org = env.create_org("acme").await;
    let (subject, bytes) = stored(&env, org).await;
    match typed(&env, &subject, org, &bytes).await {
        ActivityCommit::Org(c) => assert!(matches!(
            c.events.as_slice(),
            [trackhrs_domain::organization::OrgEvent::OrganizationCreated { .. }]
        )),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_device_batch_is_a_decode_error_naming_what_is_wrong() {
    let env = Env::start().await;
    let at = now_micros() / 1000 - 2 * HOUR_MS;
    let position = record(
        &env,
        vec![
            span(at, "firefox", "Docs", Some("https://example.com"), true),
            span(at + 60_000, "code", "main.rs", None, true),
        ],
    )
    .await;
    let (subject, bytes) = stored(&env, position).await;
    let original = Commit::decode(bytes.as_ref()).unwrap();
    assert_eq!(
        original
            .events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["BatchAccepted", "SpanRecorded", "SpanRecorded"]
    );

    let tamper = |sealed: &str| {
        let mut b = sealed.as_bytes().to_vec();
        let last = b.len() - 3;
        b[last] = if b[last] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    type Change = Box<dyn Fn(&mut Commit)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "a span before its BatchAccepted",
            Box::new(|c: &mut Commit| c.events.swap(0, 1)),
        ),
        (
            "SpanRecorded v2 is not a version this projection reads",
            Box::new(|c: &mut Commit| c.events[1].schema_version = 2),
        ),
        (
            "unknown device activity event SpanDeleted",
            Box::new(|c: &mut Commit| c.events[2].event_type = "SpanDeleted".into()),
        ),
        (
            "SpanRecorded: missing field `active`",
            Box::new(|c: &mut Commit| {
                let mut p: serde_json::Value =
                    serde_json::from_slice(&c.events[2].payload).unwrap();
                p.as_object_mut().unwrap().remove("active");
                c.events[2].payload = serde_json::to_vec(&p).unwrap();
            }),
        ),
        (
            "SpanRecorded: expected ident at line 1 column 2",
            Box::new(|c: &mut Commit| c.events[1].payload = b"not json".to_vec()),
        ),
        (
            "BatchAccepted: missing field `member`",
            Box::new(|c: &mut Commit| c.events[0].payload = b"{}".to_vec()),
        ),
        (
            "personal data of p1 fails authentication",
            Box::new(move |c: &mut Commit| {
                let mut p: serde_json::Value =
                    serde_json::from_slice(&c.events[1].payload).unwrap();
                let sealed = p["title"]["ct"].as_str().unwrap().to_owned();
                p["title"]["ct"] = tamper(&sealed).into();
                c.events[1].payload = serde_json::to_vec(&p).unwrap();
            }),
        ),
    ];
    for (expected, change) in cases {
        let mut commit = original.clone();
        change(&mut commit);
        let bytes = commit.encode_to_vec();
        match Activity::decode(env.store.keys(), &subject, position, &bytes).await {
            Err(StoreError::Decode {
                subject: s,
                sequence,
                reason,
            }) => {
                assert_eq!((s.as_str(), sequence), (subject.as_str(), position));
                assert!(reason.contains(expected), "{expected:?} in {reason:?}");
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
    // The untouched message still decodes.
    assert!(matches!(
        typed(&env, &subject, position, &bytes).await,
        ActivityCommit::Device(_)
    ));
}
