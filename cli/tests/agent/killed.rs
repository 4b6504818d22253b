//! The `trackhrs agent` process killed with SIGKILL while it works: nothing
//! acknowledged is lost, nothing is stored twice.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_at_any_moment_loses_nothing_and_doubles_nothing() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let desktop = BusyDesktop::start(Duration::from_millis(170));
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let data = dir.path().join("agent");
    let gateway = platform.gw().addr;

    // Killed with SIGKILL six times at random moments; each time, what the
    // outbox held (committed, not yet acknowledged) is noted.
    let mut committed = BTreeSet::new();
    for _ in 0..6 {
        let mut agent = spawn_agent(&desktop.display.name, gateway, &token_file, &data);
        let pause = rand::rng().random_range(400..1600);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        agent.kill9();
        committed.extend(outbox_spans(&data));
    }
    // A last run, stopped politely: it commits its open span and uploads.
    let mut agent = spawn_agent(&desktop.display.name, gateway, &token_file, &data);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(desktop);
    committed.extend(outbox_spans(&data));
    agent.terminate();

    let outbox = Outbox::open(&data.join("outbox.db")).unwrap();
    assert_eq!(outbox.spans().unwrap(), vec![], "the outbox was uploaded");
    assert_eq!(outbox.set_aside().unwrap(), vec![], "nothing was refused");
    let stored = stored_spans(&platform, &owner.org_id, &device).await;
    assert_no_overlap(&stored);
    let stored_set: BTreeSet<_> = stored.iter().cloned().collect();
    assert_eq!(stored_set.len(), stored.len(), "a span stored twice");
    let missing: Vec<_> = committed.difference(&stored_set).collect();
    assert!(
        missing.is_empty(),
        "committed spans never stored: {missing:?}\nstored: {stored:?}"
    );
    assert!(
        stored.len() >= 20,
        "the agent recorded {} spans in about 8 s of title changes",
        stored.len()
    );
    assert!(stored.iter().all(|s| APPS.contains(&s.2.as_str())));
    assert!(
        stored.iter().any(|s| s.3.starts_with("doc ")),
        "titles are allowed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_timelines_lose_and_double_nothing_when_the_agent_is_killed_at_any_moment() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let data = dir.path().join("agent");
    let aw_addr = loopback_addr();
    let listen = aw_addr.to_string();
    let args = [
        "--source",
        "activitywatch",
        "--activitywatch-listen",
        &listen,
        "--settle-secs",
        "0",
    ];
    let call = |method: &'static str, path: String, body: serde_json::Value| async move {
        trackhrs_harness::http::call(aw_addr, method, &path, "localhost:5600", &body.to_string())
            .await
            .ok()
    };
    let start_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600;
    let bucket = "aw-watcher-counter_laptop";
    let new_bucket = serde_json::json!({"client": "aw-watcher-counter", "type": "test.counter", "hostname": "laptop"});
    // A watcher inserting an event every ~20 ms and deleting every fourth
    // one shortly after, while the agent is killed with SIGKILL six times.
    let mut n = 0i64;
    let mut inserted: Vec<i64> = Vec::new();
    for round in 0..7 {
        let mut agent = spawn_agent_with(&args, platform.gw().addr, &token_file, &data);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while call("GET", "/api/0/info".into(), serde_json::json!({}))
            .await
            .is_none()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the agent's API never came up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        call(
            "POST",
            format!("/api/0/buckets/{bucket}"),
            new_bucket.clone(),
        )
        .await;
        let run = Duration::from_millis(if round == 6 {
            1000
        } else {
            rand::rng().random_range(300..1200)
        });
        let until = tokio::time::Instant::now() + run;
        while tokio::time::Instant::now() < until {
            n += 1;
            let at = chrono::DateTime::from_timestamp(start_s + n, 0)
                .unwrap()
                .to_rfc3339();
            let event = serde_json::json!({"timestamp": at, "duration": 0.5, "data": {"n": n}});
            if let Some((200, body)) =
                call("POST", format!("/api/0/buckets/{bucket}/events"), event).await
            {
                let stored: serde_json::Value = serde_json::from_str(&body).unwrap();
                inserted.push(stored[0]["id"].as_i64().unwrap());
            }
            if n % 4 == 0 && inserted.len() >= 2 {
                let id = inserted.remove(inserted.len() - 2);
                call(
                    "DELETE",
                    format!("/api/0/buckets/{bucket}/events/{id}"),
                    serde_json::json!({}),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round < 6 {
            agent.kill9();
            continue;
        }
        // The last run: the platform's copy ends up equal to the local store.
        let local = || {
            let store = AwStore::open(&data.join("activitywatch.db")).unwrap();
            let mut events: Vec<_> = store
                .events(bucket, None, None, None)
                .unwrap()
                .into_iter()
                .map(|e| {
                    let start = e.timestamp.timestamp_micros();
                    (
                        e.id.unwrap(),
                        start,
                        start + (e.duration * 1e6) as i64,
                        e.data["n"].as_i64().unwrap(),
                    )
                })
                .collect();
            events.sort();
            events
        };
        let as_local = |rows: &[TimelineRow]| {
            let mut events: Vec<_> = rows
                .iter()
                .filter(|r| r.bucket == bucket)
                .map(|r| {
                    let id = r.key.rsplit('-').next().unwrap().parse::<i64>().unwrap();
                    (
                        id,
                        r.start_us,
                        r.end_us,
                        r.data.as_ref().unwrap()["n"].as_i64().unwrap(),
                    )
                })
                .collect();
            events.sort();
            events
        };
        let rows = raw_timeline(
            &platform,
            &owner.org_id,
            &device,
            "the local store's events",
            |rows| as_local(rows) == local(),
        )
        .await;
        assert!(rows.len() as i64 > n / 2, "{} of {n} events", rows.len());
        agent.terminate();
    }
    let store = AwStore::open(&data.join("activitywatch.db")).unwrap();
    assert_eq!(
        store.timeline_waiting().unwrap(),
        0,
        "the queue was uploaded"
    );
    assert_eq!(
        store.timeline_set_aside().unwrap(),
        vec![],
        "nothing was refused"
    );
    let (_, log) = device_log::<DeviceTimeline>(&platform, &owner.org_id, &device).await;
    let mut seen = BTreeSet::new();
    for (event_type, p) in &log {
        if event_type == "TimelineEventRecorded" {
            let version = (
                p["key"].as_str().unwrap().to_owned(),
                p["version"].as_u64().unwrap(),
            );
            assert!(seen.insert(version.clone()), "recorded twice: {version:?}");
        }
    }
    assert!(log.iter().any(|(t, _)| t == "TimelineEventRetracted"));
}
