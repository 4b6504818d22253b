//! ActivityWatch watchers reporting to the agent: their heartbeats become
//! the device's activity and raw timelines, classified by the org's rules.

use super::*;
use crate::proxy::{FAIL, LOSE_REPLY, OLD_ONCE, PASS, Proxy};

/// An agent with `--source activitywatch` uploading to `platform` with
/// `token` (every 200 ms, combining what settled for `settle`), its
/// ActivityWatch API on a free loopback port; returned once it knows the
/// policy, with that address and its data folder.
async fn activitywatch_agent(
    platform: &Platform,
    token: String,
    settle: Duration,
) -> (Agent, SocketAddr, tempfile::TempDir) {
    let aw_addr = loopback_addr();
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(
        format!("http://{}", platform.gw().addr),
        token,
        dir.path().join("outbox.db"),
    );
    config.activitywatch_listen = Some(aw_addr);
    config.settle = settle;
    config.upload_every = Duration::from_millis(200);
    let agent = Agent::start_activitywatch(config).unwrap();
    let status = agent.status();
    wait_until("the policy", Duration::from_secs(20), || {
        status.borrow().policy.is_some()
    })
    .await;
    (agent, aw_addr, dir)
}

/// The buckets aw-watcher-window and aw-watcher-afk create first.
async fn watcher_buckets(aw_addr: SocketAddr) {
    for (bucket, kind, client) in [
        (
            "aw-watcher-window_laptop",
            "currentwindow",
            "aw-watcher-window",
        ),
        ("aw-watcher-afk_laptop", "afkstatus", "aw-watcher-afk"),
    ] {
        let body = serde_json::json!({"client": client, "type": kind, "hostname": "laptop"});
        let path = format!("/api/0/buckets/{bucket}");
        let (code, _) = trackhrs_harness::http::call(
            aw_addr,
            "POST",
            &path,
            "localhost:5600",
            &body.to_string(),
        )
        .await
        .unwrap();
        assert_eq!(code, 200, "{bucket}");
    }
}

