//! Dashboards end to end: uploads through gRPC ingest, the activity
//! projection, classification with default and imported rules, the cache and
//! its invalidation across replicas, and a rebuild beside the live version.

use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use tonic::Code;
use trackhrs_projections::activity::Activity;
use trackhrs_projections::{Runner, RunnerConfig, VersionState, catalog};
use trackhrs_schemas::activity::v1 as apb;
use trackhrs_schemas::activity::v1::activity_client::ActivityClient;
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::{Span, UploadBatchRequest};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::*;

/// Yesterday 09:00 UTC, so every span is in the past and on one UTC day.
fn morning() -> (i64, NaiveDate) {
    let day = Utc::now().date_naive() - chrono::Duration::days(1);
    let at = Utc
        .from_utc_datetime(&day.and_hms_opt(9, 0, 0).unwrap())
        .timestamp_millis();
    (at, day)
}

fn span(start: i64, minutes: i64, app: &str, title: &str, active: bool) -> Span {
    Span {
        start_unix_ms: start,
        end_unix_ms: start + minutes * 60_000,
        app: app.into(),
        title: title.into(),
        url: None,
        active,
    }
}

/// 60 min of coding, 30 of YouTube, 15 idle: one batch.
fn workday(start: i64) -> Vec<Span> {
    vec![
        span(start, 60, "code", "main.rs - trackhrs", true),
        span(start + 60 * 60_000, 30, "firefox", "YouTube - cats", true),
        span(start + 90 * 60_000, 15, "code", "main.rs - trackhrs", false),
    ]
}

fn dashboard_request(
    token: &str,
    day: NaiveDate,
    min_position: u64,
) -> tonic::Request<apb::GetDashboardRequest> {
    authed(
        token,
        apb::GetDashboardRequest {
            org_id: "acme".into(),
            from: day.to_string(),
            to: day.to_string(),
            person_ids: vec![],
            min_position,
        },
    )
}

fn category<'a>(day: &'a apb::MemberDay, name: &str) -> Option<&'a apb::Breakdown> {
    day.categories.iter().find(|c| c.name == name)
}

struct Setup {
    owner: pb::Session,
    employee: pb::Session,
    position: u64,
    day: NaiveDate,
}

