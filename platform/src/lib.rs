//! Assembles the platform, once, for everything that runs it: the
//! `trackhrs` binary's roles (`dev`, `gateway`, `projections run`,
//! `rebuild`, `dlq replay`) and the tests. [`Platform::build`] opens the
//! application layer and binds the gateway; [`Platform::run`] serves it and
//! runs the read models and policies until shutdown.
//!
//! Architecture invariant: the only crate besides the binary that imports
//! the gateway; it holds no business rule, only the wiring. The list of
//! read models and policies ([`read_models`]) lives here and nowhere else.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, future};
use tokio::net::TcpListener;
use trackhrs_app::policy::Revocation;
use trackhrs_app::{App, AppConfig, AppError};
use trackhrs_nats::EventStore;
use trackhrs_projections::activity::Activity;
use trackhrs_projections::directory::Directory;
use trackhrs_projections::history::History;
use trackhrs_projections::pay::Pay;
use trackhrs_projections::timeline::Timeline;
use trackhrs_projections::usage::Usage;
use trackhrs_projections::work::Work;
use trackhrs_projections::{ProjectionError, RunnerConfig, Supervise, Supervisor};

pub use trackhrs_gateway::{MAX_MESSAGE_BYTES, Options as GatewayOptions};

/// The log filter of `spec` (`RUST_LOG`'s syntax), with tokio-postgres
/// held at WARN whatever `spec` says (`tokio_postgres::query=debug`
/// included): it logs every statement's parameters at DEBUG (names, e-mail
/// addresses, titles, URLs, which no erasure could take back out of a log).
pub fn log_filter<S>(
    spec: &str,
) -> impl tracing_subscriber::layer::Filter<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
    let env = tracing_subscriber::EnvFilter::new(spec);
    // `and` keeps the lower of the two hints, and a hint-less filter erases
    // it: the spec's own hint is given to the target filter too, so events
    // above it are still skipped at their call sites.
    let hint = env.max_level_hint().unwrap_or(LevelFilter::TRACE);
    env.and(
        filter_fn(|meta| {
            !meta.target().starts_with("tokio_postgres") || *meta.level() <= tracing::Level::WARN
        })
        .with_max_level_hint(hint),
    )
}

/// What went wrong assembling or running the platform.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The application layer could not open (credential store).
    #[error("opening the application: {0}")]
    App(#[from] AppError),
    /// The gateway's address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gateway failed.
    #[error(transparent)]
    Gateway(#[from] trackhrs_gateway::GatewayError),
    /// A read model or policy failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The event store could not be provisioned.
    #[error(transparent)]
    Store(#[from] trackhrs_nats::StoreError),
    /// A task panicked or was cancelled.
    #[error("platform task: {0}")]
    Task(String),
    /// No read model or policy has that name.
    #[error("unknown projection {name}; the projections are {known}")]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
}

/// Which read models and policies a platform runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReadModels {
    /// None (a gateway replica).
    #[default]
    None,
    /// All of them (the projections role, `dev`).
    All,
    /// All but these (tests of a read model being built or missing).
    AllBut(Vec<String>),
}

/// How to assemble a platform.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The application layer's settings.
    pub app: AppConfig,
    /// PostgreSQL connections of the application layer.
    pub pg_pool: usize,
    /// Where the gateway listens; `None`: no gateway.
    pub gateway: Option<SocketAddr>,
    /// The built portal's folder, served by the gateway; `None`: no portal.
    pub portal: Option<PathBuf>,
    /// The gateway's TLS certificate and key; `None`: plaintext.
    pub tls: Option<TlsIdentity>,
    /// Trusted proxies and limits of the gateway.
    pub gateway_options: trackhrs_gateway::Options,
    /// The read models and policies to run.
    pub read_models: ReadModels,
    /// Overrides every read model's batch wait (tests apply at once).
    pub batch_wait: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            app: AppConfig::default(),
            pg_pool: 16,
            gateway: None,
            portal: None,
            tls: None,
            gateway_options: trackhrs_gateway::Options::default(),
            read_models: ReadModels::None,
            batch_wait: None,
        }
    }
}

/// Creates or updates every stream and bucket the platform uses: the event
/// stream, the snapshot and key buckets, the dead-letter stream. Needs a NATS
/// identity that may create and update streams; every other role only checks
/// the result when it opens the store.
pub async fn provision(
    client: &async_nats::Client,
    config: &trackhrs_nats::StoreConfig,
) -> Result<(), PlatformError> {
    trackhrs_nats::provision(client, config).await?;
    trackhrs_projections::dlq::provision(client, config.replicas).await?;
    Ok(())
}

