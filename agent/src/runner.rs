//! The running agent: a capture thread that polls the desktop and commits
//! spans to the outbox, and an upload task that sends the outbox to the
//! gateway and keeps the org's privacy policy current. `trackhrs agent` runs
//! it headless; the desktop app runs the same thing and shows its
//! [`Status`].

mod capture;
mod upload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use trackhrs_domain::categories::CategoryRule;
use trackhrs_domain::classifier::Rules;

use crate::aw::store::{AwError, AwStore, RetractHook, SpanSource};
use crate::capture::{Capture, CaptureError};
use crate::heartbeat::Event;
use crate::outbox::{Later, Outbox, OutboxError};
use crate::privacy::Policy;
use crate::sync::SyncConfig;
use crate::today::{Summary, Timelines, summarize};

/// How the agent runs.
#[derive(Clone)]
pub struct AgentConfig {
    /// The gateway's gRPC address, e.g. `https://gw.example.com` or
    /// `http://127.0.0.1:50051`.
    pub gateway: String,
    /// A CA certificate (PEM) trusted for an `https://` gateway besides the
    /// system's roots.
    pub gateway_ca: Option<PathBuf>,
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
    /// Where ActivityWatch's REST API is served (None: not served); a
    /// loopback address only.
    pub activitywatch_listen: Option<SocketAddr>,
    /// Browser extensions that may call the API besides the loopback's
    /// own pages (`moz-extension://<id>`).
    pub activitywatch_origins: Vec<String>,
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
            .field("gateway_ca", &self.gateway_ca)
            .field("token", &"<redacted>")
            .field("outbox", &self.outbox)
            .field("poll", &self.poll)
            .field("idle_after", &self.idle_after)
            .field("upload_every", &self.upload_every)
            .field("policy_every", &self.policy_every)
            .field("activitywatch_listen", &self.activitywatch_listen)
            .field("activitywatch_origins", &self.activitywatch_origins)
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
            activitywatch_origins: Vec::new(),
            activitywatch_store: outbox.with_file_name("activitywatch.db"),
            settle: Duration::from_secs(600),
            gateway: gateway.into(),
            gateway_ca: None,
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
    /// Every span waiting was uploaded at this time (Unix ms); retractions
    /// may still wait for a gateway that records them.
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

/// The gateway's endpoint: for `https://`, TLS trusting the system's roots
/// and, given, the CA certificate in `ca` (PEM); the server's name is the
/// URL's host.
pub fn gateway_endpoint(gateway: &str, ca: Option<&Path>) -> Result<Endpoint, AgentError> {
    let endpoint = Endpoint::from_shared(gateway.to_owned())
        .map_err(|_| AgentError::Gateway(gateway.into()))?;
    if !gateway.starts_with("https://") {
        return match ca {
            None => Ok(endpoint),
            Some(path) => Err(AgentError::GatewayCa {
                path: path.to_owned(),
                reason: format!("given for {gateway}, which is not https://"),
            }),
        };
    }
    let mut tls = ClientTlsConfig::new().with_native_roots();
    if let Some(path) = ca {
        let pem = std::fs::read(path).map_err(|e| AgentError::GatewayCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(AgentError::GatewayCa {
                path: path.to_owned(),
                reason: "holds no PEM certificate".into(),
            });
        }
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    endpoint
        .tls_config(tls)
        .map_err(|e| AgentError::GatewayTls {
            gateway: gateway.to_owned(),
            reason: with_causes(&e),
        })
}

/// An error with the errors under it (a transport error's reason sits in
/// its sources, not in its message).
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
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
    /// TLS to the gateway cannot be set up (no system roots, a bad name).
    #[error("TLS to the gateway {gateway}: {reason}")]
    GatewayTls {
        /// The gateway's URL.
        gateway: String,
        /// Why.
        reason: String,
    },
    /// The CA certificate to trust cannot be read or used.
    #[error("the gateway's CA certificate {path}: {reason}")]
    GatewayCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
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
    /// ActivityWatch's API would be reachable from the network.
    #[error(
        "ActivityWatch's API is served on loopback only (127.0.0.1 or ::1), not {addr}: anyone who reaches it could read and write the employee's activity"
    )]
    NotLoopback {
        /// The address asked for.
        addr: SocketAddr,
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

/// What becomes of deleted time no span reached yet, with spans from
/// `source`: the agent's own capture keeps the open span in memory, so it
/// waits for it; ActivityWatch's watchers' events not combined yet never
/// are, so it is dropped.
fn later_for(source: SpanSource) -> Later {
    match source {
        SpanSource::Own => Later::Wait,
        SpanSource::Watchers => Later::Drop,
    }
}

/// The hook that queues time the employee deleted from the local store
/// for withdrawal from the uploads (see [`Outbox::retract`], `later` for
/// the time no span reached yet) and wakes the uploader to send it. Runs
/// under the store's lock, which is taken before the outbox's everywhere.
fn retract_into(shared: Arc<Shared>, later: Later) -> RetractHook {
    Box::new(move |ranges| {
        let retracted = shared
            .outbox()
            .retract(ranges, later)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            deleted = ranges.len(),
            queued = retracted.queued,
            waiting_for_spans = retracted.kept,
            "time deleted locally is queued to be withdrawn from the uploads"
        );
        if retracted.queued > 0 {
            shared.wake_uploader.notify_one();
        }
        Ok(())
    })
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
        Self::launch(config, SpanSource::Own, move |shared, config, aw| {
            std::thread::Builder::new()
                .name("trackhrs-capture".into())
                .spawn(move || capture::capture_loop(&shared, &config, &aw, connect))
        })
    }

    /// Opens the outbox and takes the device's activity from ActivityWatch's
    /// watchers reporting to the API (`activitywatch_listen` must be set):
    /// their window and AFK timelines are combined into spans once settled.
    pub fn start_activitywatch(config: AgentConfig) -> Result<Self, AgentError> {
        Self::launch(config, SpanSource::Watchers, |shared, config, aw| {
            std::thread::Builder::new()
                .name("trackhrs-combine".into())
                .spawn(move || capture::combine_loop(&shared, &config, &aw))
        })
    }

    /// Starts the agent with spans from `span_source`, made by the thread
    /// `source` starts.
    fn launch(
        config: AgentConfig,
        span_source: SpanSource,
        source: impl FnOnce(
            Arc<Shared>,
            AgentConfig,
            Arc<Mutex<AwStore>>,
        ) -> std::io::Result<JoinHandle<()>>,
    ) -> Result<Self, AgentError> {
        let endpoint = gateway_endpoint(&config.gateway, config.gateway_ca.as_deref())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        let bearer = MetadataValue::try_from(format!("Bearer {}", config.token))
            .map_err(|_| AgentError::Token)?;
        let mut outbox = Outbox::open(&config.outbox)?;
        // Before anything records spans: the spans the withdrawals waited
        // for were in the memory of the last run.
        let forgotten = outbox.forget_withdrawals()?;
        if forgotten > 0 {
            tracing::info!(
                forgotten,
                "deleted time that waited for spans of the last run is forgotten (those spans were lost with it, or never covered it)"
            );
        }
        let aw = Arc::new(Mutex::new(AwStore::open(&config.activitywatch_store)?));
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
        {
            // Before the API is served: no delete may miss the hook.
            let mut store = crate::lock(&aw);
            store.set_span_source(span_source);
            store.on_retract(retract_into(shared.clone(), later_for(span_source)));
        }
        let activitywatch = match config.activitywatch_listen {
            Some(addr) if !addr.ip().is_loopback() => return Err(AgentError::NotLoopback { addr }),
            Some(addr) => {
                let listener = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|source| AgentError::Listen { addr, source })?;
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let served = tokio::spawn({
                    let aw = aw.clone();
                    let origins =
                        crate::aw::api::Origins::new(config.activitywatch_origins.clone());
                    async move {
                        let shutdown = async {
                            let _ = stopped.await;
                        };
                        if let Err(e) = crate::aw::api::serve(listener, aw, origins, shutdown).await
                        {
                            tracing::error!(error = %e, "ActivityWatch's API stopped");
                        }
                    }
                });
                tracing::info!(%addr, "serving ActivityWatch's API");
                Some((stop, served))
            }
            None => None,
        };
        let capture =
            source(shared.clone(), config.clone(), aw.clone()).map_err(AgentError::Spawn)?;
        let channel = endpoint.connect_lazy();
        let uploader = tokio::spawn(upload::upload_loop(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::SpanData;

    #[tokio::test]
    async fn a_new_run_forgets_the_withdrawals_of_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let span = Event {
            start_ms: 1000,
            duration_ms: 5000,
            data: SpanData {
                app: "code".into(),
                title: String::new(),
                url: None,
                active: true,
            },
        };
        // The last run's open span covered time the employee deleted; it
        // crashed before committing the span.
        let retracted = Outbox::open(&path)
            .unwrap()
            .retract(&[(2000, 3000)], Later::Wait)
            .unwrap();
        assert_eq!(retracted.kept, 1);
        // Nothing listens there: uploads fail.
        let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut config = AgentConfig::new(format!("http://{nowhere}"), "token", path.clone());
        config.activitywatch_store = dir.path().join("activitywatch.db");
        let agent = Agent::start_activitywatch(config).unwrap();
        agent.stop(Duration::from_millis(100)).await;
        // A span of a later run over that time is not withdrawn.
        let mut outbox = Outbox::open(&path).unwrap();
        outbox.push(&span).unwrap();
        let batch = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(batch.spans, [span]);
        assert!(batch.retractions.is_empty());
    }
}