/// Deletes, as the employee would through the API, the event of `app` in
/// the window watcher's bucket.
async fn delete_window_event(aw_addr: SocketAddr, app: &str) {
    let bucket = "/api/0/buckets/aw-watcher-window_laptop/events";
    let call = |method: &'static str, path: String| async move {
        trackhrs_harness::http::call(aw_addr, method, &path, "localhost:5600", "")
            .await
            .unwrap()
    };
    let (code, listed) = call("GET", bucket.to_owned()).await;
    assert_eq!(code, 200);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["data"]["app"] == app)
        .unwrap_or_else(|| panic!("no event of {app}"))["id"]
        .as_i64()
        .unwrap();
    assert_eq!(call("DELETE", format!("{bucket}/{id}")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activitywatch_watchers_reporting_to_the_agent_become_the_devices_activity() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let (agent, aw_addr, _dir) =
        activitywatch_agent(&platform, token, Duration::from_millis(500)).await;

    // What aw-watcher-window and aw-watcher-afk send: their buckets, then
    // heartbeats (merged within the pulsetime).
    let host = "localhost:5600";
    let call = |method: &'static str, path: String, body: String| async move {
        trackhrs_harness::http::call(aw_addr, method, &path, host, &body)
            .await
            .unwrap()
            .0
    };
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |s: i64| {
        chrono::DateTime::from_timestamp(now_s + s, 0)
            .unwrap()
            .to_rfc3339()
    };
    watcher_buckets(aw_addr).await;
    let window = serde_json::json!({"app": "Code", "title": "main.rs - trackhrs"});
    for s in [-60, -45, -30] {
        let beat = serde_json::json!({"timestamp": at(s), "duration": 0, "data": window});
        let path = "/api/0/buckets/aw-watcher-window_laptop/heartbeat?pulsetime=16".to_owned();
        assert_eq!(call("POST", path, beat.to_string()).await, 200);
    }
    // As aw-watcher-afk reports: its status every few seconds, and at a
    // change the old status up to the last input, then the new one.
    for (s, afk) in [
        (-60, "not-afk"),
        (-50, "not-afk"),
        (-45, "not-afk"),
        (-45, "afk"),
        (-30, "afk"),
        (-20, "afk"),
    ] {
        let beat = serde_json::json!({"timestamp": at(s), "duration": 0, "data": {"status": afk}});
        let path = "/api/0/buckets/aw-watcher-afk_laptop/heartbeat?pulsetime=30".to_owned();
        assert_eq!(call("POST", path, beat.to_string()).await, 200);
    }

    // Window time while not AFK is active, while AFK idle; stored as the
    // enrolled device's spans.
    let expected = vec![
        (
            (now_s - 60) * 1000,
            (now_s - 45) * 1000,
            "Code".to_owned(),
            "main.rs - trackhrs".to_owned(),
        ),
        (
            (now_s - 45) * 1000,
            (now_s - 30) * 1000,
            "Code".to_owned(),
            "main.rs - trackhrs".to_owned(),
        ),
    ];
    let mut stored = Vec::new();
    for _ in 0..200 {
        stored = stored_spans(&platform, &owner.org_id, &device).await;
        if stored.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, expected);
    let timeline = platform
        .store
        .load_fresh::<DeviceActivity>(
            &Token::new(&owner.org_id).unwrap(),
            &Token::new(&device).unwrap(),
        )
        .await
        .unwrap()
        .state;
    assert_eq!(timeline.spans, 2);

    // Paused: what the watchers report meanwhile never becomes spans.
    agent.pause();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = |app: &'static str, from: i64| {
        let call = &call;
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            for s in [from, from + 1, from + 2] {
                let t = chrono::DateTime::from_timestamp(now + s, 0)
                    .unwrap()
                    .to_rfc3339();
                let w = serde_json::json!({"timestamp": t, "duration": 0, "data": {"app": app, "title": ""}});
                let path =
                    "/api/0/buckets/aw-watcher-window_laptop/heartbeat?pulsetime=2".to_owned();
                assert_eq!(call("POST", path, w.to_string()).await, 200);
                let a = serde_json::json!({"timestamp": t, "duration": 0, "data": {"status": "not-afk"}});
                let path = "/api/0/buckets/aw-watcher-afk_laptop/heartbeat?pulsetime=2".to_owned();
                assert_eq!(call("POST", path, a.to_string()).await, 200);
            }
        }
    };
    report("Secret", 0).await;
    // Longer than the combining interval (5 s), so a paused round ran.
    tokio::time::sleep(Duration::from_secs(6)).await;
    agent.resume();
    report("After", 1).await;
    let mut apps = Vec::new();
    for _ in 0..300 {
        apps = stored_spans(&platform, &owner.org_id, &device)
            .await
            .into_iter()
            .map(|s| s.2)
            .collect::<Vec<_>>();
        if apps.iter().any(|a| a == "After") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(apps.iter().any(|a| a == "After"), "{apps:?}");
    assert!(
        !apps.iter().any(|a| a == "Secret"),
        "paused time uploaded: {apps:?}"
    );
    agent.stop(Duration::from_secs(1)).await;
}