/// How the activity and timeline projections batch: up to 100 commits or
/// 1 s. Commits of uploads carry many spans each, so a batch is thousands of
/// events.
pub fn activity_config() -> RunnerConfig {
    RunnerConfig {
        batch_max: 100,
        batch_wait: Duration::from_millis(1000),
        ..RunnerConfig::default()
    }
}

/// Every read model and policy, each under its supervisor (versions,
/// rebuilds, dead-letter replays). A new read model is added here, and
/// nowhere else.
pub fn read_models(store: &EventStore, pg: &tokio_postgres::Config) -> Vec<Box<dyn Supervise>> {
    read_models_with(store, pg, None)
}

fn read_models_with(
    store: &EventStore,
    pg: &tokio_postgres::Config,
    batch_wait: Option<Duration>,
) -> Vec<Box<dyn Supervise>> {
    // Organization events are rare and people wait for them (a query with
    // min_position, a revocation): apply them promptly.
    let prompt = RunnerConfig {
        batch_wait: Duration::from_millis(50),
        ..RunnerConfig::default()
    };
    let configure = |config: RunnerConfig| RunnerConfig {
        batch_wait: batch_wait.unwrap_or(config.batch_wait),
        ..config
    };
    let policy_store = store.clone();
    vec![
        Box::new(Supervisor::new(
            Directory::new,
            store.clone(),
            pg.clone(),
            configure(prompt.clone()),
        )),
        Box::new(Supervisor::new(
            History::new,
            store.clone(),
            pg.clone(),
            configure(prompt.clone()),
        )),
        Box::new(Supervisor::new(
            Pay::new,
            store.clone(),
            pg.clone(),
            configure(prompt.clone()),
        )),
        Box::new(Supervisor::new(
            move |version| Revocation::new(policy_store.clone(), version),
            store.clone(),
            pg.clone(),
            configure(prompt),
        )),
        Box::new(Supervisor::new(
            Activity::new,
            store.clone(),
            pg.clone(),
            configure(activity_config()),
        )),
        Box::new(Supervisor::new(
            Timeline::new,
            store.clone(),
            pg.clone(),
            configure(activity_config()),
        )),
        // Storage per org for operators: every message, counted in bulk
        // (one upsert per batch), so large batches catch up quickest.
        Box::new(Supervisor::new(
            Usage::new,
            store.clone(),
            pg.clone(),
            configure(RunnerConfig {
                batch_max: 2_000,
                ..activity_config()
            }),
        )),
        // Uploads as the activity projection, but members wait for their
        // entries and decisions to show: shorter batches.
        Box::new(Supervisor::new(
            Work::new,
            store.clone(),
            pg.clone(),
            configure(RunnerConfig {
                batch_wait: Duration::from_millis(200),
                ..activity_config()
            }),
        )),
    ]
}

/// The read model or policy called `name`.
pub fn read_model(
    store: &EventStore,
    pg: &tokio_postgres::Config,
    name: &str,
) -> Result<Box<dyn Supervise>, PlatformError> {
    let all = read_models(store, pg);
    let known: Vec<String> = all.iter().map(|r| r.name()).collect();
    all.into_iter()
        .find(|r| r.name() == name)
        .ok_or_else(|| PlatformError::UnknownProjection {
            name: name.to_owned(),
            known: known.join(", "),
        })
}

/// A TLS certificate chain and its private key, PEM. Not `Debug`-printed:
/// the key is a secret.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate chain, the server's first.
    pub cert_pem: Vec<u8>,
    /// The private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(<certificate and key>)")
    }
}

/// A platform assembled and ready to run.
pub struct Platform {
    app: Option<Arc<App>>,
    store: EventStore,
    pg: tokio_postgres::Config,
    gateway: Option<TcpListener>,
    gateway_addr: Option<SocketAddr>,
    portal: Option<PathBuf>,
    tls: Option<TlsIdentity>,
    gateway_options: trackhrs_gateway::Options,
    read_models: Vec<Box<dyn Supervise>>,
}

