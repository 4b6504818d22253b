//! Golden fixtures: stored bytes of every event schema version ever written.
//! Old versions must keep loading (upcast) forever.
//!
//! `TRACKHRS_WRITE_FIXTURES=1 cargo test -p trackhrs-nats --test golden`
//! writes the file only when it is missing; committed fixtures are never
//! regenerated. A new schema version gets a new fixture file beside this one.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use futures::StreamExt;
use prost::Message as _;
use serde_json::json;
use trackhrs_domain::organization::Role;
use trackhrs_nats::StoreConfig;
use trackhrs_nats::keys::DataKey;
use trackhrs_schemas::events::v1::{Commit, EventEnvelope};

#[derive(serde::Serialize, serde::Deserialize)]
struct Fixture {
    /// Key material (hex) per data subject.
    keys: BTreeMap<String, String>,
    messages: Vec<FixtureMessage>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FixtureMessage {
    what: String,
    subject: String,
    /// Base64 of the stored protobuf commit.
    commit: String,
}

fn path() -> PathBuf {
    fixture_path("organization_events.json")
}

fn membership_path() -> PathBuf {
    fixture_path("organization_membership_events.json")
}

fn settings_path() -> PathBuf {
    fixture_path("organization_settings_events.json")
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_fixture(path: PathBuf) -> Fixture {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Stores a fixture's keys and publishes its messages exactly as committed.
async fn publish_fixture(store: &trackhrs_nats::EventStore, fixture: &Fixture) {
    let js = async_nats::jetstream::new(store.client().clone());
    let key_bucket = js
        .get_key_value(StoreConfig::default().key_bucket)
        .await
        .unwrap();
    for (subject, material) in &fixture.keys {
        let wrapped = trackhrs_harness::test_kek()
            .wrap(&trackhrs_nats::keys::slot(subject), &unhex(material))
            .unwrap();
        key_bucket.put(subject, wrapped.into()).await.unwrap();
    }
    for m in &fixture.messages {
        js.publish(m.subject.clone(), B64.decode(&m.commit).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// Membership and device events, first written with schema v1.
fn write_membership_fixture() {
    let keys = read_fixture(path()).keys;
    let s = "evt.acme.organization.org".to_owned();
    let message = |what: &str, commit: String| FixtureMessage {
        what: what.into(),
        subject: s.clone(),
        commit,
    };
    let messages = vec![
        message(
            "MemberRoleChanged v1",
            commit(
                "c4",
                vec![(
                    "MemberRoleChanged",
                    1,
                    5,
                    json!({"member": "m1", "role": "manager"}),
                )],
            ),
        ),
        message(
            "DeviceEnrolled v1",
            commit(
                "c5",
                vec![(
                    "DeviceEnrolled",
                    1,
                    6,
                    json!({
                "device": "d1", "member": "m1", "name": sealed(&keys, "m1", "m1 laptop")}),
                )],
            ),
        ),
        message(
            "MemberDeactivated v1 and DeviceRevoked v1 in one commit",
            commit(
                "c6",
                vec![
                    ("MemberDeactivated", 1, 7, json!({"member": "m1"})),
                    ("DeviceRevoked", 1, 8, json!({"device": "d1"})),
                ],
            ),
        ),
        message(
            "MemberReactivated v1",
            commit(
                "c7",
                vec![("MemberReactivated", 1, 9, json!({"member": "m1"}))],
            ),
        ),
    ];
    let fixture = Fixture {
        keys: BTreeMap::new(),
        messages,
    };
    std::fs::write(
        membership_path(),
        serde_json::to_string_pretty(&fixture).unwrap() + "\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_and_device_event_versions_still_load() {
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !membership_path().exists() {
        write_membership_fixture();
    }
    let (_server, store) = start().await;
    publish_fixture(&store, &read_fixture(path())).await;
    publish_fixture(&store, &read_fixture(membership_path())).await;
    let loaded = load_org(&store, "org").await;
    assert_eq!(loaded.version, 9);
    let m1 = &loaded.state.members[&tok("m1")];
    assert_eq!((m1.role, m1.active), (Role::Manager, true));
    let d1 = &loaded.state.devices[&tok("d1")];
    assert_eq!(
        (d1.member.as_str(), d1.revoked, d1.name.value()),
        ("m1", true, Some("m1 laptop"))
    );
}

/// Follows the membership fixture (versions 1 to 9) with version 10.
fn write_settings_fixture() {
    let messages = vec![FixtureMessage {
        what: "SettingsChanged v1".into(),
        subject: "evt.acme.organization.org".into(),
        commit: commit(
            "c8",
            vec![(
                "SettingsChanged",
                1,
                10,
                json!({"settings": {
                    "timezone": "Europe/Berlin",
                    "work_week": ["monday", "tuesday", "thursday"],
                    "capture_titles": false,
                    "capture_urls": true
                }}),
            )],
        ),
    }];
    let fixture = Fixture {
        keys: BTreeMap::new(),
        messages,
    };
    std::fs::write(
        settings_path(),
        serde_json::to_string_pretty(&fixture).unwrap() + "\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_event_versions_still_load() {
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !settings_path().exists() {
        write_settings_fixture();
    }
    let (_server, store) = start().await;
    for fixture in [path(), membership_path(), settings_path()] {
        publish_fixture(&store, &read_fixture(fixture)).await;
    }
    let loaded = load_org(&store, "org").await;
    assert_eq!(loaded.version, 10);
    let settings = &loaded.state.settings;
    assert_eq!(
        (
            settings.timezone.as_str(),
            settings.work_week.len(),
            settings.capture_titles,
            settings.capture_urls
        ),
        ("Europe/Berlin", 3, false, true)
    );
}

fn rules_path() -> PathBuf {
    fixture_path("organization_rules_events.json")
}

fn activity_path() -> PathBuf {
    fixture_path("device_activity_events.json")
}

/// Follows the settings fixture (version 10) with version 11.
fn write_rules_fixture() {
    let messages = vec![FixtureMessage {
        what: "CategoryRulesChanged v1".into(),
        subject: "evt.acme.organization.org".into(),
        commit: commit(
            "c9",
            vec![(
                "CategoryRulesChanged",
                1,
                11,
                json!({"version": 1, "rules": [
                    {"name": ["Work"], "regex": null, "ignore_case": false, "score": 80},
                    {"name": ["Work", "Programming"], "regex": "code|vim", "ignore_case": true, "score": null}
                ]}),
            )],
        ),
    }];
    let fixture = Fixture {
        keys: BTreeMap::new(),
        messages,
    };
    std::fs::write(
        rules_path(),
        serde_json::to_string_pretty(&fixture).unwrap() + "\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_event_versions_still_load() {
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !rules_path().exists() {
        write_rules_fixture();
    }
    let (_server, store) = start().await;
    for fixture in [path(), membership_path(), settings_path(), rules_path()] {
        publish_fixture(&store, &read_fixture(fixture)).await;
    }
    let loaded = load_org(&store, "org").await;
    assert_eq!((loaded.version, loaded.state.rules_version), (11, 1));
}

fn work_path() -> PathBuf {
    fixture_path("organization_work_events.json")
}

/// Follows the rules fixture (version 11) with versions 12 to 16: teams,
/// clients and attribution rules.
fn write_work_fixture() {
    let messages = vec![FixtureMessage {
        what: "TeamCreated, TeamManagersChanged, MemberTeamChanged, ClientCreated, AttributionRulesChanged v1".into(),
        subject: "evt.acme.organization.org".into(),
        commit: commit(
            "c10",
            vec![
                ("TeamCreated", 1, 12, json!({"team": "core", "name": "Core"})),
                ("TeamManagersChanged", 1, 13, json!({"team": "core", "managers": ["m1"]})),
                ("MemberTeamChanged", 1, 14, json!({"member": "m1", "team": "core"})),
                ("ClientCreated", 1, 15, json!({"client": "globex", "name": "Globex"})),
                (
                    "AttributionRulesChanged",
                    1,
                    16,
                    json!({"version": 1, "rules": [
                        {"project": "apollo", "task": "design", "regex": "figma", "ignore_case": true}
                    ]}),
                ),
            ],
        ),
    }];
    let fixture = Fixture {
        keys: BTreeMap::new(),
        messages,
    };
    std::fs::write(
        work_path(),
        serde_json::to_string_pretty(&fixture).unwrap() + "\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_event_versions_still_load() {
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !work_path().exists() {
        write_work_fixture();
    }
    let (_server, store) = start().await;
    for fixture in [
        path(),
        membership_path(),
        settings_path(),
        rules_path(),
        work_path(),
    ] {
        publish_fixture(&store, &read_fixture(fixture)).await;
    }
    let loaded = load_org(&store, "org").await;
    let org = &loaded.state;
    assert_eq!(loaded.version, 16);
    let core = trackhrs_domain::Token::new("core").unwrap();
    assert_eq!(org.teams[&core].name, "Core");
    assert_eq!(org.teams[&core].managers.len(), 1);
    assert_eq!(org.clients.len(), 1);
    assert_eq!(org.attribution_version, 1);
    assert_eq!(org.attribution[0].regex, "figma");
}

/// A fixture of one commit of device `d1`'s aggregate `aggregate_type`
/// (events of schema version 1), written to `path`.
/// A fixture of one commit of `(aggregate type, aggregate id, actor)`.
fn write_single_commit_fixture(
    path: PathBuf,
    (aggregate_type, aggregate_id, actor): (&str, &str, &str),
    command_id: &str,
    what: &str,
    events: Vec<(&str, serde_json::Value)>,
) {
    let mut c = Commit {
        command_id: command_id.into(),
        org_id: "acme".into(),
        aggregate_type: aggregate_type.into(),
        aggregate_id: aggregate_id.into(),
        actor: actor.into(),
        correlation_id: command_id.into(),
        causation_id: command_id.into(),
        recorded_at_micros: 1_795_000_000_000_000,
        events: Vec::new(),
        // Commits written before request digests existed have none.
        request_digest: String::new(),
    };
    for (n, (t, p)) in events.into_iter().enumerate() {
        c.events.push(EventEnvelope {
            event_type: t.into(),
            schema_version: 1,
            aggregate_version: n as u64 + 1,
            payload: serde_json::to_vec(&p).unwrap(),
        });
    }
    let fixture = Fixture {
        keys: BTreeMap::new(),
        messages: vec![FixtureMessage {
            what: what.into(),
            subject: format!("evt.acme.{aggregate_type}.{aggregate_id}"),
            commit: B64.encode(c.encode_to_vec()),
        }],
    };
    std::fs::write(path, serde_json::to_string_pretty(&fixture).unwrap() + "\n").unwrap();
}

/// A device timeline: one batch of two spans, the first with a sealed
/// title and URL, the second without.
fn write_activity_fixture() {
    let keys = read_fixture(path()).keys;
    let events = vec![
        (
            "BatchAccepted",
            json!({"batch_id": "batch-1", "seq": 1, "member": "m1", "spans": 2}),
        ),
        (
            "SpanRecorded",
            json!({"start_ms": 1_794_999_000_000i64, "end_ms": 1_794_999_060_000i64,
            "app": "code", "title": sealed(&keys, "m1", "main.rs - trackhrs"),
            "url": sealed(&keys, "m1", "https://example.test"), "active": true}),
        ),
        (
            "SpanRecorded",
            json!({"start_ms": 1_794_999_060_000i64, "end_ms": 1_794_999_120_000i64,
            "app": "code", "title": null, "url": null, "active": false}),
        ),
    ];
    write_single_commit_fixture(
        activity_path(),
        ("device_activity", "d1", "device:d1"),
        "batch-1",
        "BatchAccepted v1 and SpanRecorded v1 in one commit",
        events,
    );
}

fn timeline_path() -> PathBuf {
    fixture_path("device_timeline_events.json")
}

/// Raw timelines: one batch with an event version (data sealed), an
/// event's retraction and a bucket's retraction.
fn write_timeline_fixture() {
    let keys = read_fixture(path()).keys;
    let events = vec![
        (
            "TimelineBatchAccepted",
            json!({"batch_id": "timeline-1", "seq": 1, "member": "m1", "changes": 3}),
        ),
        (
            "TimelineEventRecorded",
            json!({"bucket": "aw-watcher-vim_laptop", "bucket_type": "app.editor.activity",
            "client": "aw-watcher-vim", "key": "s1-4", "version": 2,
            "start_us": 1_794_999_000_000_000i64, "end_us": 1_794_999_005_000_000i64,
            "data": sealed(&keys, "m1", r#"{"file":"main.rs"}"#)}),
        ),
        (
            "TimelineEventRetracted",
            json!({"bucket": "aw-watcher-vim_laptop", "key": "s1-3"}),
        ),
        (
            "TimelineBucketRetracted",
            json!({"bucket": "aw-watcher-afk_laptop"}),
        ),
    ];
    write_single_commit_fixture(
        timeline_path(),
        ("device_timeline", "d1", "device:d1"),
        "timeline-1",
        "TimelineBatchAccepted, TimelineEventRecorded, TimelineEventRetracted and TimelineBucketRetracted v1 in one commit",
        events,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_event_versions_still_load() {
    use trackhrs_domain::timeline::DeviceTimeline;
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !timeline_path().exists() {
        write_timeline_fixture();
    }
    let (_server, store) = start().await;
    publish_fixture(&store, &read_fixture(path())).await;
    publish_fixture(&store, &read_fixture(timeline_path())).await;
    let loaded = store
        .load_fresh::<DeviceTimeline>(&tok("acme"), &tok("d1"))
        .await
        .unwrap();
    assert_eq!(
        (
            loaded.version,
            loaded.state.last_seq,
            loaded.state.versions,
            loaded.state.retractions
        ),
        (4, 1, 1, 2)
    );
    let log = read_log(&store).await;
    let last = log
        .skip(read_fixture(path()).messages.len())
        .next()
        .await
        .unwrap()
        .commit
        .unwrap();
    assert_eq!(last.events[1].payload["data"]["v"], r#"{"file":"main.rs"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_event_versions_still_load() {
    use trackhrs_domain::activity::DeviceActivity;
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !activity_path().exists() {
        write_activity_fixture();
    }
    let (_server, store) = start().await;
    // The keys of the people come with the first fixture.
    publish_fixture(&store, &read_fixture(path())).await;
    publish_fixture(&store, &read_fixture(activity_path())).await;
    let loaded = store
        .load_fresh::<DeviceActivity>(&tok("acme"), &tok("d1"))
        .await
        .unwrap();
    assert_eq!(
        (loaded.version, loaded.state.last_seq, loaded.state.spans),
        (3, 1, 2)
    );
    assert_eq!(loaded.state.last_end_ms, Some(1_794_999_120_000));
    let log = read_log(&store).await;
    let last = log
        .skip(read_fixture(path()).messages.len())
        .next()
        .await
        .unwrap()
        .commit
        .unwrap();
    assert_eq!(last.events[1].payload["title"]["v"], "main.rs - trackhrs");
    assert_eq!(last.events[1].payload["url"]["v"], "https://example.test");
}

fn retraction_path() -> PathBuf {
    fixture_path("device_activity_retraction_events.json")
}

/// Device `d2`: one batch with a span and a retraction of part of it.
fn write_retraction_fixture() {
    let events = vec![
        (
            "BatchAccepted",
            json!({"batch_id": "batch-r1", "seq": 1, "member": "m1", "spans": 1}),
        ),
        (
            "SpanRecorded",
            json!({"start_ms": 1_794_999_000_000i64, "end_ms": 1_794_999_060_000i64,
            "app": "code", "title": null, "url": null, "active": true}),
        ),
        (
            "TimeRetracted",
            json!({"start_ms": 1_794_999_030_000i64, "end_ms": 1_794_999_060_000i64}),
        ),
    ];
    write_single_commit_fixture(
        retraction_path(),
        ("device_activity", "d2", "device:d2"),
        "batch-r1",
        "BatchAccepted, SpanRecorded and TimeRetracted v1 in one commit",
        events,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retraction_event_versions_still_load() {
    use trackhrs_domain::activity::{ActivityEvent, DeviceActivity};
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !retraction_path().exists() {
        write_retraction_fixture();
    }
    let (_server, store) = start().await;
    publish_fixture(&store, &read_fixture(path())).await;
    publish_fixture(&store, &read_fixture(retraction_path())).await;
    let loaded = store
        .load_fresh::<DeviceActivity>(&tok("acme"), &tok("d2"))
        .await
        .unwrap();
    assert_eq!(
        (loaded.version, loaded.state.last_seq, loaded.state.spans),
        (3, 1, 1)
    );
    assert_eq!(loaded.state.last_end_ms, Some(1_794_999_060_000));
    let log = read_log(&store).await;
    let last = log
        .skip(read_fixture(path()).messages.len())
        .next()
        .await
        .unwrap()
        .commit
        .unwrap();
    let retracted: ActivityEvent = serde_json::from_value(json!({
        "type": last.events[2].event_type,
        "data": last.events[2].payload,
    }))
    .unwrap();
    assert_eq!(
        retracted,
        ActivityEvent::TimeRetracted {
            start_ms: 1_794_999_030_000,
            end_ms: 1_794_999_060_000
        }
    );
}

fn erasure_path() -> PathBuf {
    fixture_path("person_erasure_events.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_event_versions_still_load() {
    use trackhrs_domain::Aggregate as _;
    use trackhrs_domain::erasure::PersonErasure;
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !erasure_path().exists() {
        write_single_commit_fixture(
            erasure_path(),
            ("erasure", "m1", "operator"),
            "erase-m1",
            "PersonErased v1",
            vec![("PersonErased", json!({"person": "m1"}))],
        );
    }
    let (_server, store) = start().await;
    publish_fixture(&store, &read_fixture(erasure_path())).await;
    let loaded = store
        .load_fresh::<PersonErasure>(&tok("acme"), &tok("m1"))
        .await
        .unwrap();
    assert_eq!(loaded.version, 1);
    let again = loaded
        .state
        .handle(trackhrs_domain::erasure::ErasureCommand::Erase {
            person: tok("m1"),
            by: None,
        });
    assert_eq!(
        again,
        Err(trackhrs_domain::erasure::ErasureError::AlreadyErased)
    );
}

fn project_path() -> PathBuf {
    fixture_path("project_events.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_event_versions_still_load() {
    use trackhrs_domain::Aggregate as _;
    use trackhrs_domain::project::{Project, ProjectCommand};
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !project_path().exists() {
        write_single_commit_fixture(
            project_path(),
            ("project", "apollo", "user:owner"),
            "project-1",
            "every project event v1 in one commit",
            vec![
                (
                    "ProjectCreated",
                    json!({"name": "Apollo", "client": "NASA", "billable": true,
                    "budget": {"hours": 100, "money_minor": 1_000_000}, "members": ["m1"]}),
                ),
                ("TaskAdded", json!({"task": "design", "name": "Design"})),
                (
                    "BudgetChanged",
                    json!({"budget": {"hours": 120, "money_minor": null}}),
                ),
                ("ProjectMembersChanged", json!({"members": ["m1", "m2"]})),
                (
                    "BudgetMarkCrossed",
                    json!({"percent": 80, "booked_ms": 345_600_000i64}),
                ),
                ("BudgetMarkCleared", json!({"percent": 80})),
                ("ProjectArchived", serde_json::Value::Null),
                ("ProjectUnarchived", serde_json::Value::Null),
            ],
        );
    }
    let (_server, store) = start().await;
    publish_fixture(&store, &read_fixture(project_path())).await;
    let loaded = store
        .load_fresh::<Project>(&tok("acme"), &tok("apollo"))
        .await
        .unwrap();
    let p = &loaded.state;
    assert_eq!(loaded.version, 8);
    assert_eq!(
        (
            p.name.as_str(),
            p.client.as_ref().map(|c| c.as_str()),
            p.budget.hours,
            p.archived
        ),
        ("Apollo", Some("NASA"), Some(120), false)
    );
    assert!(p.bookable_by(&tok("m2")) && !p.bookable_by(&tok("m3")));
    assert!(p.marks_crossed.is_empty());
    assert!(
        p.handle(ProjectCommand::RecordBookedTime { booked_ms: 0 })
            .is_ok()
    );
}

fn timesheet_path() -> PathBuf {
    fixture_path("timesheet_events.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timesheet_event_versions_still_load() {
    use trackhrs_domain::timesheet::{Timesheet, WeekStatus};
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !timesheet_path().exists() {
        let keys = read_fixture(path()).keys;
        let week = json!({"start_ms": 1_794_960_000_000i64, "end_ms": 1_795_564_800_000i64});
        write_single_commit_fixture(
            timesheet_path(),
            ("timesheet", "m1-2026-11-16", "user:m1"),
            "timesheet-1",
            "every timesheet event v1 in one commit",
            vec![
                (
                    "EntryAdded",
                    json!({"member": "m1", "week": week, "id": "e1",
                    "entry": {"kind": "manual", "task": {"project": "apollo", "task": "design"},
                        "start_ms": 1_794_996_000_000i64, "end_ms": 1_795_003_200_000i64},
                    "note": sealed(&keys, "m1", "design review")}),
                ),
                (
                    "EntryAdded",
                    json!({"member": "m1", "week": week, "id": "e2",
                    "entry": {"kind": "assignment", "task": {"project": "apollo", "task": "design"},
                        "start_ms": 1_795_003_200_000i64, "end_ms": 1_795_006_800_000i64},
                    "note": null}),
                ),
                ("EntryRemoved", json!({"id": "e2"})),
                ("WeekSubmitted", json!({"member": "m1", "week": week})),
                (
                    "WeekRejected",
                    json!({"by": "m2", "comment": sealed(&keys, "m1", "Friday is missing")}),
                ),
                ("WeekSubmitted", json!({"member": "m1", "week": week})),
                ("WeekApproved", json!({"by": "m2", "comment": null})),
                (
                    "WeekReopened",
                    json!({"by": "owner", "reason": sealed(&keys, "m1", "payroll correction")}),
                ),
            ],
        );
    }
    let (_server, store) = start().await;
    // The keys of the people come with the first fixture.
    publish_fixture(&store, &read_fixture(path())).await;
    publish_fixture(&store, &read_fixture(timesheet_path())).await;
    let loaded = store
        .load_fresh::<Timesheet>(&tok("acme"), &tok("m1-2026-11-16"))
        .await
        .unwrap();
    assert_eq!(loaded.version, 8);
    assert_eq!(loaded.state.status, WeekStatus::Open, "reopened");
    assert_eq!(
        loaded
            .state
            .entries
            .keys()
            .map(|k| k.as_str())
            .collect::<Vec<_>>(),
        ["e1"]
    );
    let log = read_log(&store).await;
    let last = log
        .skip(read_fixture(path()).messages.len())
        .next()
        .await
        .unwrap()
        .commit
        .unwrap();
    assert_eq!(last.events[0].payload["note"]["v"], "design review");
    assert_eq!(last.events[7].payload["reason"]["v"], "payroll correction");
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn payroll_path() -> PathBuf {
    fixture_path("payroll_events.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payroll_event_versions_still_load() {
    use trackhrs_domain::payroll::{Payroll, RunStatus};
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !payroll_path().exists() {
        let h = 3_600_000i64;
        let line = |kind: &str, ms: i64, rate: i64, percent: u32, amount: i64| {
            json!({"member": "m1", "kind": kind, "ms": ms, "days": 0, "rate_minor": rate,
                "percent": percent, "amount_minor": amount})
        };
        write_single_commit_fixture(
            payroll_path(),
            ("payroll", "payroll", "user:owner"),
            "payroll-1",
            "every payroll event v1 in one commit",
            vec![
                (
                    "CurrencySet",
                    json!({"currency": {"code": "EUR", "minor_digits": 2}}),
                ),
                (
                    "ScheduleSet",
                    json!({"from": "2026-01-01", "kind": "monthly"}),
                ),
                (
                    "OvertimeSet",
                    json!({"overtime": {
                        "daily": {"after_ms": 8 * h, "percent": 150},
                        "daily_double": {"after_ms": 12 * h, "percent": 200},
                        "weekly": {"after_ms": 40 * h, "percent": 150}}}),
                ),
                (
                    "HolidaySet",
                    json!({"date": "2026-03-19", "name": "Founders' Day"}),
                ),
                (
                    "HolidaySet",
                    json!({"date": "2026-12-25", "name": "Christmas"}),
                ),
                ("HolidayRemoved", json!({"date": "2026-03-19"})),
                ("DaySet", json!({"ms": 7 * h})),
                (
                    "LeaveTypeDefined",
                    json!({"id": "vacation", "leave_type": {"name": "Vacation", "paid": true,
                        "accrual": {"every": "month", "ms": 8 * h}, "carry_over_cap_ms": 40 * h,
                        "negative_allowance_ms": 0, "since": "2026-01-01"}}),
                ),
                (
                    "RateSet",
                    json!({"member": "m1", "from": "2026-01-01", "rate": {"hourly": {"minor": 2000}}}),
                ),
                (
                    "RateSet",
                    json!({"member": "m2", "from": "2026-01-01", "rate": {"salaried": {"minor": 310_000}}}),
                ),
                ("VisibilitySet", json!({"visibility": {"managers": true}})),
                (
                    "RunDrafted",
                    json!({"period": {"first": "2026-03-01", "last": "2026-03-31"}, "draft": 1,
                        "lines": [line("regular", 8 * h, 2000, 100, 16_000)],
                        "missing": [{"what": "week", "member": "m1", "first_day": "2026-03-30"},
                                    {"what": "rate", "member": "m3", "day": "2026-03-02"}]}),
                ),
                (
                    "RunDrafted",
                    json!({"period": {"first": "2026-03-01", "last": "2026-03-31"}, "draft": 2,
                        "lines": [line("regular", 160 * h, 2000, 100, 320_000),
                                  line("overtime", 2 * h, 2000, 150, 6_000)],
                        "missing": []}),
                ),
                ("RunFinalized", json!({"first": "2026-03-01", "draft": 2})),
                (
                    "RunDrafted",
                    json!({"period": {"first": "2026-04-01", "last": "2026-04-30"}, "draft": 1,
                        "lines": [{"member": "m1", "kind": "leave", "leave_type": "vacation",
                                   "ms": 8 * h, "days": 0, "rate_minor": 2000, "percent": 100,
                                   "amount_minor": 16_000},
                                  {"member": "m1", "kind": "adjustment", "corrects": "2026-03-01",
                                   "ms": 0, "days": 0, "rate_minor": 0, "percent": 100,
                                   "amount_minor": 6_600}],
                        "missing": []}),
                ),
            ],
        );
    }
    let (_server, store) = start().await;
    publish_fixture(&store, &read_fixture(payroll_path())).await;
    let loaded = store
        .load_fresh::<Payroll>(&tok("acme"), &tok("payroll"))
        .await
        .unwrap();
    assert_eq!(loaded.version, 15);
    let p = &loaded.state;
    assert_eq!(
        p.policy.currency.as_ref().map(|c| c.code.as_str()),
        Some("EUR")
    );
    assert_eq!(p.policy.holidays.len(), 1);
    assert_eq!(p.policy.day_ms, 7 * 3_600_000);
    assert!(p.policy.visibility.managers);
    assert_eq!(p.policy.rates.len(), 2);
    let march = &p.runs[&"2026-03-01".parse().unwrap()];
    assert_eq!((march.status, march.draft), (RunStatus::Finalized, 2));
    assert_eq!(march.paid[&tok("m1")], 326_000);
    let april = &p.runs[&"2026-04-01".parse().unwrap()];
    assert_eq!(
        april.adjusts[&"2026-03-01".parse().unwrap()][&tok("m1")],
        6_600
    );
    assert_eq!(
        p.paid_for("2026-03-01".parse().unwrap())[&tok("m1")],
        326_000
    );
}

fn leave_path() -> PathBuf {
    fixture_path("leave_events.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_event_versions_still_load() {
    use trackhrs_domain::leave::{Leave, RequestStatus};
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !leave_path().exists() {
        let keys = read_fixture(path()).keys;
        let h = 3_600_000i64;
        write_single_commit_fixture(
            leave_path(),
            ("leave", "m1", "user:m1"),
            "leave-1",
            "every leave event v1 in one commit",
            vec![
                (
                    "LeaveAccrued",
                    json!({"member": "m1", "leave_type": "vacation", "boundary": "2026-02-01", "ms": 24 * h}),
                ),
                (
                    "LeaveRequested",
                    json!({"member": "m1", "id": "r1", "leave_type": "vacation",
                        "days": {"2026-03-12": 4 * h, "2026-03-13": 8 * h},
                        "note": sealed(&keys, "m1", "family visit")}),
                ),
                ("LeaveApproved", json!({"id": "r1", "by": "m2"})),
                (
                    "LeaveRequested",
                    json!({"member": "m1", "id": "r2", "leave_type": "vacation",
                        "days": {"2026-04-01": 8 * h}, "note": null}),
                ),
                (
                    "LeaveDenied",
                    json!({"id": "r2", "by": "m2", "comment": sealed(&keys, "m1", "release week")}),
                ),
                (
                    "LeaveRequested",
                    json!({"member": "m1", "id": "r3", "leave_type": "vacation",
                        "days": {"2026-05-04": 8 * h}, "note": null}),
                ),
                ("LeaveCancelled", json!({"id": "r3"})),
                (
                    "LeaveForfeited",
                    json!({"member": "m1", "leave_type": "vacation", "year": 2027, "ms": 4 * h}),
                ),
            ],
        );
    }
    let (_server, store) = start().await;
    publish_fixture(&store, &read_fixture(path())).await;
    publish_fixture(&store, &read_fixture(leave_path())).await;
    let loaded = store
        .load_fresh::<Leave>(&tok("acme"), &tok("m1"))
        .await
        .unwrap();
    assert_eq!(loaded.version, 8);
    let l = &loaded.state;
    let status = |id: &str| l.requests[&tok(id)].status;
    assert_eq!(
        (status("r1"), status("r2"), status("r3")),
        (
            RequestStatus::Approved,
            RequestStatus::Denied,
            RequestStatus::Cancelled
        )
    );
    // 24 accrued - 12 taken - 4 forfeited.
    assert_eq!(l.balance(&tok("vacation")), 8 * 3_600_000);
}

fn sealed(keys: &BTreeMap<String, String>, subject: &str, value: &str) -> serde_json::Value {
    let key = DataKey::from_bytes(&unhex(&keys[subject])).unwrap();
    json!({"$pd": subject, "k": key.id, "ct": key.seal(subject, value).unwrap()})
}

fn commit(command_id: &str, events: Vec<(&str, u32, u64, serde_json::Value)>) -> String {
    let c = Commit {
        command_id: command_id.into(),
        org_id: "acme".into(),
        aggregate_type: "organization".into(),
        aggregate_id: "org".into(),
        actor: "user:owner".into(),
        correlation_id: command_id.into(),
        causation_id: command_id.into(),
        recorded_at_micros: 1_795_000_000_000_000,
        events: events
            .into_iter()
            .map(|(t, v, n, p)| EventEnvelope {
                event_type: t.into(),
                schema_version: v,
                aggregate_version: n,
                payload: serde_json::to_vec(&p).unwrap(),
            })
            .collect(),
        // Commits written before request digests existed have none.
        request_digest: String::new(),
    };
    B64.encode(c.encode_to_vec())
}

fn write_fixture() {
    let keys: BTreeMap<String, String> = [
        (
            "owner",
            "00112233445566770102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
        ),
        (
            "m1",
            "8899aabbccddeeff2122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40",
        ),
        (
            "m2",
            "0f1e2d3c4b5a69784142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60",
        ),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    let s = "evt.acme.organization.org".to_owned();
    let messages = vec![
        FixtureMessage {
            what: "OrganizationCreated v1".into(),
            subject: s.clone(),
            commit: commit(
                "c1",
                vec![(
                    "OrganizationCreated",
                    1,
                    1,
                    json!({
                "name": "Acme", "owner": "owner",
                "owner_email": sealed(&keys, "owner", "olive@acme.test"),
                "owner_name": sealed(&keys, "owner", "Olive Owner"),
                "seats": 5}),
                )],
            ),
        },
        FixtureMessage {
            what: "MemberInvited v1 (no name, no role)".into(),
            subject: s.clone(),
            commit: commit(
                "c2",
                vec![(
                    "MemberInvited",
                    1,
                    2,
                    json!({
                "member": "m1", "email": sealed(&keys, "m1", "m1@acme.test")}),
                )],
            ),
        },
        FixtureMessage {
            what: "MemberInvited v2 and SeatsChanged v1 in one commit".into(),
            subject: s,
            commit: commit(
                "c3",
                vec![
                    (
                        "MemberInvited",
                        2,
                        3,
                        json!({
                    "member": "m2", "email": sealed(&keys, "m2", "m2@acme.test"),
                    "name": sealed(&keys, "m2", "Max Two"), "role": "admin"}),
                    ),
                    ("SeatsChanged", 1, 4, json!({"seats": 7})),
                ],
            ),
        },
    ];
    let fixture = Fixture { keys, messages };
    std::fs::write(
        path(),
        serde_json::to_string_pretty(&fixture).unwrap() + "\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_version_still_loads() {
    if std::env::var_os("TRACKHRS_WRITE_FIXTURES").is_some() && !path().exists() {
        write_fixture();
    }
    let fixture = read_fixture(path());
    let (_server, store) = start().await;
    publish_fixture(&store, &fixture).await;

    let loaded = load_org(&store, "org").await;
    assert_eq!((loaded.version, loaded.state.seats), (4, 7));
    let owner = &loaded.state.members[&tok("owner")];
    assert_eq!(
        (owner.role, owner.email.value()),
        (Role::Owner, Some("olive@acme.test"))
    );
    let m1 = &loaded.state.members[&tok("m1")];
    assert_eq!(
        (m1.role, m1.email.value(), m1.name.is_none()),
        (Role::Employee, Some("m1@acme.test"), true)
    );
    let m2 = &loaded.state.members[&tok("m2")];
    assert_eq!(
        (m2.role, m2.name.as_ref().and_then(|n| n.value())),
        (Role::Admin, Some("Max Two"))
    );
    assert_eq!(loaded.committed("c2").map(|a| a.last_version), Some(2));

    // The generic reader decodes every fixture too.
    let log = read_log(&store).await;
    let versions: Vec<(String, u32)> = log
        .take(fixture.messages.len())
        .flat_map(|item| futures::stream::iter(item.commit.unwrap().events))
        .map(|e| (e.event_type, e.schema_version))
        .collect()
        .await;
    assert_eq!(
        versions,
        [
            ("OrganizationCreated".to_owned(), 1),
            ("MemberInvited".to_owned(), 1),
            ("MemberInvited".to_owned(), 2),
            ("SeatsChanged".to_owned(), 1)
        ]
    );
}
