//! Prometheus metrics: the recorder that every crate's `metrics` calls
//! report to, served as Prometheus text on `http://<address>/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Where the metrics are served.
#[derive(clap::Args, Clone)]
pub struct MetricsArgs {
    /// Address of the Prometheus metrics endpoint (`/metrics`); port 0
    /// picks a free one, printed at start.
    #[arg(long, env = "TRACKHRS_METRICS_LISTEN", default_value = "127.0.0.1:0")]
    pub metrics_listen: SocketAddr,
}

/// Latency buckets, in seconds: a quarter of a millisecond to ten seconds.
const LATENCY_BUCKETS: [f64; 13] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// Commits per projection batch.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

/// Installs the process's metrics recorder and serves it; returns the
/// address it listens on. Runs until the process ends.
pub async fn serve_metrics(args: &MetricsArgs) -> anyhow::Result<SocketAddr> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("trackhrs_projection_batch_commits".into()),
            &BATCH_BUCKETS,
        )?
        .install_recorder()
        .context("install the metrics recorder")?;
    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot serve metrics on {}", args.metrics_listen))?;
    let addr = listener.local_addr()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let routes = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, routes).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    Ok(addr)
}
