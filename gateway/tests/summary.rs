//! The dashboard summary end to end: uploads through gRPC ingest, the
//! activity projection's rollup (added to per batch, rebuilt when the rules
//! change), and GetDashboardSummary against the member days of GetDashboard
//! at the same position; who may read it, bad ranges, and a deactivated
//! member refused without waiting for the role cache to expire.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use tonic::Code;
use trackhrs_schemas::activity::v1 as apb;
use trackhrs_schemas::activity::v1::activity_client::ActivityClient;
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::{Span, UploadBatchRequest};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::*;

const MINUTE: i64 = 60_000;

fn day_at(days_ago: i64) -> (i64, NaiveDate) {
    let day = Utc::now().date_naive() - chrono::Duration::days(days_ago);
    let at = Utc
        .from_utc_datetime(&day.and_hms_opt(9, 0, 0).unwrap())
        .timestamp_millis();
    (at, day)
}

/// `n` spans of 10 minutes from `start`, cycling through apps and titles;
/// every seventh idle.
fn spans(start: i64, n: i64, salt: usize) -> Vec<Span> {
    const APPS: [(&str, &str); 6] = [
        ("code", "main.rs - trackhrs"),
        ("firefox", "YouTube - cats"),
        ("slack", "#general"),
        ("zoom", "Weekly sync"),
        ("alacritty", "cargo test"),
        ("thunderbird", "Inbox"),
    ];
    (0..n)
        .map(|i| {
            let (app, title) = APPS[(i as usize + salt) % APPS.len()];
            Span {
                start_unix_ms: start + i * 10 * MINUTE,
                end_unix_ms: start + (i + 1) * 10 * MINUTE,
                app: app.into(),
                title: format!("{title} {}", i % 4),
                url: None,
                active: i % 7 != 6,
            }
        })
        .collect()
}

