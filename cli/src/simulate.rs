//! Simulated desktop agents for `trackhrs dev`: each demo member's laptop
//! uploads a realistic workday over the gateway's real gRPC ingest, the
//! hours before now compressed into a burst of batches at start, then one
//! span every few seconds as time passes.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use trackhrs_app::App;
use trackhrs_domain::Token;
use trackhrs_domain::organization::OrgCommand;
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::agent_session_client::AgentSessionClient;
use trackhrs_schemas::agent::v1::{
    GetPolicyRequest, Retraction, Span, TimelineChange, TimelineEvent, UploadBatchRequest,
    UploadBatchResponse, UploadTimelineRequest, timeline_change,
};

use crate::platform::Shutdown;

/// What a persona works on: (app, window titles, URL) choices.
type Persona = &'static [(&'static str, &'static [&'static str], Option<&'static str>)];

/// Who works what: (app, titles, url) choices per persona.
const DEVELOPER: Persona = &[
    (
        "code",
        &[
            "main.rs - trackhrs",
            "store.rs - trackhrs",
            "Cargo.toml - trackhrs",
        ],
        None,
    ),
    (
        "alacritty",
        &["cargo test --workspace", "git log --oneline"],
        None,
    ),
    (
        "firefox",
        &["Pull request #42 · trackhrs/trackhrs - GitHub"],
        Some("https://github.com/trackhrs/trackhrs/pull/42"),
    ),
    (
        "firefox",
        &["rust - How do I borrow twice? - Stack Overflow"],
        Some("https://stackoverflow.com/questions/1"),
    ),
    (
        "slack",
        &["#engineering | Acme", "Manny Manager | Acme"],
        None,
    ),
    (
        "firefox",
        &["YouTube - RustConf keynote"],
        Some("https://www.youtube.com/watch?v=rust"),
    ),
];
const MANAGER: Persona = &[
    (
        "thunderbird",
        &["Inbox - manny@acme.test", "Re: Q3 planning"],
        None,
    ),
    ("zoom", &["Zoom Meeting", "Weekly sync"], None),
    (
        "libreoffice",
        &["Q3 plan.ods - LibreOffice Calc", "Hiring.odt"],
        None,
    ),
    ("slack", &["#general | Acme", "Erin Employee | Acme"], None),
    (
        "firefox",
        &["Jira - Sprint board"],
        Some("https://acme.atlassian.net/board"),
    ),
    (
        "firefox",
        &["reddit - r/programming"],
        Some("https://www.reddit.com/r/programming"),
    ),
];

