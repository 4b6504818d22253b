//! The desktop agent end to end: a real X11 desktop (Xvfb, openbox), a real
//! gateway on a real nats-server and PostgreSQL, and the agent between them,
//! as the `trackhrs agent` process (killed with SIGKILL while it works) and
//! in-process behind a recording gRPC proxy that can fail, lose replies and
//! go down (to see exactly what left the machine).

use trackhrs_testkit as platform;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use platform::{Platform, authed};
use rand::Rng;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use trackhrs_agent::aw::store::AwStore;
use trackhrs_agent::capture::X11Capture;
use trackhrs_agent::heartbeat::{Event, SpanData};
use trackhrs_agent::outbox::{Outbox, Refused};
use trackhrs_agent::privacy::Policy;
use trackhrs_agent::runner::{Agent, AgentConfig, UploadState};
use trackhrs_agent::sync::{SyncConfig, Uploaded, Uploader};
use trackhrs_domain::activity::DeviceActivity;
use trackhrs_domain::timeline::DeviceTimeline;
use trackhrs_domain::{Aggregate, Token};
use trackhrs_harness::desktop::{Display, open_window, set_class, set_title};
use trackhrs_nats::EventStore;
use trackhrs_nats::reader::{StartAt, read};
use trackhrs_projections::timeline::{self, TimelineRow};
use trackhrs_schemas::activity::v1 as activity_pb;
use trackhrs_schemas::activity::v1::activity_client::ActivityClient;
use trackhrs_schemas::agent::v1 as agent_pb;
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::agent_ingest_server::{AgentIngest, AgentIngestServer};
use trackhrs_schemas::agent::v1::agent_session_client::AgentSessionClient;
use trackhrs_schemas::agent::v1::agent_session_server::{AgentSession, AgentSessionServer};
use trackhrs_schemas::org::v1 as pb;

const APPS: [&str; 2] = ["EditorApp", "BrowserApp"];