async fn upload(p: &Platform, token: &str, seq: u64, spans: Vec<Span>) -> u64 {
    AgentIngestClient::new(p.gw().channel.clone())
        .upload_batch(authed(
            token,
            UploadBatchRequest {
                batch_id: format!("b{seq}"),
                device_batch_seq: seq,
                spans,
                retractions: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .stream_sequence
}

fn request(
    token: &str,
    (from, to): (NaiveDate, NaiveDate),
    people: &[&str],
    min_position: u64,
) -> tonic::Request<apb::GetDashboardRequest> {
    authed(
        token,
        apb::GetDashboardRequest {
            org_id: "acme".into(),
            from: from.to_string(),
            to: to.to_string(),
            person_ids: people.iter().map(|p| p.to_string()).collect(),
            min_position,
        },
    )
}

/// Both answers at `position`; asserts they reflect the same position.
async fn both(
    p: &Platform,
    token: &str,
    range: (NaiveDate, NaiveDate),
    position: u64,
) -> (apb::DashboardSummary, apb::Dashboard) {
    let mut activity = ActivityClient::new(p.gw().channel.clone());
    let summary = activity
        .get_dashboard_summary(request(token, range, &[], position))
        .await
        .unwrap()
        .into_inner();
    let days = activity
        .get_dashboard(request(token, range, &[], position))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        summary.position, days.position,
        "read at different positions"
    );
    (summary, days)
}

/// The summary the member days add up to.
fn assert_adds_up(summary: &apb::DashboardSummary, days: &apb::Dashboard) {
    let mut members: BTreeMap<&str, (i64, i64, f64, u32)> = BTreeMap::new();
    let mut per_day: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut categories: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut apps: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let (mut active, mut weighted) = (0i64, 0f64);
    for d in &days.days {
        let m = members.entry(&d.person_id).or_default();
        m.0 += d.active_ms;
        m.1 += d.idle_ms;
        m.2 += d.productivity * d.active_ms as f64;
        m.3 += u32::from(d.active_ms + d.idle_ms > 0);
        let t = per_day.entry(&d.day).or_default();
        t.0 += d.active_ms;
        t.1 += d.idle_ms;
        active += d.active_ms;
        weighted += d.productivity * d.active_ms as f64;
        for c in &d.categories {
            let e = categories.entry(&c.name).or_default();
            e.0 += c.active_ms;
            e.1 += c.idle_ms;
        }
        for a in &d.apps {
            let e = apps.entry(&a.name).or_default();
            e.0 += a.active_ms;
            e.1 += a.idle_ms;
        }
    }
    assert_eq!(summary.members.len(), members.len());
    for m in &summary.members {
        let (a, i, w, n) = members[m.person_id.as_str()];
        assert_eq!(
            (m.active_ms, m.idle_ms, m.days),
            (a, i, n),
            "{}",
            m.person_id
        );
        assert!(
            (m.productivity - w / a as f64).abs() < 1e-9,
            "{}",
            m.person_id
        );
    }
    assert!(
        summary
            .members
            .windows(2)
            .all(|w| w[0].active_ms >= w[1].active_ms),
        "members most active first"
    );
    let summary_days: Vec<(&str, (i64, i64))> = summary
        .days
        .iter()
        .map(|d| (d.day.as_str(), (d.active_ms, d.idle_ms)))
        .collect();
    assert_eq!(summary_days, per_day.into_iter().collect::<Vec<_>>());
    let summary_categories: BTreeMap<&str, (i64, i64)> = summary
        .categories
        .iter()
        .map(|c| (c.name.as_str(), (c.active_ms, c.idle_ms)))
        .collect();
    assert_eq!(summary_categories, categories);
    let mut ranked: Vec<(&str, (i64, i64))> = apps.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(b.1.1.cmp(&a.1.1)).then(a.0.cmp(b.0)));
    ranked.truncate(10);
    let summary_apps: Vec<(&str, (i64, i64))> = summary
        .apps
        .iter()
        .map(|a| (a.name.as_str(), (a.active_ms, a.idle_ms)))
        .collect();
    assert_eq!(summary_apps, ranked);
    assert!((summary.productivity - weighted / active as f64).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_is_what_the_member_days_add_up_to_before_and_after_a_rules_change() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 10).await;
    let eve = p.member(&owner, "eve", pb::Role::Employee).await;
    let bob = p.member(&owner, "bob", pb::Role::Employee).await;
    let eve_laptop = p.enroll(&eve, "eve-laptop").await;
    let bob_laptop = p.enroll(&bob, "bob-laptop").await;
    let (two_days_ago, first) = day_at(2);
    let (yesterday, last) = day_at(1);
    let range = (first, last);
    upload(&p, &eve_laptop.device_token, 1, spans(two_days_ago, 30, 0)).await;
    upload(&p, &bob_laptop.device_token, 1, spans(two_days_ago, 20, 3)).await;
    let position = upload(&p, &eve_laptop.device_token, 2, spans(yesterday, 25, 1)).await;

    let (summary, days) = both(&p, &owner.access_token, range, position).await;
    assert_eq!(summary.members.len(), 2);
    assert_eq!(summary.days.len(), 2);
    assert!(summary.apps.len() == 6 && summary.categories.len() > 2);
    assert_adds_up(&summary, &days);

    // New rules: the rollup is rebuilt under them; the totals stay.
    let rules = ActivityClient::new(p.gw().channel.clone())
        .set_category_rules(authed(
            &owner.access_token,
            apb::SetCategoryRulesRequest {
                command_id: "rules-1".into(),
                org_id: "acme".into(),
                rules: vec![apb::CategoryRule {
                    name: vec!["Chat".into()],
                    regex: Some("slack|zoom".into()),
                    ignore_case: false,
                    score: Some(-20),
                }],
                activitywatch_json: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let (changed, days) = both(&p, &owner.access_token, range, rules.position).await;
    assert_eq!(changed.rules_version, 1);
    assert_adds_up(&changed, &days);
    let names: Vec<&str> = changed.categories.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"Chat") && names.contains(&"Uncategorized"),
        "{names:?}"
    );
    let total = |s: &apb::DashboardSummary| {
        s.members
            .iter()
            .map(|m| m.active_ms + m.idle_ms)
            .sum::<i64>()
    };
    assert_eq!(total(&changed), total(&summary));

    // Uploads after the change add to the rebuilt rollup.
    let position = upload(&p, &bob_laptop.device_token, 2, spans(yesterday, 12, 2)).await;
    let (after, days) = both(&p, &owner.access_token, range, position).await;
    assert_adds_up(&after, &days);
    assert_eq!(total(&after), total(&summary) + 12 * 10 * MINUTE);

    // An employee's summary is their own; asking for another member is refused.
    let mut activity = ActivityClient::new(p.gw().channel.clone());
    let own = activity
        .get_dashboard_summary(request(&eve.access_token, range, &[], position))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = own.members.iter().map(|m| m.person_id.as_str()).collect();
    assert_eq!(ids, [eve.person_id.as_str()]);
    assert_code(
        activity
            .get_dashboard_summary(request(&eve.access_token, range, &[&bob.person_id], 0))
            .await,
        Code::PermissionDenied,
        "an employee asks for another member's summary",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ranges_are_refused_and_a_deactivated_member_is_refused_at_once() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    let eve = p.member(&owner, "eve", pb::Role::Employee).await;
    let mut activity = ActivityClient::new(p.gw().channel.clone());
    let (_, day) = day_at(0);
    for (from, to, what) in [
        ("2026-13-01", "2026-12-01", "a month 13"),
        ("yesterday", "2026-12-01", "not a date"),
        ("2026-12-02", "2026-12-01", "to before from"),
        ("2025-01-01", "2026-12-01", "more than 366 days"),
    ] {
        let mut r = request(&owner.access_token, (day, day), &[], 0);
        r.get_mut().from = from.into();
        r.get_mut().to = to.into();
        let status = assert_code(
            activity.get_dashboard_summary(r).await,
            Code::InvalidArgument,
            what,
        );
        assert!(
            status.message().starts_with("from") || status.message().starts_with("to"),
            "{what}: {}",
            status.message()
        );
    }

    // Eve reads (her role is now cached), then is deactivated: refused
    // well before the cache's time to live ends.
    activity
        .get_dashboard_summary(request(&eve.access_token, (day, day), &[], 0))
        .await
        .unwrap();
    let started = Instant::now();
    p.gw()
        .orgs()
        .deactivate_member(authed(
            &owner.access_token,
            pb::MemberRequest {
                command_id: "eve-out".into(),
                org_id: "acme".into(),
                person_id: eve.person_id.clone(),
            },
        ))
        .await
        .unwrap();
    let refused = trackhrs_harness::wait_until(Duration::from_secs(8), || {
        let mut activity = activity.clone();
        let token = eve.access_token.clone();
        async move {
            let r = activity
                .get_dashboard_summary(request(&token, (day, day), &[], 0))
                .await;
            matches!(r, Err(s) if s.code() == Code::PermissionDenied).then_some(())
        }
    })
    .await;
    assert!(
        refused.is_some(),
        "a deactivated member still read after {:?} (the role cache keeps roles {:?})",
        started.elapsed(),
        trackhrs_app::ROLE_TTL
    );
}
