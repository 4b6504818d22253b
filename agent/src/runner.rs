//! The running agent: a capture thread that polls the desktop and commits
//! spans to the outbox, and an upload task that sends the outbox to the
//! gateway and keeps the org's privacy policy current. `trackhrs agent` runs
//! it headless; the desktop app runs the same thing and shows its
//! [`Status`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use trackhrs_domain::categories::CategoryRule;
use trackhrs_domain::classifier::Rules;
use trackhrs_schemas::agent::v1::GetPolicyRequest;
use trackhrs_schemas::agent::v1::agent_session_client::AgentSessionClient;

use crate::aw::store::{AwError, AwEvent, AwStore, OwnBuckets};
use crate::capture::{Capture, CaptureError};
use crate::heartbeat::Event;
use crate::outbox::{Outbox, OutboxError};
use crate::privacy::Policy;
use crate::recorder::{Recorded, Recorder};
use crate::sync::{SyncConfig, SyncError, Uploaded, Uploader};
use crate::today::{Summary, Timelines, summarize};

/// How the agent runs.
#[derive(Clone)]
pub struct AgentConfig {
    /// The gateway's gRPC address, e.g. `http://127.0.0.1:50051`.
    pub gateway: String,
    /// The device token from enrollment.
    pub token: String,
    /// The outbox's SQLite file.
    pub outbox: PathBuf,
    /// How often the desktop is observed (ActivityWatch: 1 s).
    pub poll: Duration,
    /// Without input for this long, the user is idle (ActivityWatch: 180 s).
    pub idle_after: Duration,
    /// How often waiting spans are uploaded.
    pub upload_every: Duration,
    /// How often the privacy policy is fetched again.
    pub policy_every: Duration,
    /// Batching and backoff.
    pub sync: SyncConfig,
    /// Where ActivityWatch's REST API is served (None: not served).
    pub activitywatch_listen: Option<SocketAddr>,
    /// The local ActivityWatch store's SQLite file.
    pub activitywatch_store: PathBuf,
    /// With ActivityWatch's watchers as the source: their timelines are
    /// combined into spans once this old (a younger event may still grow by
    /// heartbeats; aw-watcher-afk's pulsetime is over 3 minutes).
    pub settle: Duration,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("gateway", &self.gateway)
            .field("token", &"<redacted>")
            .field("outbox", &self.outbox)
            .field("poll", &self.poll)
            .field("idle_after", &self.idle_after)
            .field("upload_every", &self.upload_every)
            .field("policy_every", &self.policy_every)
            .field("activitywatch_listen", &self.activitywatch_listen)
            .field("settle", &self.settle)
            .finish()
    }
}

impl AgentConfig {
    /// The defaults for `gateway`, `token` and `outbox`: poll every second,
    /// idle after 180 s, upload every 30 s, policy every 5 minutes, no
    /// ActivityWatch API (its store beside the outbox), settle 10 minutes.
    pub fn new(gateway: impl Into<String>, token: impl Into<String>, outbox: PathBuf) -> Self {
        Self {
            activitywatch_listen: None,
            activitywatch_store: outbox.with_file_name("activitywatch.db"),
            settle: Duration::from_secs(600),
            gateway: gateway.into(),
            token: token.into(),
            outbox,
            poll: Duration::from_secs(1),
            idle_after: Duration::from_secs(180),
            upload_every: Duration::from_secs(30),
            policy_every: Duration::from_secs(300),
            sync: SyncConfig::default(),
        }
    }
}

/// Where uploads stand.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UploadState {
    /// Nothing tried yet.
    #[default]
    Starting,
    /// The outbox was emptied at this time (Unix ms).
    UpToDate {
        /// When.
        at_ms: i64,
    },
    /// The last attempt failed; the same batch is sent again after a pause.
    Retrying {
        /// Why it failed.
        error: String,
    },
    /// The gateway refuses the device token (revoked, or the member was
    /// deactivated): uploads stopped, the outbox is kept. Enroll again.
    Refused {
        /// The gateway's reason.
        reason: String,
    },
}

