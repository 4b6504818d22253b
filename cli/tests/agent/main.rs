//! The desktop agent end to end: a real X11 desktop (Xvfb, openbox), a real
//! gateway on a real nats-server and PostgreSQL, and the agent between them,
//! as the `trackhrs agent` process (killed with SIGKILL while it works) and
//! in-process behind a recording gRPC proxy that can fail, lose replies and
//! go down (to see exactly what left the machine).

mod activitywatch;
mod gateway;
mod killed;
mod proxy;
mod tls;

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
/// A free port on the loopback address.
fn loopback_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], trackhrs_harness::paths::free_port()))
}

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
                timeline::device_events(
                    &pg,
                    &schema,
                    org,
                    device,
                    (i64::MIN, i64::MAX),
                    (i64::MAX, i64::MAX),
                )
                .await
                .unwrap()
                .0
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