async fn upload_workday(p: &Platform) -> Setup {
    let owner = p.sign_up("acme", 5).await;
    let employee = p.member(&owner, "eve", pb::Role::Employee).await;
    let device = p.enroll(&employee, "laptop").await;
    let (start, day) = morning();
    let ack = AgentIngestClient::new(p.gw().channel.clone())
        .upload_batch(authed(
            &device.device_token,
            UploadBatchRequest {
                batch_id: "day-1".into(),
                device_batch_seq: 1,
                spans: workday(start),
                retractions: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    Setup {
        owner,
        employee,
        position: ack.stream_sequence,
        day,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workday_shows_up_classified_on_the_dashboard() {
    let p = Platform::start().await;
    let s = upload_workday(&p).await;
    let mut activity = ActivityClient::new(p.gw().channel.clone());
    let dash = activity
        .get_dashboard(dashboard_request(&s.owner.access_token, s.day, s.position))
        .await
        .unwrap()
        .into_inner();
    assert!(dash.position >= s.position);
    assert_eq!(dash.days.len(), 1);
    let d = &dash.days[0];
    assert_eq!(
        (d.person_id.as_str(), d.day.as_str()),
        (s.employee.person_id.as_str(), s.day.to_string().as_str())
    );
    assert_eq!((d.active_ms, d.idle_ms), (90 * 60_000, 15 * 60_000));
    let programming = category(d, "Work > Programming").expect("coding is Work > Programming");
    assert_eq!(
        (programming.active_ms, programming.idle_ms),
        (60 * 60_000, 15 * 60_000)
    );
    assert_eq!(
        category(d, "Media > Video").map(|c| c.active_ms),
        Some(30 * 60_000)
    );
    let code = d.apps.iter().find(|a| a.name == "code").unwrap();
    assert_eq!(code.active_ms + code.idle_ms, 75 * 60_000);
    // Work scores above Media: an hour of work and half an hour of video
    // is productive on balance.
    assert!(d.productivity > 0.0, "{}", d.productivity);
    assert_eq!(dash.top_titles[0].title, "main.rs - trackhrs");
    assert_eq!(dash.top_titles[0].ms, 75 * 60_000);

    // The employee sees themselves and no one else.
    let own = activity
        .get_dashboard(dashboard_request(&s.employee.access_token, s.day, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.days.len(), 1);
    let mut other = dashboard_request(&s.employee.access_token, s.day, 0);
    other.get_mut().person_ids = vec![s.owner.person_id.clone()];
    assert_code(
        activity.get_dashboard(other).await,
        Code::PermissionDenied,
        "employee asks for another",
    );

    // Bad ranges are named.
    let mut bad = dashboard_request(&s.owner.access_token, s.day, 0);
    bad.get_mut().from = "yesterday".into();
    let status = assert_code(
        activity.get_dashboard(bad).await,
        Code::InvalidArgument,
        "bad date",
    );
    assert!(status.message().starts_with("from:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_rules_move_time_between_categories_and_keep_the_total() {
    let p = Platform::start().await;
    let s = upload_workday(&p).await;
    let mut activity = ActivityClient::new(p.gw().channel.clone());
    let before = activity
        .get_dashboard(dashboard_request(&s.owner.access_token, s.day, s.position))
        .await
        .unwrap()
        .into_inner();
    // An ActivityWatch export: cat videos count as research now.
    let export = r##"{"categories": [
        {"id": 0, "name": ["Work"], "rule": {"type": "none"}, "data": {"color": "#0F0", "score": 100}},
        {"id": 1, "name": ["Work", "Research"], "rule": {"type": "regex", "regex": "youtube", "ignore_case": true}},
        {"id": 2, "name": ["Work", "Programming"], "rule": {"type": "regex", "regex": "^code$"}}
    ]}"##;
    let set = activity
        .set_category_rules(authed(
            &s.owner.access_token,
            apb::SetCategoryRulesRequest {
                command_id: "rules-1".into(),
                org_id: "acme".into(),
                rules: vec![],
                activitywatch_json: export.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.categories, 3);
    let after = activity
        .get_dashboard(dashboard_request(
            &s.owner.access_token,
            s.day,
            set.position,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.rules_version, 1);
    let (b, a) = (&before.days[0], &after.days[0]);
    assert_eq!(
        (a.active_ms, a.idle_ms),
        (b.active_ms, b.idle_ms),
        "total time changed"
    );
    assert_eq!(
        category(a, "Work > Research").map(|c| c.active_ms),
        Some(30 * 60_000)
    );
    assert!(category(a, "Media > Video").is_none());
    assert!(a.productivity > b.productivity);
    // The rules in force read back, also as an export.
    let rules = activity
        .get_category_rules(authed(
            &s.owner.access_token,
            apb::GetCategoryRulesRequest {
                org_id: "acme".into(),
                min_position: set.position,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rules.rules_version, rules.rules.len()), (1, 3));
    assert!(rules.activitywatch_json.contains("Research"));
    // Employees set no rules; broken rules are named.
    assert_code(
        activity
            .set_category_rules(authed(
                &s.employee.access_token,
                apb::SetCategoryRulesRequest {
                    command_id: "rules-eve".into(),
                    org_id: "acme".into(),
                    rules: vec![],
                    activitywatch_json: export.into(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "employee sets rules",
    );
    let status = assert_code(
        activity
            .set_category_rules(authed(
                &s.owner.access_token,
                apb::SetCategoryRulesRequest {
                    command_id: "rules-2".into(),
                    org_id: "acme".into(),
                    rules: vec![apb::CategoryRule {
                        name: vec!["Work".into()],
                        regex: Some("(unclosed".into()),
                        ignore_case: false,
                        score: None,
                    }],
                    activitywatch_json: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
        "a regex that does not compile",
    );
    assert!(
        status.message().contains("categories[0]"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_evicts_its_cached_dashboards_when_the_projection_commits() {
    let mut p = Platform::start().await;
    p.add_replica(Default::default()).await;
    let s = upload_workday(&p).await;
    let mut on_b = ActivityClient::new(p.replicas[1].channel.clone());
    let first = on_b
        .get_dashboard(dashboard_request(&s.owner.access_token, s.day, s.position))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.replicas[1].app.activity().cache().len(), 1);
    // Served from the cache: the same answer.
    let cached = on_b
        .get_dashboard(dashboard_request(&s.owner.access_token, s.day, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cached, first);
    // An upload through replica A: the projection's commit evicts acme's
    // dashboards on replica B.
    let device = p.enroll(&s.owner, "owner-laptop").await;
    let (start, _) = morning();
    let ack = AgentIngestClient::new(p.replicas[0].channel.clone())
        .upload_batch(authed(
            &device.device_token,
            UploadBatchRequest {
                batch_id: "owner-1".into(),
                device_batch_seq: 1,
                spans: vec![span(start, 45, "code", "lib.rs", true)],
                retractions: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let evicted = trackhrs_harness::wait_until(Duration::from_secs(10), || {
        let len = p.replicas[1].app.activity().cache().len();
        async move { (len == 0).then_some(()) }
    })
    .await;
    assert!(evicted.is_some(), "replica B kept a stale dashboard");
    let fresh = on_b
        .get_dashboard(dashboard_request(
            &s.owner.access_token,
            s.day,
            ack.stream_sequence,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.days.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_with_changed_rules_builds_beside_the_live_version_and_reads_never_fail() {
    let p = Platform::start().await;
    let s = upload_workday(&p).await;
    let mut activity = ActivityClient::new(p.gw().channel.clone());
    let default_rules = activity
        .get_dashboard(dashboard_request(&s.owner.access_token, s.day, s.position))
        .await
        .unwrap()
        .into_inner();
    let rules = activity
        .set_category_rules(authed(
            &s.owner.access_token,
            apb::SetCategoryRulesRequest {
                command_id: "rules-1".into(),
                org_id: "acme".into(),
                rules: vec![apb::CategoryRule {
                    name: vec!["Learning".into()],
                    regex: Some("youtube".into()),
                    ignore_case: true,
                    score: Some(50),
                }],
                activitywatch_json: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let before = activity
        .get_dashboard(dashboard_request(
            &s.owner.access_token,
            s.day,
            rules.position,
        ))
        .await
        .unwrap()
        .into_inner();
    let pg_config: tokio_postgres::Config = p.db.connection_string().parse().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let rebuild = tokio::spawn(
        Runner::new(
            Activity::new(2),
            p.store.clone(),
            pg_config,
            RunnerConfig {
                batch_max: 1,
                batch_wait: Duration::from_millis(20),
                promote_when_caught_up: true,
                ..RunnerConfig::default()
            },
        )
        .run(async {
            let _ = stopped.await;
        }),
    );
    // Reads keep succeeding, with the same totals, until and after the switch.
    let pg = p.db.connect().await.unwrap();
    let mut reads = 0;
    loop {
        p.gw().app.activity().cache().clear();
        let dash = activity
            .get_dashboard(dashboard_request(&s.owner.access_token, s.day, 0))
            .await
            .expect("a read failed during the rebuild")
            .into_inner();
        assert_eq!(dash.days[0].active_ms, before.days[0].active_ms);
        reads += 1;
        let v2 = catalog::version_info(&pg, "activity", 2).await.unwrap();
        if v2.is_some_and(|v| v.state == VersionState::Live) {
            break;
        }
        assert!(reads < 2000, "the rebuild never went live");
    }
    let v1 = catalog::version_info(&pg, "activity", 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1.state, VersionState::Retired);
    let after = activity
        .get_dashboard(dashboard_request(&s.owner.access_token, s.day, 0))
        .await
        .unwrap()
        .into_inner();
    // The rebuilt version classified all of history with the changed rules:
    // the video time moved to Learning, the total stayed.
    assert_eq!(after.days, before.days);
    let (old, new) = (&default_rules.days[0], &after.days[0]);
    assert_eq!(
        (old.active_ms, old.idle_ms),
        (new.active_ms, new.idle_ms),
        "total time changed"
    );
    assert_eq!(
        category(old, "Media > Video").map(|c| c.active_ms),
        Some(30 * 60_000)
    );
    assert_eq!(
        category(new, "Learning").map(|c| c.active_ms),
        Some(30 * 60_000)
    );
    assert!(category(new, "Media > Video").is_none());
    let _ = stop.send(());
    rebuild.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_preview_shows_where_the_last_days_would_move_and_stores_nothing() {
    let p = Platform::start().await;
    let s = upload_workday(&p).await;
    let manager = p.member(&s.owner, "max", pb::Role::Manager).await;
    let mut activity = ActivityClient::new(p.gw().channel.clone());
    activity
        .get_dashboard(dashboard_request(&s.owner.access_token, s.day, s.position))
        .await
        .unwrap();
    let fun = apb::CategoryRule {
        name: vec!["Fun".into()],
        regex: Some("YouTube".into()),
        ignore_case: false,
        score: Some(-1),
    };
    let preview = |token: &str, rules: Vec<apb::CategoryRule>| {
        authed(
            token,
            apb::PreviewCategoryRulesRequest {
                org_id: "acme".into(),
                rules,
                activitywatch_json: String::new(),
            },
        )
    };
    let before = p.last_sequence().await;
    let shown = activity
        .preview_category_rules(preview(&s.owner.access_token, vec![fun.clone()]))
        .await
        .unwrap()
        .into_inner();
    let minutes = |name: &str| {
        shown
            .categories
            .iter()
            .find(|c| c.name == name)
            .map(|c| (c.current_ms / 60_000, c.proposed_ms / 60_000))
    };
    // Coding (75 min, 15 of them idle) loses its category; YouTube (30 min)
    // goes to Fun.
    assert_eq!(minutes("Work > Programming"), Some((75, 0)));
    assert_eq!(minutes("Fun"), Some((0, 30)));
    assert_eq!(minutes("Uncategorized").map(|m| m.1), Some(75));
    assert_eq!(shown.total_ms, 105 * 60_000);
    assert_eq!(shown.moved_ms, 105 * 60_000);
    assert_eq!(shown.rules_version, 0);
    assert!(shown.from.as_str() <= s.day.to_string().as_str() && s.day.to_string() <= shown.to);
    // The rules in force, previewed: nothing moves.
    let same = activity
        .preview_category_rules(preview(&s.owner.access_token, vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((same.moved_ms, same.total_ms), (0, 105 * 60_000));
    assert_eq!(
        p.last_sequence().await,
        before,
        "a preview stored something"
    );

    // Only those who may change the rules preview them; bad rules are named.
    let refused = activity
        .preview_category_rules(preview(&manager.access_token, vec![fun]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let bad = apb::CategoryRule {
        name: vec!["Broken".into()],
        regex: Some("(unclosed".into()),
        ignore_case: false,
        score: None,
    };
    let refused = activity
        .preview_category_rules(preview(&s.owner.access_token, vec![bad]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("rules"), "{refused:?}");
}