/// What the agent is doing, for a front end to show.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// Capture is paused by the user.
    pub paused: bool,
    /// The span being recorded.
    pub current: Option<Event>,
    /// The privacy policy received from the gateway; None until it is
    /// reached once (meanwhile [`Policy::STRICT`] is in force).
    pub policy: Option<Policy>,
    /// Spans committed locally and not yet acknowledged.
    pub waiting: u64,
    /// Uploads.
    pub upload: UploadState,
    /// The wall clock is behind the last recorded time by this much; nothing
    /// is recorded until it catches up.
    pub clock_behind_ms: Option<i64>,
    /// The desktop cannot be observed.
    pub capture_error: Option<String>,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The gateway address is not a URL.
    #[error("gateway address {0:?} is not a valid URL")]
    Gateway(String),
    /// The capture thread could not start.
    #[error("cannot start the capture thread: {0}")]
    Spawn(std::io::Error),
    /// The ActivityWatch store could not be opened.
    #[error(transparent)]
    ActivityWatch(#[from] AwError),
    /// The ActivityWatch API's address cannot be bound.
    #[error(
        "cannot serve ActivityWatch's API on {addr}: {source} (is ActivityWatch's own server running? stop it, or choose another address)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The token cannot be sent as gRPC metadata.
    #[error("the device token is not valid (it must be printable ASCII)")]
    Token,
}

/// The classification rules in force. They are compiled when a front end
/// first asks for a summary (a headless agent never does: a compiled rule
/// set takes megabytes).
struct Classify {
    /// Their version; None: never received (the default rules).
    version: Option<u32>,
    rules: Vec<CategoryRule>,
    compiled: Option<Arc<Rules>>,
}

impl Classify {
    /// The rules kept in the outbox, or the default rules.
    fn kept(kept: Option<(u32, Vec<CategoryRule>)>) -> Self {
        let (version, rules) = match kept {
            Some((version, rules)) => (Some(version), rules),
            None => (None, Rules::default_rules()),
        };
        Self {
            version,
            rules,
            compiled: None,
        }
    }

    /// The compiled rules and their version.
    fn compiled(&mut self) -> (Option<u32>, Arc<Rules>) {
        let compiled = self.compiled.get_or_insert_with(|| {
            Arc::new(Rules::compile(&self.rules).unwrap_or_else(|e| {
                tracing::error!(error = %e, version = ?self.version, "the classification rules do not compile here; using the default rules");
                // The default rules are part of the classifier and compile.
                Rules::compile(&Rules::default_rules()).unwrap_or_else(|e| unreachable!("{e}"))
            }))
        });
        (self.version, compiled.clone())
    }
}

struct Shared {
    outbox: Mutex<Outbox>,
    policy: Mutex<Option<Policy>>,
    classify: Mutex<Classify>,
    paused: AtomicBool,
    stop: AtomicBool,
    status: watch::Sender<Status>,
    wake_uploader: Notify,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        crate::lock(&self.outbox)
    }

    fn policy(&self) -> Option<Policy> {
        *crate::lock(&self.policy)
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_if_modified(|s| {
            let before = s.clone();
            f(s);
            *s != before
        });
    }
}