impl Platform {
    /// Opens the application layer on `store` and PostgreSQL `pg`, binds the
    /// gateway's address (port 0: a free one, see
    /// [`Platform::gateway_addr`]) and prepares the read models.
    pub async fn build(
        store: EventStore,
        pg: tokio_postgres::Config,
        settings: Settings,
    ) -> Result<Self, PlatformError> {
        if let Some(tls) = &settings.tls {
            // A certificate or key that cannot be served stops the platform
            // before it starts anything.
            trackhrs_gateway::check_tls(tonic::transport::Identity::from_pem(
                &tls.cert_pem,
                &tls.key_pem,
            ))?;
        }
        let pool = trackhrs_app::pg_pool(pg.clone(), settings.pg_pool)?;
        let (finder_store, finder_pg) = (store.clone(), pg.clone());
        let finder: trackhrs_app::Finder =
            Arc::new(move |name| read_model(&finder_store, &finder_pg, name).ok());
        // A process that only runs read models (`trackhrs projections run`)
        // opens no application layer: it needs no credentials, so its
        // database role needs no access to them.
        let app = if settings.gateway.is_some() || matches!(settings.read_models, ReadModels::None)
        {
            Some(Arc::new(
                App::open(store.clone(), pool, settings.app)
                    .await?
                    .with_read_models(finder),
            ))
        } else {
            None
        };
        let gateway = match settings.gateway {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| PlatformError::Listen { addr, source })?,
            ),
            None => None,
        };
        let gateway_addr = gateway.as_ref().and_then(|l| l.local_addr().ok());
        let read_models = match settings.read_models {
            ReadModels::None => Vec::new(),
            ReadModels::All => read_models_with(&store, &pg, settings.batch_wait),
            ReadModels::AllBut(skip) => read_models_with(&store, &pg, settings.batch_wait)
                .into_iter()
                .filter(|r| !skip.contains(&r.name()))
                .collect(),
        };
        Ok(Self {
            app,
            store,
            pg,
            gateway,
            gateway_addr,
            portal: settings.portal,
            tls: settings.tls,
            gateway_options: settings.gateway_options,
            read_models,
        })
    }

    /// The application layer (for seeding and operator tools); `None` in a
    /// process that only runs read models.
    pub fn app(&self) -> Option<&Arc<App>> {
        self.app.as_ref()
    }

    /// The event store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// PostgreSQL's settings.
    pub fn pg(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// Where the gateway listens, when it has one.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        self.gateway_addr
    }

    /// Serves the gateway and runs the read models and policies until
    /// `shutdown` completes; then waits for each to stop. A role that fails
    /// ends the run with its error at once.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), PlatformError> {
        let stop = shutdown.boxed().shared();
        let mut tasks: Vec<(String, BoxFuture<'static, Result<(), PlatformError>>)> = Vec::new();
        for supervisor in self.read_models {
            let name = supervisor.name();
            let run = tokio::spawn(supervisor.run(stop.clone().boxed()));
            tasks.push((
                name,
                async move {
                    run.await
                        .map_err(|e| PlatformError::Task(e.to_string()))?
                        .map_err(PlatformError::from)
                }
                .boxed(),
            ));
        }
        if let (Some(listener), Some(app)) = (self.gateway, self.app) {
            let serve = tokio::spawn(trackhrs_gateway::serve(
                listener,
                app,
                self.portal,
                self.tls
                    .map(|t| tonic::transport::Identity::from_pem(t.cert_pem, t.key_pem)),
                self.gateway_options,
                stop.clone(),
            ));
            tasks.push((
                "gateway".to_owned(),
                async move {
                    serve
                        .await
                        .map_err(|e| PlatformError::Task(e.to_string()))?
                        .map_err(PlatformError::from)
                }
                .boxed(),
            ));
        }
        // The first to fail ends the platform, so that the process exits
        // (and is restarted) rather than serving without it.
        let mut running: Vec<_> = tasks
            .into_iter()
            .map(|(name, run)| run.map(move |result| (name, result)).boxed())
            .collect();
        while !running.is_empty() {
            let ((name, result), _, rest) = future::select_all(running).await;
            if let Err(e) = result {
                tracing::error!(role = name, error = %e, "stopped by an error");
                return Err(e);
            }
            tracing::info!(role = name, "stopped");
            running = rest;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::Filter;

    #[test]
    fn the_log_filter_keeps_the_specs_level_hint() {
        for (spec, hint) in [
            ("info", LevelFilter::INFO),
            ("warn,trackhrs=debug", LevelFilter::DEBUG),
        ] {
            let filter = super::log_filter::<tracing_subscriber::Registry>(spec);
            assert_eq!(Filter::max_level_hint(&filter), Some(hint), "{spec}");
        }
    }
}
