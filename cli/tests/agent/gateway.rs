//! The agent in-process behind the proxy: the org's policy, a failing
//! gateway, refused spans and a lost outbox.

use super::*;
use crate::proxy::{FAIL, LOSE_REPLY, PASS, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_obeys_the_policy_and_rides_out_a_failing_gateway() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let desktop = BusyDesktop::start(Duration::from_millis(150));
    let proxy_addr = loopback_addr();
    let proxy = Proxy::new(platform.gw().channel.clone());
    let (down, rx) = tokio::sync::oneshot::channel();
    proxy.serve(proxy_addr, rx).await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(
        format!("http://{proxy_addr}"),
        token,
        dir.path().join("outbox.db"),
    );
    config.poll = Duration::from_millis(50);
    config.upload_every = Duration::from_millis(200);
    config.policy_every = Duration::from_millis(200);
    config.sync.max_spans = 5;
    config.sync.base_backoff = Duration::from_millis(50);
    config.sync.max_backoff = Duration::from_millis(300);
    let display = desktop.display.name.clone();
    let agent = Agent::start(config, move || X11Capture::connect(Some(&display))).unwrap();
    let status = agent.status();

    // Titles allowed: they are sent.
    wait_until("titles sent", Duration::from_secs(20), || {
        proxy.titles_sent().iter().any(|t| t.starts_with("doc "))
    })
    .await;

    // Forbidden: once the agent has the new policy, no title leaves the
    // machine, including spans captured before and still waiting.
    change_titles(&platform, &owner, false, "titles-off").await;
    wait_until("the strict policy", Duration::from_secs(20), || {
        status.borrow().policy.is_some_and(|p| !p.capture_titles)
    })
    .await;
    let sent_before = proxy.received.lock().unwrap().len();

    // The gateway fails for a while, then a reply is lost after the batch
    // was stored, then the gateway is down (connection refused).
    proxy.mode.store(FAIL, Ordering::SeqCst);
    wait_until("a failed upload", Duration::from_secs(20), || {
        matches!(status.borrow().upload, UploadState::Retrying { .. })
    })
    .await;
    proxy.mode.store(LOSE_REPLY, Ordering::SeqCst);
    wait_until("a lost reply", Duration::from_secs(20), || {
        proxy.mode.load(Ordering::SeqCst) == PASS
    })
    .await;
    down.send(()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting_while_down = status.borrow().waiting;
    assert!(
        waiting_while_down > 0,
        "spans wait while the gateway is down"
    );
    let (down, rx) = tokio::sync::oneshot::channel();
    proxy.serve(proxy_addr, rx).await;
    wait_until("the outbox uploaded", Duration::from_secs(30), || {
        matches!(status.borrow().upload, UploadState::UpToDate { .. })
    })
    .await;

    let received = proxy.received.lock().unwrap().clone();
    let titled: Vec<_> = received[sent_before..]
        .iter()
        .flat_map(|r| &r.spans)
        .filter(|s| !s.title.is_empty())
        .collect();
    assert!(titled.is_empty(), "titles left the machine: {titled:?}");
    let batch_ids: Vec<&str> = received.iter().map(|r| r.batch_id.as_str()).collect();
    let distinct: BTreeSet<&str> = batch_ids.iter().copied().collect();
    assert!(
        distinct.len() < batch_ids.len(),
        "a batch was sent again after a failure"
    );

    // Every span sent is stored once (the lost reply's batch included).
    let stored = stored_spans(&platform, &owner.org_id, &device).await;
    assert_no_overlap(&stored);
    let sent: BTreeSet<(i64, i64)> = received
        .iter()
        .flat_map(|r| r.spans.iter().map(|s| (s.start_unix_ms, s.end_unix_ms)))
        .collect();
    let stored_times: Vec<(i64, i64)> = stored.iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(
        stored_times.iter().copied().collect::<BTreeSet<_>>(),
        sent,
        "stored = sent"
    );
    assert_eq!(stored_times.len(), sent.len(), "nothing stored twice");

    // The device is revoked: uploads stop, the user is told, the outbox is
    // kept and keeps growing.
    platform.revoke(&owner, &device, "revoke-laptop").await;
    wait_until("uploads refused", Duration::from_secs(20), || {
        matches!(status.borrow().upload, UploadState::Refused { .. })
    })
    .await;
    let attempts = proxy.received.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        proxy.received.lock().unwrap().len(),
        attempts,
        "no upload after the refusal"
    );
    assert!(
        status.borrow().waiting > 0,
        "the outbox is kept: {:?}",
        *status.borrow()
    );

    // The agent's own capture is kept locally as ActivityWatch's watchers
    // would report it, under the policy.
    let local = AwStore::open(&dir.path().join("activitywatch.db")).unwrap();
    let buckets = local.buckets().unwrap();
    let window = buckets.iter().find(|b| b.kind == "currentwindow").unwrap();
    let recent = local.events(&window.id, None, None, Some(5)).unwrap();
    assert_eq!(recent.len(), 5);
    for e in &recent {
        assert!(APPS.contains(&e.data["app"].as_str().unwrap()), "{e:?}");
        assert_eq!(e.data["title"], "", "titles are forbidden: {e:?}");
    }
    let afk = buckets.iter().find(|b| b.kind == "afkstatus").unwrap();
    let statuses = local.events(&afk.id, None, None, None).unwrap();
    assert!(statuses.iter().all(|e| e.data["status"] == "not-afk"));
    assert!(statuses.iter().map(|e| e.duration).sum::<f64>() > 3.0);
    drop(desktop);
    agent.stop(Duration::from_secs(1)).await;
    drop(down);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_the_gateway_refuses_is_set_aside_with_the_reason_and_the_rest_is_stored() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Mutex::new(Outbox::open(&dir.path().join("o.db")).unwrap()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let span = |start_ms: i64, app: &str| Event {
        start_ms,
        duration_ms: 60_000,
        data: SpanData {
            app: app.into(),
            title: String::new(),
            url: None,
            active: true,
        },
    };
    // Two spans of the past hour and one an hour ahead (a clock that had
    // jumped forward when it was recorded), in one batch.
    for s in [
        span(now - 600_000, "code"),
        span(now - 300_000, "code"),
        span(now + 3_600_000, "future"),
    ] {
        outbox.lock().unwrap().push(&s).unwrap();
    }
    let mut uploader =
        Uploader::new(platform.gw().channel.clone(), &token, SyncConfig::default()).unwrap();
    let policy = Policy {
        capture_titles: true,
        capture_urls: true,
    };
    let done = uploader.drain(outbox.clone(), &policy).await.unwrap();
    let kinds: Vec<String> = done
        .iter()
        .map(|u| match u {
            Uploaded::Stored { seq, .. } => format!("stored {seq}"),
            Uploaded::Refused {
                outcome: Refused::Split { spans, .. },
                ..
            } => format!("split {spans}"),
            Uploaded::Refused {
                outcome: Refused::SetAside { span },
                reason,
                ..
            } => format!("set aside {}: {reason}", span.data.app),
            Uploaded::Refused {
                outcome: Refused::Dropped { retractions },
                ..
            } => format!("dropped {retractions}"),
            Uploaded::Refused {
                outcome: Refused::Unread { retractions },
                ..
            } => format!("unread {retractions}"),
            Uploaded::Nothing => "nothing".into(),
        })
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert_eq!(&kinds[..3], ["split 3", "stored 1", "stored 2"]);
    assert!(
        kinds[3].starts_with("set aside future: spans: span 0") && kinds[3].contains("future"),
        "{kinds:?}"
    );
    // Not retried: nothing waits; the refused span is kept with its reason.
    let (waiting, aside) = {
        let outbox = outbox.lock().unwrap();
        (outbox.waiting().unwrap(), outbox.set_aside().unwrap())
    };
    assert_eq!(waiting, 0);
    assert_eq!(aside.len(), 1);
    assert_eq!(aside[0].0.data.app, "future");
    let stored = stored_spans(&platform, &owner.org_id, &device).await;
    assert_eq!(
        stored.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![now - 600_000, now - 300_000]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_outbox_was_lost_goes_on_after_what_the_gateway_stored() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let desktop = BusyDesktop::start(Duration::from_millis(150));
    let dir = tempfile::tempdir().unwrap();
    let run = |data: &str| {
        let mut config = AgentConfig::new(
            format!("http://{}", platform.gw().addr),
            token.clone(),
            dir.path().join(data).join("outbox.db"),
        );
        std::fs::create_dir_all(dir.path().join(data)).unwrap();
        config.poll = Duration::from_millis(50);
        config.upload_every = Duration::from_millis(200);
        let display = desktop.display.name.clone();
        Agent::start(config, move || X11Capture::connect(Some(&display))).unwrap()
    };
    let up_to_date = |agent: &Agent| {
        let status = agent.status();
        async move {
            wait_until("an upload", Duration::from_secs(20), || {
                matches!(status.borrow().upload, UploadState::UpToDate { .. })
                    && status.borrow().waiting == 0
            })
            .await;
        }
    };
    // A first outbox uploads some batches...
    let first = run("first");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.stop(Duration::from_secs(3)).await;
    let before = stored_spans(&platform, &owner.org_id, &device).await;
    assert!(!before.is_empty());
    // ...then the agent starts over with a new, empty outbox (reinstalled,
    // data folder deleted): it numbers after the stored batches.
    let second = run("second");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    up_to_date(&second).await;
    let status = second.status().borrow().clone();
    second.stop(Duration::from_secs(3)).await;
    let after = stored_spans(&platform, &owner.org_id, &device).await;
    assert!(after.len() > before.len(), "{status:?}");
    assert_no_overlap(&after);
    let aside = Outbox::open(&dir.path().join("second/outbox.db"))
        .unwrap()
        .set_aside()
        .unwrap();
    assert_eq!(aside, vec![], "nothing refused");
}