/// A running agent.
pub struct Agent {
    shared: Arc<Shared>,
    aw: Arc<Mutex<AwStore>>,
    capture: Option<JoinHandle<()>>,
    uploader: tokio::task::JoinHandle<()>,
    activitywatch: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

fn wall_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Agent {
    /// Opens the outbox and starts capturing the desktop (with capture
    /// back-ends made by `connect`, called again after a back-end fails) and
    /// uploading. Must be called inside a tokio runtime.
    pub fn start<C, F>(config: AgentConfig, connect: F) -> Result<Self, AgentError>
    where
        C: Capture + 'static,
        F: FnMut() -> Result<C, CaptureError> + Send + 'static,
    {
        Self::launch(config, move |shared, config, aw| {
            std::thread::Builder::new()
                .name("trackhrs-capture".into())
                .spawn(move || capture_loop(&shared, &config, &aw, connect))
        })
    }

    /// Opens the outbox and takes the device's activity from ActivityWatch's
    /// watchers reporting to the API (`activitywatch_listen` must be set):
    /// their window and AFK timelines are combined into spans once settled.
    pub fn start_activitywatch(config: AgentConfig) -> Result<Self, AgentError> {
        Self::launch(config, |shared, config, aw| {
            std::thread::Builder::new()
                .name("trackhrs-combine".into())
                .spawn(move || combine_loop(&shared, &config, &aw))
        })
    }

    fn launch(
        config: AgentConfig,
        source: impl FnOnce(
            Arc<Shared>,
            AgentConfig,
            Arc<Mutex<AwStore>>,
        ) -> std::io::Result<JoinHandle<()>>,
    ) -> Result<Self, AgentError> {
        let endpoint = Endpoint::from_shared(config.gateway.clone())
            .map_err(|_| AgentError::Gateway(config.gateway.clone()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        let bearer = MetadataValue::try_from(format!("Bearer {}", config.token))
            .map_err(|_| AgentError::Token)?;
        let outbox = Outbox::open(&config.outbox)?;
        let aw = Arc::new(Mutex::new(AwStore::open(&config.activitywatch_store)?));
        let activitywatch = match config.activitywatch_listen {
            Some(addr) => {
                let listener = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|source| AgentError::Listen { addr, source })?;
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let served = tokio::spawn({
                    let aw = aw.clone();
                    async move {
                        let shutdown = async {
                            let _ = stopped.await;
                        };
                        if let Err(e) = crate::aw::api::serve(listener, aw, shutdown).await {
                            tracing::error!(error = %e, "ActivityWatch's API stopped");
                        }
                    }
                });
                tracing::info!(%addr, "serving ActivityWatch's API");
                Some((stop, served))
            }
            None => None,
        };
        let policy = outbox.policy()?;
        // The rules only classify the employee's own view: kept ones that
        // cannot be read are replaced by the default rules, not fatal.
        let classify = Classify::kept(outbox.rules().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the kept classification rules cannot be read; using the default rules until the gateway sends them");
            None
        }));
        let (status, _) = watch::channel(Status {
            policy,
            waiting: outbox.waiting()?,
            ..Status::default()
        });
        let shared = Arc::new(Shared {
            outbox: Mutex::new(outbox),
            policy: Mutex::new(policy),
            classify: Mutex::new(classify),
            paused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            status,
            wake_uploader: Notify::new(),
        });
        let capture =
            source(shared.clone(), config.clone(), aw.clone()).map_err(AgentError::Spawn)?;
        let channel = endpoint.connect_lazy();
        let uploader = tokio::spawn(upload_loop(
            shared.clone(),
            aw.clone(),
            config,
            channel,
            bearer,
        ));
        Ok(Self {
            shared,
            aw,
            capture: Some(capture),
            uploader,
            activitywatch,
        })
    }

    /// Watches the agent's status.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// Pauses capture: the open span is closed and nothing is observed until
    /// [`Agent::resume`]; what ActivityWatch's watchers report meanwhile is
    /// answered but not kept.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
        crate::lock(&self.aw).set_paused(true);
        self.shared.update(|s| s.paused = true);
        self.wake_capture();
    }

    /// Resumes capture.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
        crate::lock(&self.aw).set_paused(false);
        self.shared.update(|s| s.paused = false);
        self.wake_capture();
    }

    /// Active and idle time of `[from_ms, to_ms)` and the active time per
    /// category, from the local store (what was captured here, whether
    /// uploaded yet or not), with the privacy policy applied and classified
    /// with the org's rules, as the dashboards see it. Reads SQLite: call it
    /// off an async runtime's workers.
    pub fn summary(&self, from_ms: i64, to_ms: i64) -> Result<Summary, AgentError> {
        let timelines = Timelines::read(&crate::lock(&self.aw), from_ms, to_ms)?;
        let mut spans = timelines.combine(from_ms, to_ms);
        let policy = self.shared.policy().unwrap_or(Policy::STRICT);
        for span in &mut spans {
            policy.apply(&mut span.data);
        }
        let (version, rules) = crate::lock(&self.shared.classify).compiled();
        let (active_ms, idle_ms, categories) = summarize(&spans, &rules);
        Ok(Summary {
            from_ms,
            to_ms,
            active_ms,
            idle_ms,
            categories,
            rules_version: version,
        })
    }

    /// Uploads now instead of at the next interval.
    pub fn upload_now(&self) {
        self.shared.wake_uploader.notify_one();
    }

    fn wake_capture(&self) {
        if let Some(t) = &self.capture {
            t.thread().unpark();
        }
    }

    /// Stops: the open span is committed to the outbox, and waiting spans
    /// get one last upload attempt of at most `grace`.
    pub async fn stop(mut self, grace: Duration) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.capture.take() {
            t.thread().unpark();
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some((stop, served)) = self.activitywatch.take() {
            let _ = stop.send(());
            let _ = served.await;
        }
        self.shared.wake_uploader.notify_one();
        if tokio::time::timeout(grace, &mut self.uploader)
            .await
            .is_err()
        {
            self.uploader.abort();
        }
    }
}