/// An event a watcher reports late becomes spans at once (its time is
/// older than the settle time); deleting it through the API afterwards, as
/// ActivityWatch users delete private time, withdraws those spans from the
/// dashboard, where the time shows as removed, nothing of what it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_event_deleted_after_it_became_spans_is_withdrawn() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let (agent, aw_addr, _dir) =
        activitywatch_agent(&platform, token, Duration::from_secs(2)).await;
    let call = |method: &'static str, path: String, body: String| async move {
        trackhrs_harness::http::call(aw_addr, method, &path, "localhost:5600", &body)
            .await
            .unwrap()
    };
    watcher_buckets(aw_addr).await;
    // Ten minutes ago: two minutes of online banking, then a minute of
    // code, reported now (a watcher that was offline), not AFK throughout.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start = now_s - 600;
    let at = |s: i64| {
        chrono::DateTime::from_timestamp(start + s, 0)
            .unwrap()
            .to_rfc3339()
    };
    let window = serde_json::json!([
        {"timestamp": at(0), "duration": 120, "data": {"app": "Bank", "title": "private banking"}},
        {"timestamp": at(120), "duration": 60, "data": {"app": "Code", "title": "main.rs"}},
    ]);
    let afk = serde_json::json!([
        {"timestamp": at(0), "duration": 180, "data": {"status": "not-afk"}},
    ]);
    for (bucket, events) in [
        ("aw-watcher-window_laptop", window),
        ("aw-watcher-afk_laptop", afk),
    ] {
        let path = format!("/api/0/buckets/{bucket}/events");
        assert_eq!(call("POST", path, events.to_string()).await.0, 200);
    }
    let mut stored = Vec::new();
    for _ in 0..300 {
        stored = stored_spans(&platform, &owner.org_id, &device).await;
        if stored.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let apps: Vec<&str> = stored.iter().map(|s| s.2.as_str()).collect();
    assert_eq!(
        apps,
        ["Bank", "Code"],
        "the late events became spans at once"
    );

    // The employee deletes the banking event.
    delete_window_event(aw_addr, "Bank").await;

    // The device's log records the withdrawal after the spans ...
    let mut retracted = Vec::new();
    for _ in 0..300 {
        let (_, log) = device_log::<DeviceActivity>(&platform, &owner.org_id, &device).await;
        retracted = log
            .iter()
            .filter(|(t, _)| t == "TimeRetracted")
            .map(|(_, p)| {
                (
                    p["start_ms"].as_i64().unwrap(),
                    p["end_ms"].as_i64().unwrap(),
                )
            })
            .collect();
        if !retracted.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(retracted, [(start * 1000, (start + 120) * 1000)]);
    // ... and the dashboard no longer counts it: two minutes removed,
    // the minute of code left, no trace of the bank.
    let day = |s: i64| {
        chrono::DateTime::from_timestamp(s, 0)
            .unwrap()
            .date_naive()
            .to_string()
    };
    let mut activity = ActivityClient::new(platform.gw().channel.clone());
    let mut totals = (0, 0);
    let mut dash = activity_pb::Dashboard::default();
    for _ in 0..300 {
        dash = activity
            .get_dashboard(authed(
                &owner.access_token,
                activity_pb::GetDashboardRequest {
                    org_id: owner.org_id.clone(),
                    from: day(start),
                    to: day(now_s),
                    person_ids: vec![],
                    min_position: 0,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        totals = dash
            .days
            .iter()
            .fold((0, 0), |(a, r), d| (a + d.active_ms, r + d.removed_ms));
        if totals.1 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(totals, (60_000, 120_000));
    assert!(
        dash.days
            .iter()
            .all(|d| d.apps.iter().all(|a| a.name != "Bank"))
    );
    assert!(dash.top_titles.iter().all(|t| t.title != "private banking"));
    agent.stop(Duration::from_secs(1)).await;
}

/// A gateway older than retractions would acknowledge a batch and drop
/// them: deleted time waits in the agent's outbox, never sent, until the
/// gateway says it records them; and when a batch reaches an older replica
/// all the same, its retractions wait again until a gateway reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_time_waits_for_a_gateway_that_records_retractions() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let proxy_addr = loopback_addr();
    let proxy = Proxy::new(platform.gw().channel.clone());
    proxy.old_gateway.store(true, Ordering::SeqCst);
    let (_down, rx) = tokio::sync::oneshot::channel();
    proxy.serve(proxy_addr, rx).await;
    let aw_addr = loopback_addr();
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(
        format!("http://{proxy_addr}"),
        token,
        dir.path().join("outbox.db"),
    );
    config.activitywatch_listen = Some(aw_addr);
    config.settle = Duration::from_secs(2);
    config.upload_every = Duration::from_millis(100);
    config.policy_every = Duration::from_millis(200);
    // One span a batch: a retraction travels with the span it withdraws,
    // not with the ones before it.
    config.sync.max_spans = 1;
    let agent = Agent::start_activitywatch(config).unwrap();
    let status = agent.status();
    wait_until("the policy", Duration::from_secs(20), || {
        status.borrow().policy.is_some()
    })
    .await;
    let call = |method: &'static str, path: String, body: String| async move {
        trackhrs_harness::http::call(aw_addr, method, &path, "localhost:5600", &body)
            .await
            .unwrap()
    };
    let window = "aw-watcher-window_laptop";
    for (bucket, kind, client) in [
        (window, "currentwindow", "aw-watcher-window"),
        ("aw-watcher-afk_laptop", "afkstatus", "aw-watcher-afk"),
    ] {
        let body = serde_json::json!({"client": client, "type": kind, "hostname": "laptop"});
        let path = format!("/api/0/buckets/{bucket}");
        assert_eq!(call("POST", path, body.to_string()).await.0, 200);
    }
    // Ten minutes ago, reported late: a minute of banking, then one of
    // code, not AFK throughout.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start = now_s - 600;
    let at = |s: i64| {
        chrono::DateTime::from_timestamp(start + s, 0)
            .unwrap()
            .to_rfc3339()
    };
    for (bucket, events) in [
        (
            window,
            serde_json::json!([
                {"timestamp": at(0), "duration": 60, "data": {"app": "Bank", "title": "private"}},
                {"timestamp": at(60), "duration": 60, "data": {"app": "Code", "title": "main.rs"}},
            ]),
        ),
        (
            "aw-watcher-afk_laptop",
            serde_json::json!([{"timestamp": at(0), "duration": 120, "data": {"status": "not-afk"}}]),
        ),
    ] {
        let path = format!("/api/0/buckets/{bucket}/events");
        assert_eq!(call("POST", path, events.to_string()).await.0, 200);
    }
    let mut stored = 0;
    for _ in 0..300 {
        stored = stored_spans(&platform, &owner.org_id, &device).await.len();
        if stored >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 2, "the late events became spans at once");
    delete_window_event(aw_addr, "Bank").await;
    let retracted = || async {
        let (_, log) = device_log::<DeviceActivity>(&platform, &owner.org_id, &device).await;
        log.iter()
            .filter(|(t, _)| t == "TimeRetracted")
            .map(|(_, p)| {
                (
                    p["start_ms"].as_i64().unwrap(),
                    p["end_ms"].as_i64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let sent = |proxy: &Proxy| {
        proxy
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.retractions.len())
            .sum::<usize>()
    };
    // The old gateway: policies fetched and uploads tried several times,
    // nothing of the deleted time sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sent(&proxy), 0);
    assert!(retracted().await.is_empty());
    // Upgraded: the next policy says so, and the retraction goes.
    proxy.old_gateway.store(false, Ordering::SeqCst);
    let mut withdrawn = Vec::new();
    for _ in 0..300 {
        withdrawn = retracted().await;
        if !withdrawn.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(withdrawn, [(start * 1000, (start + 60) * 1000)]);
    assert_eq!(sent(&proxy), 1);

    // One replica of several is older (a rolling upgrade): the policy came
    // from a newer one, a batch with a span and a retraction reaches the
    // older one, which stores the span and drops the retraction unread.
    proxy.mode.store(FAIL, Ordering::SeqCst);
    for (bucket, events) in [
        (
            window,
            serde_json::json!([
                {"timestamp": at(120), "duration": 60, "data": {"app": "Mail", "title": "inbox"}},
                {"timestamp": at(180), "duration": 60, "data": {"app": "Notes", "title": "private"}},
                {"timestamp": at(240), "duration": 60, "data": {"app": "Code", "title": "lib.rs"}},
            ]),
        ),
        (
            "aw-watcher-afk_laptop",
            serde_json::json!([{"timestamp": at(120), "duration": 180, "data": {"status": "not-afk"}}]),
        ),
    ] {
        let path = format!("/api/0/buckets/{bucket}/events");
        assert_eq!(call("POST", path, events.to_string()).await.0, 200);
    }
    // The first new span is tried (and fails); the other two wait.
    let first_ms = (start + 120) * 1000;
    wait_until(
        "the first new span's upload",
        Duration::from_secs(30),
        || {
            proxy
                .received
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.spans.first().is_some_and(|s| s.start_unix_ms == first_ms))
        },
    )
    .await;
    delete_window_event(aw_addr, "Notes").await;
    proxy.mode.store(OLD_ONCE, Ordering::SeqCst);
    let notes = ((start + 180) * 1000, (start + 240) * 1000);
    for _ in 0..300 {
        withdrawn = retracted().await;
        if withdrawn.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(withdrawn, [(start * 1000, (start + 60) * 1000), notes]);
    // Sent with the span it withdraws, to the older replica; then alone,
    // and read.
    // (starts of the spans, retractions) of each upload with retractions.
    type Upload = (Vec<i64>, Vec<(i64, i64)>);
    let with_retractions: Vec<Upload> = proxy
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !r.retractions.is_empty())
        .map(|r| {
            (
                r.spans.iter().map(|s| s.start_unix_ms).collect(),
                r.retractions
                    .iter()
                    .map(|r| (r.start_unix_ms, r.end_unix_ms))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        with_retractions[1..],
        [(vec![notes.0], vec![notes]), (vec![], vec![notes])]
    );
    let apps: Vec<String> = stored_spans(&platform, &owner.org_id, &device)
        .await
        .into_iter()
        .map(|s| s.2)
        .collect();
    assert_eq!(apps, ["Bank", "Code", "Mail", "Notes", "Code"]);
    agent.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_employees_day_is_classified_with_the_orgs_rules_also_offline() {
    let platform = Platform::start().await;
    let (owner, _, token) = enrolled(&platform).await;
    set_rules(
        &platform,
        &owner,
        "rules-1",
        &[("Editing", "EditorApp"), ("Browsing", "BrowserApp")],
    )
    .await;
    let desktop = BusyDesktop::start(Duration::from_millis(150));
    let dir = tempfile::tempdir().unwrap();
    let run = |gateway: String| {
        let mut config = AgentConfig::new(gateway, token.clone(), dir.path().join("outbox.db"));
        config.poll = Duration::from_millis(50);
        config.upload_every = Duration::from_millis(200);
        config.policy_every = Duration::from_millis(200);
        let display = desktop.display.name.clone();
        Agent::start(config, move || X11Capture::connect(Some(&display))).unwrap()
    };
    let today = |agent: &Agent| {
        let now = chrono::Utc::now().timestamp_millis();
        agent.summary(now - 3_600_000, now + 1000).unwrap()
    };
    let names = |s: &trackhrs_agent::today::Summary| -> BTreeSet<String> {
        s.categories.iter().map(|c| c.category.join("/")).collect()
    };
    let agent = run(format!("http://{}", platform.gw().addr));
    // The org's rules arrive with the policy; the day is classified by
    // them, every active millisecond in exactly one category.
    wait_until("the org's rules", Duration::from_secs(20), || {
        let s = today(&agent);
        s.rules_version == Some(1)
            && names(&s) == BTreeSet::from(["Browsing".into(), "Editing".into()])
    })
    .await;
    let s = today(&agent);
    assert!(s.active_ms > 0);
    assert_eq!(
        s.categories.iter().map(|c| c.active_ms).sum::<i64>(),
        s.active_ms
    );
    // New rules: the whole day moves to the new category.
    set_rules(
        &platform,
        &owner,
        "rules-2",
        &[("Work", "EditorApp|BrowserApp")],
    )
    .await;
    wait_until("the new rules", Duration::from_secs(20), || {
        let s = today(&agent);
        s.rules_version == Some(2) && names(&s) == BTreeSet::from(["Work".into()])
    })
    .await;
    // Titles forbidden, and a rule on titles listed first: the day is
    // classified as the dashboards see it, without the titles recorded
    // locally before the change.
    change_titles(&platform, &owner, false, "titles-off").await;
    set_rules(
        &platform,
        &owner,
        "rules-3",
        &[("Titled", "^doc "), ("Work", "EditorApp|BrowserApp")],
    )
    .await;
    wait_until("the rules and policy", Duration::from_secs(20), || {
        today(&agent).rules_version == Some(3)
            && agent
                .status()
                .borrow()
                .policy
                .is_some_and(|p| !p.capture_titles)
    })
    .await;
    assert_eq!(names(&today(&agent)), BTreeSet::from(["Work".into()]));
    agent.stop(Duration::from_secs(3)).await;
    // Started again with the gateway unreachable: the kept rules and policy
    // classify.
    let closed = loopback_addr();
    let offline = run(format!("http://{closed}"));
    let s = today(&offline);
    assert_eq!(
        (s.rules_version, names(&s)),
        (Some(3), BTreeSet::from(["Work".into()]))
    );
    offline.stop(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_activitywatch_timelines_are_synced_with_versions_and_retractions() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    change_titles(&platform, &owner, false, "titles-off").await;
    let proxy_addr = loopback_addr();
    let proxy = Proxy::new(platform.gw().channel.clone());
    let (_down, rx) = tokio::sync::oneshot::channel();
    proxy.serve(proxy_addr, rx).await;
    let aw_addr = loopback_addr();
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(
        format!("http://{proxy_addr}"),
        token,
        dir.path().join("outbox.db"),
    );
    config.activitywatch_listen = Some(aw_addr);
    config.settle = Duration::from_millis(300);
    config.upload_every = Duration::from_millis(100);
    config.sync.base_backoff = Duration::from_millis(50);
    config.sync.max_backoff = Duration::from_millis(200);
    let agent = Agent::start_activitywatch(config).unwrap();
    let status = agent.status();
    wait_until("the policy", Duration::from_secs(20), || {
        status.borrow().policy.is_some()
    })
    .await;

    let call = |method: &'static str, path: String, body: serde_json::Value| async move {
        trackhrs_harness::http::call(aw_addr, method, &path, "localhost:5600", &body.to_string())
            .await
            .unwrap()
    };
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |s: i64| {
        chrono::DateTime::from_timestamp(now_s + s, 0)
            .unwrap()
            .to_rfc3339()
    };
    let (window, afk, vim) = (
        "aw-watcher-window_laptop",
        "aw-watcher-afk_laptop",
        "aw-watcher-vim_laptop",
    );
    for (bucket, kind, client) in [
        (window, "currentwindow", "aw-watcher-window"),
        (afk, "afkstatus", "aw-watcher-afk"),
        (vim, "app.editor.activity", "aw-watcher-vim"),
    ] {
        let body = serde_json::json!({"client": client, "type": kind, "hostname": "laptop"});
        assert_eq!(
            call("POST", format!("/api/0/buckets/{bucket}"), body)
                .await
                .0,
            200
        );
    }
    let secret = serde_json::json!({"app": "Code", "title": "Secret plans", "url": "https://secret.example/"});
    for s in [-60, -50] {
        let beat = serde_json::json!({"timestamp": at(s), "duration": 0, "data": secret});
        let path = format!("/api/0/buckets/{window}/heartbeat?pulsetime=16");
        assert_eq!(call("POST", path, beat).await.0, 200);
    }
    let beat =
        serde_json::json!({"timestamp": at(-60), "duration": 10, "data": {"status": "not-afk"}});
    let path = format!("/api/0/buckets/{afk}/heartbeat?pulsetime=30");
    assert_eq!(call("POST", path, beat).await.0, 200);
    let edits = serde_json::json!([
        {"timestamp": at(-58), "duration": 5, "data": {"file": "main.rs", "language": "rust"}},
        {"timestamp": at(-52), "duration": 2, "data": {"file": "Cargo.toml", "language": "toml"}},
    ]);
    let (code, inserted) = call("POST", format!("/api/0/buckets/{vim}/events"), edits).await;
    assert_eq!(code, 200);
    let inserted: serde_json::Value = serde_json::from_str(&inserted).unwrap();
    let (first, second) = (
        inserted[0]["id"].as_i64().unwrap(),
        inserted[1]["id"].as_i64().unwrap(),
    );

    // All three timelines reach the platform, each bucket's data with only
    // the fields the policy lets through for its type.
    let (org, dev) = (owner.org_id.as_str(), device.as_str());
    let rows = raw_timeline(&platform, org, dev, "three timelines", |rows| {
        rows.len() == 4
    })
    .await;
    let in_bucket = |rows: &[TimelineRow], b: &str| {
        rows.iter()
            .filter(|r| r.bucket == b)
            .cloned()
            .collect::<Vec<_>>()
    };
    let w = in_bucket(&rows, window);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].data, Some(serde_json::json!({"app": "Code"})));
    assert_eq!(w[0].bucket_type, "currentwindow");
    assert_eq!(
        (w[0].start_us, w[0].end_us),
        ((now_s - 60) * 1_000_000, (now_s - 50) * 1_000_000)
    );
    let v = in_bucket(&rows, vim);
    assert_eq!(v.len(), 2);
    assert!(
        v.iter()
            .all(|r| r.bucket_type == "app.editor.activity" && r.client == "aw-watcher-vim")
    );
    // An editor's file names are free text: not without titles.
    assert_eq!(v[0].data, Some(serde_json::json!({"language": "rust"})));

    // The first edit replaced (version 2) and the second deleted while the
    // gateway stores an upload but its reply is lost.
    proxy.timeline_mode.store(LOSE_REPLY, Ordering::SeqCst);
    let replaced = serde_json::json!({"id": first, "timestamp": at(-58), "duration": 6, "data": {"file": "lib.rs", "language": "rust"}});
    assert_eq!(
        call("POST", format!("/api/0/buckets/{vim}/events"), replaced)
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            "DELETE",
            format!("/api/0/buckets/{vim}/events/{second}"),
            serde_json::json!({})
        )
        .await
        .0,
        200
    );
    let rows = raw_timeline(
        &platform,
        org,
        dev,
        "the edit replaced, the other deleted",
        |rows| {
            let v = in_bucket(rows, vim);
            v.len() == 1 && v[0].version == 2
        },
    )
    .await;
    let v = in_bucket(&rows, vim);
    assert_eq!(v[0].data, Some(serde_json::json!({"language": "rust"})));
    assert_eq!(v[0].end_us - v[0].start_us, 6_000_000);

    // The AFK bucket deleted while the gateway fails for a while.
    let failing_from = proxy.timelines.lock().unwrap().len();
    proxy.timeline_mode.store(FAIL, Ordering::SeqCst);
    assert_eq!(
        call(
            "DELETE",
            format!("/api/0/buckets/{afk}"),
            serde_json::json!({})
        )
        .await
        .0,
        200
    );
    wait_until(
        "failed uploads of the retraction",
        Duration::from_secs(10),
        || proxy.timelines.lock().unwrap().len() >= failing_from + 2,
    )
    .await;
    proxy.timeline_mode.store(PASS, Ordering::SeqCst);
    let rows = raw_timeline(&platform, org, dev, "the AFK bucket dropped", |rows| {
        in_bucket(rows, afk).is_empty()
    })
    .await;
    assert_eq!(rows.len(), 2, "{rows:#?}");

    // The log keeps every version once and the retractions; nothing the
    // policy forbids left the machine.
    let (state, log) = device_log::<DeviceTimeline>(&platform, org, dev).await;
    let mut versions = Vec::new();
    let mut retracted = Vec::new();
    for (event_type, p) in &log {
        match event_type.as_str() {
            "TimelineEventRecorded" => versions.push((
                p["bucket"].as_str().unwrap().to_owned(),
                p["key"].as_str().unwrap().to_owned(),
                p["version"].as_u64().unwrap(),
            )),
            "TimelineEventRetracted" => retracted.push(p["bucket"].as_str().unwrap().to_owned()),
            "TimelineBucketRetracted" => {
                retracted.push(format!("bucket {}", p["bucket"].as_str().unwrap()))
            }
            _ => {}
        }
    }
    let distinct: BTreeSet<_> = versions.iter().collect();
    assert_eq!(
        distinct.len(),
        versions.len(),
        "a version recorded twice: {versions:?}"
    );
    // Two editor events, one replaced; the window and the AFK event (each
    // once, or twice when a heartbeat came after its first upload).
    assert!(versions.len() >= 5, "{versions:?}");
    assert_eq!(retracted, vec![vim.to_owned(), format!("bucket {afk}")]);
    assert_eq!(
        (state.versions, state.retractions),
        (versions.len() as u64, 2)
    );
    // The manager's view over gRPC: the same events; an employee sees
    // only their own devices.
    let ask = |token: &str, device: &str, from_ms: i64, to_ms: i64| {
        authed(
            token,
            activity_pb::GetDeviceTimelineRequest {
                org_id: owner.org_id.clone(),
                device_id: device.into(),
                from_unix_ms: from_ms,
                to_unix_ms: to_ms,
                min_position: 0,
            },
        )
    };
    let mut activity = ActivityClient::new(platform.gw().channel.clone());
    let day = (now_s * 1000 - 3_600_000, now_s * 1000 + 60_000);
    let answer = activity
        .get_device_timeline(ask(&owner.access_token, dev, day.0, day.1))
        .await
        .unwrap()
        .into_inner();
    let seen: Vec<_> = answer
        .events
        .iter()
        .map(|e| (e.bucket_id.as_str(), e.version, e.data_json.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (window, rows[0].version as u64, r#"{"app":"Code"}"#),
            (vim, 2, r#"{"language":"rust"}"#),
        ]
    );
    assert!(!answer.truncated);
    let later = activity
        .get_device_timeline(ask(&owner.access_token, dev, now_s * 1000, day.1))
        .await
        .unwrap()
        .into_inner();
    assert!(later.events.is_empty(), "{later:?}");
    let employee = platform.member(&owner, "erin", pb::Role::Employee).await;
    let status = activity
        .get_device_timeline(ask(&employee.access_token, dev, day.0, day.1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let status = activity
        .get_device_timeline(ask(&owner.access_token, "nope", day.0, day.1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let status = activity
        .get_device_timeline(ask(&owner.access_token, dev, day.1, day.0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    let sent = proxy.timelines.lock().unwrap().clone();
    assert!(sent.len() >= 3, "{sent:?}");
    for request in &sent {
        for change in &request.changes {
            let text = format!("{change:?}");
            assert!(
                !text.contains("Secret plans") && !text.contains("secret.example"),
                "{text}"
            );
        }
    }
    agent.stop(Duration::from_secs(1)).await;
}
