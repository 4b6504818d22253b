//! The agent's settings as command-line flags (and environment variables),
//! shared by `trackhrs agent` and the desktop app, and starting an agent
//! from them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::capture::X11Capture;
use crate::runner::{Agent, AgentConfig};
use crate::sync::SyncConfig;

/// Settings of the agent, the same for `trackhrs agent` and the desktop
/// app.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The gateway's gRPC address: `https://` for TLS (trusting the
    /// system's roots and `--gateway-ca`), `http://` for plaintext.
    #[arg(
        long,
        env = "TRACKHRS_GATEWAY",
        default_value = "http://127.0.0.1:50051"
    )]
    pub gateway: String,
    /// A CA certificate (PEM) to trust for an `https://` gateway, besides
    /// the system's roots (a private CA, or `trackhrs dev`'s).
    #[arg(long, env = "TRACKHRS_GATEWAY_CA")]
    pub gateway_ca: Option<PathBuf>,
    /// A file holding the device token (from `EnrollDevice`). The token is
    /// never taken on the command line, where other users could read it.
    #[arg(long, env = "TRACKHRS_DEVICE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Folder of the agent's outbox and local store (created if missing).
    /// Default: `.trackhrs-agent` for `trackhrs agent`, the user's data
    /// folder for the desktop app.
    #[arg(long, env = "TRACKHRS_AGENT_DATA")]
    data_dir: Option<PathBuf>,
    /// X display to observe (default: $DISPLAY).
    #[arg(long)]
    display: Option<String>,
    /// Milliseconds between observations.
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// Seconds without input after which the user is idle.
    #[arg(long, default_value_t = 180)]
    idle_after_secs: u64,
    /// Milliseconds between uploads of waiting spans.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    upload_every_ms: u64,
    /// Seconds between fetches of the org's privacy policy.
    #[arg(long, default_value_t = 300)]
    policy_every_secs: u64,
    /// Most spans per uploaded batch.
    #[arg(long, default_value_t = 500)]
    max_batch_spans: usize,
    /// Longest pause between upload attempts while the gateway fails, in ms.
    #[arg(long, default_value_t = 60_000)]
    max_backoff_ms: u64,
    /// Where the activity comes from: `x11` (the agent observes the
    /// desktop) or `activitywatch` (ActivityWatch's watchers report to the
    /// agent's API, e.g. awatcher on Wayland).
    #[arg(long, value_enum, default_value_t = Source::X11)]
    source: Source,
    /// Address of ActivityWatch's REST API (where its watchers and
    /// aw-client look for a server), or `off`. Default: 127.0.0.1:5600 with
    /// `--source activitywatch`, off with `--source x11`.
    #[arg(long)]
    activitywatch_listen: Option<String>,
    /// A browser extension allowed to call ActivityWatch's API, by its
    /// origin (aw-watcher-web: `moz-extension://<its id>` or
    /// `chrome-extension://<its id>`); repeat for more. Pages on other
    /// origins never may.
    #[arg(long = "activitywatch-origin")]
    activitywatch_origins: Vec<String>,
    /// Seconds after which the watchers' events are final (at most a day):
    /// they are synced raw, and with `--source activitywatch` become spans.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    settle_secs: u64,
}

/// Where the activity comes from.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Source {
    /// The agent's own X11 capture.
    X11,
    /// ActivityWatch's watchers, through the agent's API.
    Activitywatch,
}

fn token(args: &AgentArgs) -> anyhow::Result<String> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the device token from {}", path.display()))?,
        None => std::env::var("TRACKHRS_DEVICE_TOKEN").context(
            "no device token: pass --token-file or set TRACKHRS_DEVICE_TOKEN (EnrollDevice returns it)",
        )?,
    };
    let token = token.trim().to_owned();
    anyhow::ensure!(!token.is_empty(), "the device token is empty");
    Ok(token)
}

impl AgentArgs {
    /// Starts the agent these flags describe, its files in `data_dir` or,
    /// when none was given, in `default_data_dir()`. Must be called inside
    /// a tokio runtime. Returns it with the data folder.
    pub fn start(
        &self,
        default_data_dir: impl FnOnce() -> PathBuf,
    ) -> anyhow::Result<(Agent, PathBuf)> {
        let token = token(self)?;
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        crate::private::folder(&data_dir)
            .with_context(|| format!("the data folder {}", data_dir.display()))?;
        let mut config = AgentConfig::new(&self.gateway, token, data_dir.join("outbox.db"));
        config.gateway_ca.clone_from(&self.gateway_ca);
        config.poll = Duration::from_millis(self.poll_ms.max(10));
        config.idle_after = Duration::from_secs(self.idle_after_secs);
        config.upload_every = Duration::from_millis(self.upload_every_ms);
        config.policy_every = Duration::from_secs(self.policy_every_secs);
        config.sync = SyncConfig {
            max_spans: self.max_batch_spans.clamp(1, 1000),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            ..SyncConfig::default()
        };
        let listen = self
            .activitywatch_listen
            .as_deref()
            .unwrap_or(match self.source {
                Source::X11 => "off",
                Source::Activitywatch => "127.0.0.1:5600",
            });
        config.activitywatch_listen = match listen {
            "off" => None,
            addr => Some(addr.parse().with_context(|| {
                format!(
                    "--activitywatch-listen: {addr:?} is not an address like 127.0.0.1:5600 (or off)"
                )
            })?),
        };
        config
            .activitywatch_origins
            .clone_from(&self.activitywatch_origins);
        config.settle = Duration::from_secs(self.settle_secs);
        let agent = match self.source {
            Source::X11 => {
                let display = self.display.clone();
                Agent::start(config, move || X11Capture::connect(display.as_deref()))?
            }
            Source::Activitywatch => {
                anyhow::ensure!(
                    config.activitywatch_listen.is_some(),
                    "--source activitywatch needs --activitywatch-listen"
                );
                Agent::start_activitywatch(config)?
            }
        };
        Ok((agent, data_dir))
    }
}