/// How long the local ActivityWatch store keeps events.
const KEEP_LOCALLY: Duration = Duration::from_secs(30 * 86_400);
/// How often the local store forgets what is older than [`KEEP_LOCALLY`].
const TIDY_EVERY: Duration = Duration::from_secs(3600);

/// Forgets local activity older than [`KEEP_LOCALLY`] at `now_ms`.
fn forget_old(aw: &Mutex<AwStore>, now_ms: i64) {
    let before = chrono::DateTime::from_timestamp_millis(now_ms - KEEP_LOCALLY.as_millis() as i64)
        .unwrap_or_default();
    if let Err(e) = crate::lock(aw).forget_before(before) {
        tracing::warn!(error = %e, "cannot forget old local activity");
    }
}

/// The agent's own observation as ActivityWatch's window and AFK watchers
/// would report it, into the local store (what the desktop app and
/// ActivityWatch clients read): heartbeats with the poll's pulsetime.
fn report_locally(
    store: &Mutex<AwStore>,
    own: &OwnBuckets,
    data: &crate::heartbeat::SpanData,
    now_ms: i64,
    pulsetime: Duration,
) -> Result<(), AwError> {
    let at = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let mut window = serde_json::Map::new();
    window.insert("app".into(), data.app.clone().into());
    window.insert("title".into(), data.title.clone().into());
    if let Some(url) = &data.url {
        window.insert("url".into(), url.clone().into());
    }
    let mut afk = serde_json::Map::new();
    let status = if data.active { "not-afk" } else { "afk" };
    afk.insert("status".into(), status.into());
    let mut store = crate::lock(store);
    for (bucket, data) in [(&own.window, window), (&own.afk, afk)] {
        let beat = AwEvent {
            id: None,
            timestamp: at,
            duration: 0.0,
            data,
        };
        store.heartbeat(bucket, &beat, pulsetime.as_secs_f64())?;
    }
    Ok(())
}

fn capture_loop<C, F>(shared: &Shared, config: &AgentConfig, aw: &Mutex<AwStore>, mut connect: F)
where
    C: Capture,
    F: FnMut() -> Result<C, CaptureError>,
{
    const RECONNECT: Duration = Duration::from_secs(5);
    let mut recorder = Recorder::new(config.poll, config.idle_after);
    let pulsetime = crate::heartbeat::pulsetime(config.poll);
    let own = crate::lock(aw).own_buckets(&crate::aw::api::hostname());
    let own = match own {
        Ok(own) => Some(own),
        Err(e) => {
            tracing::error!(error = %e, "cannot keep recent activity locally");
            None
        }
    };
    let mut next_tidy = Instant::now();
    let mut local_failed = false;
    let mut capture: Option<C> = None;
    let mut next_connect = Instant::now();
    let mut next = Instant::now();
    let flush = |recorder: &mut Recorder| {
        if let Err(e) = recorder.flush(&mut shared.outbox()) {
            tracing::error!(error = %e, "cannot commit the open span to the outbox");
        }
    };
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        next = (next + config.poll).max(now);
        if shared.paused.load(Ordering::SeqCst) {
            flush(&mut recorder);
            shared.update(|s| {
                s.paused = true;
                s.current = None;
            });
            std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
            continue;
        }
        if capture.is_none() && now >= next_connect {
            match connect() {
                Ok(c) => {
                    capture = Some(c);
                    shared.update(|s| s.capture_error = None);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot observe the desktop; trying again");
                    shared.update(|s| s.capture_error = Some(e.to_string()));
                    next_connect = now + RECONNECT;
                }
            }
        }
        if let Some(c) = &mut capture {
            match c.observe() {
                Ok(observation) => {
                    let policy = shared.policy().unwrap_or(Policy::STRICT);
                    let at = wall_now_ms();
                    let recorded = recorder.record(&observation, at, &policy, &mut shared.outbox());
                    if let (Ok(Recorded::Recorded), Some(own)) = (&recorded, &own) {
                        let mut data = observation.heartbeat(at, config.idle_after).data;
                        policy.apply(&mut data);
                        match report_locally(aw, own, &data, at, pulsetime) {
                            Ok(()) => local_failed = false,
                            Err(e) if !local_failed => {
                                local_failed = true;
                                tracing::warn!(error = %e, "cannot keep recent activity locally");
                            }
                            Err(_) => {}
                        }
                    }
                    if now >= next_tidy {
                        next_tidy = now + TIDY_EVERY;
                        forget_old(aw, at);
                    }
                    let behind = match recorded {
                        Ok(Recorded::ClockBehind { by_ms }) => Some(by_ms),
                        Ok(Recorded::Recorded) => None,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot commit a span to the outbox");
                            None
                        }
                    };
                    let waiting = shared.outbox().waiting().unwrap_or_default();
                    shared.update(|s| {
                        s.paused = false;
                        s.current = recorder.current().cloned();
                        s.clock_behind_ms = behind;
                        s.waiting = waiting;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the desktop connection failed; reconnecting");
                    flush(&mut recorder);
                    capture = None;
                    next_connect = now + RECONNECT;
                    shared.update(|s| {
                        s.current = None;
                        s.capture_error = Some(e.to_string());
                    });
                }
            }
        }
        std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
    }
    flush(&mut recorder);
}