/// A desktop whose active window changes its title every `every`, and its
/// class (application) every other time, so the agent closes a span each
/// time even when titles are not captured; stops on drop.
struct BusyDesktop {
    display: Display,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BusyDesktop {
    fn start(every: Duration) -> Self {
        let display = Display::start();
        let (conn, screen) = x11rb::connect(Some(&display.name)).unwrap();
        let window = open_window(&conn, screen, "EditorApp", "doc 0");
        display.xdotool(&["windowactivate", "--sync", &window.to_string()]);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(every);
                    n += 1;
                    set_class(&conn, window, APPS[(n % 2) as usize]);
                    set_title(&conn, window, &format!("doc {n}"));
                }
            })
        };
        Self {
            display,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BusyDesktop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An org (titles allowed) with one enrolled device: (owner session,
/// device id, device token).
async fn enrolled(platform: &Platform) -> (pb::Session, String, String) {
    let owner = platform.sign_up("acme", 5).await;
    let device = platform.enroll(&owner, "Laptop").await;
    (owner, device.device_id, device.device_token)
}

/// The events of aggregate `A` of the device, as stored (personal data
/// opened), in stream order: (event type, payload).
async fn device_log<A: Aggregate>(
    platform: &Platform,
    org: &str,
    device: &str,
) -> (A, Vec<(String, serde_json::Value)>) {
    let store = &platform.store;
    let (org, device) = (Token::new(org).unwrap(), Token::new(device).unwrap());
    let subject = EventStore::subject::<A>(&org, &device);
    let loaded = store.load_fresh::<A>(&org, &device).await.unwrap();
    let mut events = Vec::new();
    if loaded.version == 0 {
        return (Arc::unwrap_or_clone(loaded.state), events);
    }
    let js = async_nats::jetstream::new(store.client().clone());
    let mut log = read(
        &js,
        store.keys().clone(),
        &store.config().events_stream,
        StartAt::Start,
        Some(subject),
    )
    .await
    .unwrap();
    // Up to the commit the state was loaded at: an upload stored since
    // would make the log and the state disagree.
    while let Some(item) = log.next().await {
        let commit = item.commit.unwrap();
        if commit.stream_sequence > loaded.position {
            break;
        }
        events.extend(commit.events.into_iter().map(|e| (e.event_type, e.payload)));
        if item.pending == 0 || commit.stream_sequence == loaded.position {
            break;
        }
    }
    (Arc::unwrap_or_clone(loaded.state), events)
}

/// Every span stored for the device, in stream order: (start, end, app, title).
async fn stored_spans(
    platform: &Platform,
    org: &str,
    device: &str,
) -> Vec<(i64, i64, String, String)> {
    let (state, log) = device_log::<DeviceActivity>(platform, org, device).await;
    let mut spans = Vec::new();
    for (event_type, p) in &log {
        if event_type == "SpanRecorded" {
            // Personal data reads back opened: {"$pd": person, "v": text}.
            let text = |v: &serde_json::Value| {
                v.get("v")
                    .unwrap_or(v)
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            spans.push((
                p["start_ms"].as_i64().unwrap(),
                p["end_ms"].as_i64().unwrap(),
                text(&p["app"]),
                text(&p["title"]),
            ));
        }
    }
    assert_eq!(
        spans.len() as u64,
        state.spans,
        "the log and the aggregate agree"
    );
    spans
}

fn assert_no_overlap(spans: &[(i64, i64, String, String)]) {
    let mut sorted = spans.to_vec();
    sorted.sort();
    for w in sorted.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping spans stored: {w:?}");
    }
    for s in spans {
        assert!(s.0 < s.1, "a span of no length: {s:?}");
    }
}

/// A `trackhrs agent` process, killed if still running when dropped.
struct AgentProcess(Child);

impl AgentProcess {
    /// SIGKILL: no chance to clean up.
    fn kill9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    fn terminate(&mut self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        for _ in 0..300 {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "the agent exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the agent did not stop within 15 s of SIGTERM");
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_agent(display: &str, gateway: SocketAddr, token_file: &Path, data: &Path) -> AgentProcess {
    spawn_agent_with(
        &[
            "--display",
            display,
            "--poll-ms",
            "50",
            "--activitywatch-listen",
            "off",
        ],
        gateway,
        token_file,
        data,
    )
}

/// `trackhrs agent` with `args`, uploading small batches often.
fn spawn_agent_with(
    args: &[&str],
    gateway: SocketAddr,
    token_file: &Path,
    data: &Path,
) -> AgentProcess {
    let child = Command::new(env!("CARGO_BIN_EXE_trackhrs"))
        .args([
            "agent",
            "--gateway",
            &format!("http://{gateway}"),
            "--upload-every-ms",
            "250",
            "--max-batch-spans",
            "7",
            "--max-backoff-ms",
            "500",
        ])
        .args(args)
        .arg("--token-file")
        .arg(token_file)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn trackhrs agent");
    AgentProcess(child)
}

fn outbox_spans(data: &Path) -> Vec<(i64, i64, String, String)> {
    Outbox::open(&data.join("outbox.db"))
        .unwrap()
        .spans()
        .unwrap()
        .into_iter()
        .map(|e| (e.start_ms, e.end_ms(), e.data.app, e.data.title))
        .collect()
}

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

/// How the proxy treats uploads.
const PASS: u8 = 0;
const FAIL: u8 = 1;
const LOSE_REPLY: u8 = 2;

/// A gRPC proxy in front of the gateway's agent services: records every
/// upload as it arrived, and fails or loses replies on demand.
#[derive(Clone)]
struct Proxy {
    upstream: Channel,
    received: Arc<Mutex<Vec<agent_pb::UploadBatchRequest>>>,
    timelines: Arc<Mutex<Vec<agent_pb::UploadTimelineRequest>>>,
    mode: Arc<AtomicU8>,
    /// The same for raw-timeline uploads.
    timeline_mode: Arc<AtomicU8>,
}

fn forwarded<T>(request: &Request<T>, message: T) -> Request<T> {
    let mut out = Request::new(message);
    if let Some(auth) = request.metadata().get("authorization") {
        out.metadata_mut().insert("authorization", auth.clone());
    }
    out
}

#[tonic::async_trait]
impl AgentIngest for Proxy {
    async fn upload_batch(
        &self,
        request: Request<agent_pb::UploadBatchRequest>,
    ) -> Result<Response<agent_pb::UploadBatchResponse>, Status> {
        self.received
            .lock()
            .unwrap()
            .push(request.get_ref().clone());
        let message = request.get_ref().clone();
        let mut upstream = AgentIngestClient::new(self.upstream.clone());
        self.relay(
            &self.mode,
            upstream.upload_batch(forwarded(&request, message)),
        )
        .await
    }

    async fn upload_timeline(
        &self,
        request: Request<agent_pb::UploadTimelineRequest>,
    ) -> Result<Response<agent_pb::UploadBatchResponse>, Status> {
        self.timelines
            .lock()
            .unwrap()
            .push(request.get_ref().clone());
        let message = request.get_ref().clone();
        let mut upstream = AgentIngestClient::new(self.upstream.clone());
        self.relay(
            &self.timeline_mode,
            upstream.upload_timeline(forwarded(&request, message)),
        )
        .await
    }
}

#[tonic::async_trait]
impl AgentSession for Proxy {
    async fn get_policy(
        &self,
        request: Request<agent_pb::GetPolicyRequest>,
    ) -> Result<Response<agent_pb::Policy>, Status> {
        AgentSessionClient::new(self.upstream.clone())
            .get_policy(forwarded(&request, agent_pb::GetPolicyRequest {}))
            .await
    }
}

impl Proxy {
    fn new(upstream: Channel) -> Self {
        Self {
            upstream,
            received: Arc::default(),
            timelines: Arc::default(),
            mode: Arc::new(AtomicU8::new(PASS)),
            timeline_mode: Arc::new(AtomicU8::new(PASS)),
        }
    }

    /// Fails the upload, or forwards it (and loses the reply once), as
    /// `mode` says.
    async fn relay<R>(
        &self,
        mode: &AtomicU8,
        upstream: impl Future<Output = Result<Response<R>, Status>>,
    ) -> Result<Response<R>, Status> {
        let now = mode.load(Ordering::SeqCst);
        if now == FAIL {
            return Err(Status::unavailable("the gateway is failing"));
        }
        let reply = upstream.await;
        if now == LOSE_REPLY {
            // Stored upstream; the reply never reaches the agent.
            mode.store(PASS, Ordering::SeqCst);
            return Err(Status::unavailable("connection reset"));
        }
        reply
    }

    /// Serves on `addr` until `down` fires.
    async fn serve(&self, addr: SocketAddr, down: tokio::sync::oneshot::Receiver<()>) {
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let proxy = self.clone();
        tokio::spawn(
            Server::builder()
                .add_service(AgentIngestServer::new(proxy.clone()))
                .add_service(AgentSessionServer::new(proxy))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = down.await;
                }),
        );
    }

    fn titles_sent(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.spans.iter().map(|s| s.title.clone()))
            .collect()
    }
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn change_titles(platform: &Platform, owner: &pb::Session, allowed: bool, id: &str) {
    platform
        .gw()
        .orgs()
        .change_settings(authed(
            &owner.access_token,
            pb::ChangeSettingsRequest {
                command_id: id.into(),
                org_id: owner.org_id.clone(),
                settings: Some(pb::Settings {
                    timezone: "Europe/Berlin".into(),
                    work_week: vec![1, 2, 3, 4, 5],
                    capture_titles: allowed,
                    capture_urls: false,
                }),
            },
        ))
        .await
        .unwrap();
    platform.caught_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_obeys_the_policy_and_rides_out_a_failing_gateway() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let desktop = BusyDesktop::start(Duration::from_millis(150));
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = probe.local_addr().unwrap();
    drop(probe);
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
                outcome: Refused::Split { spans },
                ..
            } => format!("split {spans}"),
            Uploaded::Refused {
                outcome: Refused::SetAside { span },
                reason,
                ..
            } => format!("set aside {}: {reason}", span.data.app),
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
async fn activitywatch_watchers_reporting_to_the_agent_become_the_devices_activity() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let aw_addr = probe.local_addr().unwrap();
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(
        format!("http://{}", platform.gw().addr),
        token,
        dir.path().join("outbox.db"),
    );
    config.activitywatch_listen = Some(aw_addr);
    config.settle = Duration::from_millis(500);
    config.upload_every = Duration::from_millis(200);
    let agent = Agent::start_activitywatch(config).unwrap();
    let status = agent.status();
    wait_until("the policy", Duration::from_secs(20), || {
        status.borrow().policy.is_some()
    })
    .await;

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
    for (bucket, kind, client) in [
        (
            "aw-watcher-window_laptop",
            "currentwindow",
            "aw-watcher-window",
        ),
        ("aw-watcher-afk_laptop", "afkstatus", "aw-watcher-afk"),
    ] {
        let body = serde_json::json!({"client": client, "type": kind, "hostname": "laptop"});
        assert_eq!(
            call("POST", format!("/api/0/buckets/{bucket}"), body.to_string()).await,
            200
        );
    }
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

async fn set_rules(platform: &Platform, owner: &pb::Session, id: &str, rules: &[(&str, &str)]) {
    ActivityClient::new(platform.gw().channel.clone())
        .set_category_rules(authed(
            &owner.access_token,
            activity_pb::SetCategoryRulesRequest {
                command_id: id.into(),
                org_id: owner.org_id.clone(),
                rules: rules
                    .iter()
                    .map(|(name, regex)| activity_pb::CategoryRule {
                        name: vec![(*name).into()],
                        regex: Some((*regex).into()),
                        ignore_case: false,
                        score: Some(50),
                    })
                    .collect(),
                activitywatch_json: String::new(),
            },
        ))
        .await
        .unwrap();
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
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let offline = run(format!("http://{closed}"));
    let s = today(&offline);
    assert_eq!(
        (s.rules_version, names(&s)),
        (Some(3), BTreeSet::from(["Work".into()]))
    );
    offline.stop(Duration::from_millis(100)).await;
}

/// The timeline read model's rows of the device, once `done` holds for
/// them (polled: the projection applies in the background).
async fn raw_timeline(
    platform: &Platform,
    org: &str,
    device: &str,
    what: &str,
    done: impl Fn(&[TimelineRow]) -> bool,
) -> Vec<TimelineRow> {
    let pg = platform.db.connect().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = match trackhrs_projections::live_schema(&pg, timeline::NAME)
            .await
            .unwrap()
        {
            Some(schema) => {
                timeline::device_events(&pg, &schema, org, device, (i64::MIN, i64::MAX), i64::MAX)
                    .await
                    .unwrap()
            }
            None => Vec::new(),
        };
        if done(&rows) {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; the read model holds {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_activitywatch_timelines_are_synced_with_versions_and_retractions() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    change_titles(&platform, &owner, false, "titles-off").await;
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = probe.local_addr().unwrap();
    drop(probe);
    let proxy = Proxy::new(platform.gw().channel.clone());
    let (_down, rx) = tokio::sync::oneshot::channel();
    proxy.serve(proxy_addr, rx).await;
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let aw_addr = probe.local_addr().unwrap();
    drop(probe);
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

    // All three timelines reach the platform, the editor's bucket type
    // as it is, the window's data without what the policy forbids.
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
    assert_eq!(v[0].data.as_ref().unwrap()["file"], "main.rs");

    // The first edit replaced (version 2) and the second deleted while the
    // gateway stores an upload but its reply is lost.
    proxy.timeline_mode.store(LOSE_REPLY, Ordering::SeqCst);
    let replaced = serde_json::json!({"id": first, "timestamp": at(-58), "duration": 6, "data": {"file": "lib.rs"}});
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
    assert_eq!(v[0].data, Some(serde_json::json!({"file": "lib.rs"})));
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
            (vim, 2, r#"{"file":"lib.rs"}"#),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_timelines_lose_and_double_nothing_when_the_agent_is_killed_at_any_moment() {
    let platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let data = dir.path().join("agent");
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let aw_addr = probe.local_addr().unwrap();
    drop(probe);
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