/// One simulated laptop.
struct Agent {
    who: &'static str,
    device: Token,
    token: String,
    persona: Persona,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Enrolls (once) a laptop for each demo member who tracks time, with a
/// fresh device token, and runs their agents until shutdown.
pub async fn run(
    app: std::sync::Arc<App>,
    org: Token,
    gateway: String,
    gateway_ca: Option<std::path::PathBuf>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let people: [(&'static str, Persona); 3] =
        [("manny", MANAGER), ("erin", DEVELOPER), ("ed", DEVELOPER)];
    let state = app.org_commands().state(&org).await?;
    let mut agents = Vec::new();
    for (who, persona) in people {
        let device = Token::new(format!("laptop-{who}"))?;
        if !state.devices.contains_key(&device) {
            app.org_commands()
                .execute(
                    &org,
                    &format!("person:{who}"),
                    &format!("demo-enroll-{who}"),
                    OrgCommand::EnrollDevice {
                        actor: Token::new(who)?,
                        device: device.clone(),
                        name: format!("{who}'s laptop"),
                    },
                )
                .await
                .with_context(|| format!("enroll the demo laptop of {who}"))?;
        }
        let token = app
            .credentials()
            .put_device_token(org.as_str(), device.as_str(), who)
            .await
            .with_context(|| format!("device token of {who}"))?;
        agents.push(Agent {
            who,
            device,
            token,
            persona,
        });
    }
    let mut tasks = Vec::new();
    for (n, agent) in agents.into_iter().enumerate() {
        let gateway = trackhrs_agent::runner::gateway_endpoint(&gateway, gateway_ca.as_deref())?;
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = simulate(gateway, agent, n as u64, shutdown).await {
                tracing::warn!(error = %e, "simulated agent stopped");
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

async fn simulate(
    gateway: Endpoint,
    agent: Agent,
    seed: u64,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let channel = trackhrs_harness::wait_until(Duration::from_secs(30), || {
        let endpoint = gateway.clone();
        async move { endpoint.connect().await.ok() }
    })
    .await
    .context("the gateway did not come up")?;
    let bearer = MetadataValue::try_from(format!("Bearer {}", agent.token))?;
    // Where the last run stopped, as a real agent learns it.
    let mut ask = Request::new(GetPolicyRequest {});
    ask.metadata_mut().insert("authorization", bearer.clone());
    let policy = AgentSessionClient::new(channel.clone())
        .get_policy(ask)
        .await?
        .into_inner();
    let client = AgentIngestClient::new(channel);
    let mut seq = policy.last_batch_seq;
    let mut timeline_seq = policy.last_timeline_seq;
    // The workday so far: from 8 hours ago (or where the last run stopped).
    let mut cursor = policy.last_span_end_unix_ms.max(now_ms() - 8 * 3_600_000);
    let mut rng = StdRng::seed_from_u64(seed ^ seq);
    // Erin deletes one stretch of her day in ActivityWatch (private time):
    // the agent withdraws it from what it uploaded, and it never reaches
    // the raw timeline.
    let mut withdraw = agent.who == "erin";
    let mut stop = Box::pin(shutdown.wait());
    loop {
        let now = now_ms();
        let mut spans = Vec::new();
        while cursor < now - 1000 && spans.len() < 50 {
            // Minutes while catching up, seconds once at the present.
            let length = if now - cursor > 600_000 {
                rng.random_range(60_000..900_000)
            } else {
                now - cursor
            };
            let end = (cursor + length).min(now);
            let (app, titles, url) = agent.persona[rng.random_range(0..agent.persona.len())];
            spans.push(Span {
                start_unix_ms: cursor,
                end_unix_ms: end,
                app: app.into(),
                title: titles[rng.random_range(0..titles.len())].into(),
                url: url.map(str::to_owned),
                active: rng.random_range(0..10) > 0,
            });
            cursor = end;
        }
        if !spans.is_empty() {
            seq += 1;
            let retractions: Vec<Retraction> = match spans.get(1) {
                Some(private) if withdraw => {
                    withdraw = false;
                    vec![Retraction {
                        start_unix_ms: private.start_unix_ms,
                        end_unix_ms: private.end_unix_ms,
                    }]
                }
                _ => Vec::new(),
            };
            let withdrawn = |span: &Span| {
                retractions
                    .iter()
                    .any(|r| r.start_unix_ms == span.start_unix_ms)
            };
            // The watcher's raw timeline of the same windows, as a real
            // agent with ActivityWatch's window watcher uploads it.
            timeline_seq += 1;
            let timeline = UploadTimelineRequest {
                batch_id: format!("{}-timeline-{timeline_seq}", agent.device),
                device_timeline_seq: timeline_seq,
                changes: spans
                    .iter()
                    .filter(|span| !withdrawn(span))
                    .map(|span| window_event(agent.device.as_str(), span, policy.capture_titles))
                    .collect(),
            };
            let batch = UploadBatchRequest {
                batch_id: format!("{}-{seq}", agent.device),
                device_batch_seq: seq,
                spans,
                retractions,
            };
            let spans_client = client.clone();
            if !until_acknowledged(agent.who, &batch, &bearer, &mut stop, |r| {
                let mut c = spans_client.clone();
                async move { c.upload_batch(r).await }
            })
            .await
            {
                return Ok(());
            }
            let timeline_client = client.clone();
            if !until_acknowledged(agent.who, &timeline, &bearer, &mut stop, |r| {
                let mut c = timeline_client.clone();
                async move { c.upload_timeline(r).await }
            })
            .await
            {
                return Ok(());
            }
            if cursor < now - 1000 {
                continue;
            }
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// A span as the window watcher's event: app and, where the policy allows,
/// title.
fn window_event(device: &str, span: &Span, titles: bool) -> TimelineChange {
    let mut data = serde_json::json!({ "app": span.app });
    if titles {
        data["title"] = serde_json::Value::from(span.title.as_str());
    }
    TimelineChange {
        change: Some(timeline_change::Change::Event(TimelineEvent {
            bucket_id: format!("aw-watcher-window_{device}"),
            bucket_type: "currentwindow".into(),
            client: "aw-watcher-window".into(),
            event_key: span.start_unix_ms.to_string(),
            version: 1,
            start_unix_us: span.start_unix_ms * 1000,
            end_unix_us: span.end_unix_ms * 1000,
            data_json: data.to_string(),
        })),
    }
}

/// Sends `message` until the gateway acknowledges it, like a real agent (the
/// gateway recognises a repeat); `false` when stopped first.
async fn until_acknowledged<T, F, Fut>(
    who: &str,
    message: &T,
    bearer: &MetadataValue<tonic::metadata::Ascii>,
    stop: &mut (impl Future<Output = ()> + Unpin),
    mut send: F,
) -> bool
where
    T: Clone,
    F: FnMut(Request<T>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<UploadBatchResponse>, tonic::Status>>,
{
    loop {
        let mut request = Request::new(message.clone());
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        match send(request).await {
            Ok(ack) => {
                tracing::debug!(who, position = ack.into_inner().stream_sequence, "uploaded");
                return true;
            }
            Err(status) => {
                tracing::warn!(who, %status, "upload failed; retrying");
                tokio::select! {
                    _ = &mut *stop => return false,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}