/// Combines ActivityWatch's settled timelines into the outbox every 5 s
/// (and once more when stopping). While paused, the watchers' time up to
/// the pause is combined at once and the time after it is skipped (the
/// watchers go on reporting; the paused time never becomes spans).
fn combine_loop(shared: &Shared, config: &AgentConfig, aw: &Mutex<AwStore>) {
    const EVERY: Duration = Duration::from_secs(5);
    let mut paused_at: Option<i64> = None;
    let mut next_tidy = Instant::now();
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        let paused = shared.paused.load(Ordering::SeqCst);
        let now = wall_now_ms();
        if Instant::now() >= next_tidy {
            next_tidy = Instant::now() + TIDY_EVERY;
            forget_old(aw, now);
        }
        if paused && paused_at.is_none() {
            paused_at = Some(now);
        }
        let combined = match paused_at {
            Some(at) => combine_settled(shared, aw, at).and_then(|_| {
                // Skip the paused time: the mark moves to now.
                let mut outbox = shared.outbox();
                outbox
                    .push_combined(&[], now)
                    .and_then(|()| outbox.waiting())
                    .map_err(|e| e.to_string())
            }),
            None => combine_settled(
                shared,
                aw,
                now - config.settle.as_millis().min(i64::MAX as u128) as i64,
            ),
        };
        if !paused {
            paused_at = None;
        }
        match combined {
            Ok(waiting) => shared.update(|s| {
                s.paused = paused;
                s.waiting = waiting;
                s.capture_error = None;
            }),
            Err(e) => {
                tracing::error!(error = %e, "cannot combine ActivityWatch's timelines");
                shared.update(|s| s.capture_error = Some(e));
            }
        }
        if stopping {
            return;
        }
        std::thread::park_timeout(EVERY);
    }
}

/// Window and AFK events up to `settled`, from where the last run
/// stopped (and never before the device's high-water mark), become spans in
/// the outbox. The mark never passes the end of the newest window event, so
/// heartbeats a watcher queued while the agent was down and sends late are
/// still combined. Returns the spans waiting.
fn combine_settled(shared: &Shared, aw: &Mutex<AwStore>, settled: i64) -> Result<u64, String> {
    let (done, high) = {
        let outbox = shared.outbox();
        (
            outbox.combined_until().map_err(|e| e.to_string())?,
            outbox.high_water().map_err(|e| e.to_string())?,
        )
    };
    // A mark in the future was set while the clock was ahead; the spans of
    // that time were refused and set aside, so the high-water mark decides.
    let done = done.filter(|&d| d <= wall_now_ms());
    let from = done.max(high).unwrap_or(i64::MIN);
    let store = crate::lock(aw);
    let buckets = store.buckets().map_err(|e| e.to_string())?;
    let mut newest_end = None;
    for b in buckets.iter().filter(|b| b.kind == "currentwindow") {
        for e in store
            .events(&b.id, None, None, Some(1))
            .map_err(|e| e.to_string())?
        {
            newest_end = newest_end.max(Some(
                e.timestamp.timestamp_millis() + (e.duration * 1000.0).round() as i64,
            ));
        }
    }
    let until = match newest_end {
        Some(end) => end.min(settled),
        None => return shared.outbox().waiting().map_err(|e| e.to_string()),
    };
    if until > from {
        let timelines = Timelines::read(&store, from, until).map_err(|e| e.to_string())?;
        drop(store);
        let policy = shared.policy().unwrap_or(Policy::STRICT);
        let mut spans = timelines.combine(from, until);
        for span in &mut spans {
            policy.apply(&mut span.data);
        }
        shared
            .outbox()
            .push_combined(&spans, until)
            .map_err(|e| e.to_string())?;
    } else {
        drop(store);
    }
    shared.outbox().waiting().map_err(|e| e.to_string())
}

/// What the gateway says about the token's device.
struct Session {
    policy: Policy,
    device: String,
    last_seq: u64,
    last_end_ms: Option<i64>,
    last_timeline_seq: u64,
    rules_version: u32,
    rules: Vec<CategoryRule>,
}

async fn fetch_policy(
    session: &mut AgentSessionClient<Channel>,
    bearer: &MetadataValue<Ascii>,
) -> Result<Session, tonic::Status> {
    let mut request = tonic::Request::new(GetPolicyRequest {});
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let p = session.get_policy(request).await?.into_inner();
    Ok(Session {
        policy: Policy {
            capture_titles: p.capture_titles,
            capture_urls: p.capture_urls,
        },
        device: p.device_id,
        last_seq: p.last_batch_seq,
        last_end_ms: (p.last_span_end_unix_ms > 0).then_some(p.last_span_end_unix_ms),
        last_timeline_seq: p.last_timeline_seq,
        rules_version: p.rules_version,
        rules: p
            .category_rules
            .into_iter()
            .map(|r| CategoryRule {
                name: r.name,
                regex: r.regex,
                ignore_case: r.ignore_case,
                score: r.score,
            })
            .collect(),
    })
}

fn refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied
    )
}

async fn upload_loop(
    shared: Arc<Shared>,
    aw: Arc<Mutex<AwStore>>,
    config: AgentConfig,
    channel: Channel,
    bearer: MetadataValue<Ascii>,
) {
    // The policy carries the org's rules: up to 1,000 categories with
    // regexes of up to 4 KiB, above tonic's default 4 MiB limit.
    let mut session = AgentSessionClient::new(channel.clone()).max_decoding_message_size(16 << 20);
    let mut uploader = match Uploader::new(channel, &config.token, config.sync.clone()) {
        Ok(u) => u,
        Err(e) => {
            shared.update(|s| {
                s.upload = UploadState::Refused {
                    reason: e.to_string(),
                }
            });
            return;
        }
    };
    let mut next_policy = Instant::now();
    let mut failures = 0u32;
    let mut policy_failures = 0u32;
    // Nothing is uploaded before the gateway named the device the token
    // belongs to in this run (the outbox may hold another device's batches).
    let mut bound = false;
    let mut pause = Duration::ZERO;
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        if !stopping {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shared.wake_uploader.notified() => {}
            }
        }
        let stopping = stopping || shared.stop.load(Ordering::SeqCst);
        if Instant::now() >= next_policy && !stopping {
            match fetch_policy(&mut session, &bearer).await {
                Ok(Session {
                    policy,
                    device,
                    last_seq,
                    last_end_ms,
                    last_timeline_seq,
                    rules_version,
                    rules,
                }) => {
                    take_rules(&shared, rules_version, rules);
                    match crate::lock(&aw).align_timeline(&device, last_timeline_seq) {
                        Ok(true) => tracing::warn!(
                            last_timeline_seq,
                            "the raw timelines' batch is numbered again (another device, or the gateway holds later batches)"
                        ),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "cannot align the raw timelines' batches")
                        }
                    }
                    let stored = {
                        let mut outbox = shared.outbox();
                        outbox
                            .bind_device(&device)
                            .and_then(|renumbered| {
                                if renumbered {
                                    tracing::warn!(
                                        "the token belongs to another device than the outbox's batches; they are numbered again"
                                    );
                                }
                                outbox.align(last_seq, last_end_ms)
                            })
                            .and_then(|behind| {
                                if behind {
                                    tracing::warn!(
                                        last_seq,
                                        "the gateway holds later batches of this device than this outbox (it was lost or reset); numbering goes on after them"
                                    );
                                }
                                outbox.set_policy(policy)
                            })
                    };
                    if let Err(e) = &stored {
                        tracing::error!(error = %e, "cannot store the privacy policy");
                    }
                    if shared.policy() != Some(policy) {
                        tracing::info!(?policy, "privacy policy in force");
                    }
                    *crate::lock(&shared.policy) = Some(policy);
                    bound = stored.is_ok() || bound;
                    policy_failures = 0;
                    shared.update(|s| s.policy = Some(policy));
                    next_policy = Instant::now() + config.policy_every;
                }
                Err(status) if refused(&status) => {
                    stop_uploads(&shared, &status);
                    return;
                }
                Err(status) => {
                    policy_failures += 1;
                    tracing::info!(%status, "cannot fetch the privacy policy yet");
                    next_policy = Instant::now() + uploader.backoff(policy_failures);
                }
            }
        }
        let policy = shared.policy().unwrap_or(Policy::STRICT);
        pause = config.upload_every;
        if !bound {
            pause = next_policy.saturating_duration_since(Instant::now());
            if stopping {
                return;
            }
            continue;
        }
        loop {
            match uploader.upload_next(&shared.outbox, &policy).await {
                Ok(Uploaded::Nothing) => {
                    failures = 0;
                    shared.update(|s| {
                        s.waiting = 0;
                        s.upload = UploadState::UpToDate {
                            at_ms: wall_now_ms(),
                        };
                    });
                    break;
                }
                Ok(_) => {
                    failures = 0;
                    let waiting = shared.outbox().waiting().unwrap_or_default();
                    shared.update(|s| s.waiting = waiting);
                }
                Err(SyncError::Unauthorized(status)) => {
                    stop_uploads(&shared, &status);
                    return;
                }
                Err(e) => {
                    failures += 1;
                    pause = uploader.backoff(failures);
                    tracing::info!(error = %e, ?pause, "upload failed; the batch stays in the outbox");
                    shared.update(|s| {
                        s.upload = UploadState::Retrying {
                            error: e.to_string(),
                        }
                    });
                    break;
                }
            }
        }
        if failures == 0 {
            match upload_timelines(&shared, &aw, &config, &mut uploader, &policy).await {
                Ok(()) => {}
                Err(SyncError::Unauthorized(status)) => {
                    stop_uploads(&shared, &status);
                    return;
                }
                Err(e) => {
                    failures += 1;
                    pause = uploader.backoff(failures);
                    tracing::info!(error = %e, ?pause, "raw timeline upload failed; the changes stay queued");
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Queues the raw timelines' settled changes (off the async workers: it may
/// read many events) and uploads the queue.
async fn upload_timelines(
    shared: &Shared,
    aw: &Arc<Mutex<AwStore>>,
    config: &AgentConfig,
    uploader: &mut Uploader,
    policy: &Policy,
) -> Result<(), SyncError> {
    let settled_us = (wall_now_ms() - config.settle.as_millis().min(i64::MAX as u128) as i64)
        .saturating_mul(1000);
    let store = aw.clone();
    let max = config.sync.max_spans;
    tokio::task::spawn_blocking(move || crate::lock(&store).queue_changes(settled_us, max * 10))
        .await
        .map_err(|e| SyncError::Timelines(AwError::Corrupt(format!("queueing stopped: {e}"))))??;
    while uploader.upload_timeline_next(aw, policy).await? {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
    }
    Ok(())
}

/// Keeps the org's rules when they changed (compared whole: a version
/// number alone is per org, and the default rules of version 0 change with
/// the classifier). None sent (the gateway could not read them just now):
/// the agent keeps its own.
fn take_rules(shared: &Shared, version: u32, rules: Vec<CategoryRule>) {
    {
        let c = crate::lock(&shared.classify);
        if rules.is_empty() || (c.version == Some(version) && c.rules == rules) {
            return;
        }
    }
    if let Err(e) = shared.outbox().set_rules(version, &rules) {
        tracing::error!(error = %e, "cannot keep the classification rules");
    }
    tracing::info!(version, "classification rules in force");
    *crate::lock(&shared.classify) = Classify {
        version: Some(version),
        rules,
        compiled: None,
    };
}

fn stop_uploads(shared: &Shared, status: &tonic::Status) {
    tracing::error!(
        reason = status.message(),
        "the gateway refuses this device's token; uploads stopped, the outbox is kept (enroll the device again)"
    );
    shared.update(|s| {
        s.upload = UploadState::Refused {
            reason: status.message().to_owned(),
        }
    });
}
