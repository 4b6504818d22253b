//! `trackhrs bench agent`: the desktop agent's cost and throughput against
//! real servers started for the run (nats-server with `sync_interval:
//! always`, a private durable PostgreSQL) and a real X11 desktop (Xvfb with
//! openbox):
//! 1. outbox throughput: spans committed to the SQLite outbox per second
//!    (each commit durable), then uploaded to the gateway per second;
//! 2. `trackhrs agent` as its own process observing the desktop once a
//!    second for `--seconds`, its window changing every few seconds: CPU
//!    (user + system, from /proc) and resident memory;
//! 3. with `--desktop-app`, the desktop app the same way for
//!    `--desktop-seconds`, its WebKit processes included: resident memory
//!    (RSS, and PSS, which counts a page shared by several processes once)
//!    and CPU.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use trackhrs_agent::heartbeat::{Event, SpanData};
use trackhrs_agent::outbox::Outbox;
use trackhrs_agent::privacy::Policy;
use trackhrs_agent::sync::{SyncConfig, Uploader};
use trackhrs_domain::Token;
use trackhrs_domain::activity::DeviceActivity;
use trackhrs_harness::desktop::{Display, open_window, set_class, set_title};
use trackhrs_nats::{EventStore, StoreConfig};
use trackhrs_platform::{Platform, Settings};

use crate::bench::{clock_ticks, cpu_ticks, say};
use crate::bench_pipeline::{bench_servers, serve_devices};

/// Arguments of `bench agent`.
#[derive(clap::Args)]
pub struct AgentBenchArgs {
    /// Spans committed to the outbox and uploaded in the throughput part.
    #[arg(long, default_value_t = 20_000)]
    spans: u64,
    /// Seconds the headless agent runs while its CPU and memory are sampled.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Seconds between changes of the active window.
    #[arg(long, default_value_t = 5)]
    switch_every: u64,
    /// The desktop app's binary (`cargo build --release -p
    /// trackhrs-desktop`): when given, it is measured too.
    #[arg(long)]
    desktop_app: Option<std::path::PathBuf>,
    /// Seconds the desktop app runs while it is measured.
    #[arg(long, default_value_t = 120)]
    desktop_seconds: u64,
}

/// `pid` and every process below it.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // After the command name: state, then the parent's pid.
            if let Some(parent) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            {
                parents.push((child, parent));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|&&(_, p)| p == parent)
                .map(|&(c, _)| c),
        );
        i += 1;
    }
    tree
}

/// Proportional set size of a process (a page shared by n processes counts
/// 1/n), KiB.
fn pss_kib(pid: u32) -> anyhow::Result<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no Pss")?
        .parse()?)
}

/// Memory and CPU of a process tree.
#[derive(Default, Clone, Copy)]
struct TreeSample {
    processes: usize,
    main_rss_kib: u64,
    rss_kib: u64,
    pss_kib: u64,
    cpu: Duration,
}

fn sample_tree(pid: u32, ticks_per_s: u64) -> anyhow::Result<TreeSample> {
    let mut total = TreeSample::default();
    for p in process_tree(pid) {
        // A process may end between the listing and the reading.
        let (Ok(s), Ok(pss)) = (sample(p, ticks_per_s), pss_kib(p)) else {
            continue;
        };
        if p == pid {
            total.main_rss_kib = s.rss_kib;
        }
        total.processes += 1;
        total.rss_kib += s.rss_kib;
        total.pss_kib += pss;
        total.cpu += s.cpu;
    }
    Ok(total)
}

/// CPU time (user + system) and resident memory of a process, from /proc.
struct Sample {
    cpu: Duration,
    rss_kib: u64,
}

fn sample(pid: u32, ticks_per_s: u64) -> anyhow::Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = cpu_ticks(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    Ok(Sample {
        cpu: Duration::from_millis(ticks * 1000 / ticks_per_s),
        rss_kib,
    })
}

/// The `n`th change of the active window: another application and title.
fn switch_window(conn: &x11rb::rust_connection::RustConnection, window: u32, n: u64) {
    set_class(
        conn,
        window,
        ["EditorApp", "BrowserApp", "ChatApp"][(n % 3) as usize],
    );
    set_title(conn, window, &format!("document {n}"));
}

/// Runs the benchmark and prints its figures.
pub async fn run_agent(args: AgentBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_nats, _pg, client, pg_config) = bench_servers(dir.path(), &[]).await?;
    let config = StoreConfig::with_kek(crate::bench::bench_kek()?);
    trackhrs_nats::provision(&client, &config).await?;
    let store = EventStore::open(client, config).await?;
    let gateway = Platform::build(
        store.clone(),
        pg_config,
        Settings {
            pg_pool: 8,
            gateway: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Settings::default()
        },
    )
    .await?;
    let (tokens, channel, addr, app) = serve_devices(gateway, 3, None).await?;

    // 1. Outbox throughput.
    let outbox_path = dir.path().join("bench-outbox.db");
    let mut outbox = Outbox::open(&outbox_path)?;
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64
        - 20 * 24 * 3_600_000;
    let started = Instant::now();
    for i in 0..args.spans as i64 {
        outbox.push(&Event {
            start_ms: start + i * 10_000,
            duration_ms: 9_000,
            data: SpanData {
                app: ["code", "firefox", "slack"][(i % 3) as usize].into(),
                title: format!("window {}", i % 50),
                url: None,
                active: i % 7 != 0,
            },
        })?;
    }
    let committed = started.elapsed();
    let outbox = Arc::new(Mutex::new(outbox));
    let mut uploader = Uploader::new(channel, &tokens[0], SyncConfig::default())?;
    let policy = Policy {
        capture_titles: true,
        capture_urls: true,
    };
    let started = Instant::now();
    let batches = uploader.drain(outbox.clone(), &policy).await?.len();
    let uploaded = started.elapsed();
    say(&format!(
        "outbox: {} spans committed one by one (durable) in {:.2} s = {:.0} spans/s; \
         uploaded in {batches} batches in {:.2} s = {:.0} spans/s",
        args.spans,
        committed.as_secs_f64(),
        args.spans as f64 / committed.as_secs_f64(),
        uploaded.as_secs_f64(),
        args.spans as f64 / uploaded.as_secs_f64()
    ));

    // 2. The headless agent on a desktop.
    let display = Display::start();
    let (conn, screen) = x11rb::connect(Some(&display.name))?;
    let window = open_window(&conn, screen, "EditorApp", "main.rs");
    display.xdotool(&["windowactivate", "--sync", &window.to_string()]);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &tokens[1])?;
    let mut agent = std::process::Command::new(std::env::current_exe()?)
        .arg("agent")
        .arg("--display")
        .arg(&display.name)
        .arg("--gateway")
        .arg(format!("http://{addr}"))
        .arg("--token-file")
        .arg(&token_file)
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .args(["--activitywatch-listen", "off"])
        .env("RUST_LOG", "warn")
        .spawn()?;
    let pid = agent.id();
    let ticks = clock_ticks()?;
    // Start-up (connecting, opening the outbox) is not the steady state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let first = sample(pid, ticks)?;
    let began = Instant::now();
    let mut max_rss = first.rss_kib;
    let mut n = 0u64;
    while began.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_secs(args.switch_every)).await;
        n += 1;
        switch_window(&conn, window, n);
        max_rss = max_rss.max(sample(pid, ticks)?.rss_kib);
    }
    let last = sample(pid, ticks)?;
    let wall = began.elapsed();
    agent.kill()?;
    agent.wait()?;
    let cpu = last.cpu.saturating_sub(first.cpu);
    let stored = store
        .load_fresh::<DeviceActivity>(&Token::new("bench")?, &Token::new("dev1")?)
        .await?
        .state;
    say(&format!(
        "headless agent over {:.0} s (poll 1 s, window change every {} s): CPU {:.3} s = {:.3}% of one app; \
         RSS {:.1} MiB at the end, {:.1} MiB at most; {} spans stored from it in {} batches",
        wall.as_secs_f64(),
        args.switch_every,
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 100.0 / wall.as_secs_f64(),
        last.rss_kib as f64 / 1024.0,
        max_rss as f64 / 1024.0,
        stored.spans,
        stored.last_seq
    ));

    // 3. The desktop app on the same desktop.
    if let Some(app) = &args.desktop_app {
        std::fs::write(&token_file, &tokens[2])?;
        let mut desktop = std::process::Command::new(app)
            .arg("--gateway")
            .arg(format!("http://{addr}"))
            .arg("--token-file")
            .arg(&token_file)
            .arg("--data-dir")
            .arg(dir.path().join("desktop"))
            .args(["--activitywatch-listen", "off"])
            .env("DISPLAY", &display.name)
            .env("RUST_LOG", "warn")
            .spawn()
            .with_context(|| format!("cannot start {}", app.display()))?;
        let pid = desktop.id();
        // Start-up: the window, WebKit's processes, the first page.
        tokio::time::sleep(Duration::from_secs(10)).await;
        display.xdotool(&["windowactivate", "--sync", &window.to_string()]);
        let first = sample_tree(pid, ticks)?;
        let began = Instant::now();
        let mut most = first;
        while began.elapsed() < Duration::from_secs(args.desktop_seconds) {
            tokio::time::sleep(Duration::from_secs(args.switch_every)).await;
            n += 1;
            switch_window(&conn, window, n);
            let now = sample_tree(pid, ticks)?;
            most.rss_kib = most.rss_kib.max(now.rss_kib);
            most.pss_kib = most.pss_kib.max(now.pss_kib);
        }
        let last = sample_tree(pid, ticks)?;
        let wall = began.elapsed();
        desktop.kill()?;
        desktop.wait()?;
        let cpu = last.cpu.saturating_sub(first.cpu);
        say(&format!(
            "desktop app over {:.0} s ({} processes: the app and WebKit's): RSS {:.1} MiB for the app process, \
             {:.1} MiB with WebKit's (at most {:.1}), PSS {:.1} MiB (at most {:.1}); CPU {:.3} s = {:.3}% of one app",
            wall.as_secs_f64(),
            last.processes,
            last.main_rss_kib as f64 / 1024.0,
            last.rss_kib as f64 / 1024.0,
            most.rss_kib as f64 / 1024.0,
            last.pss_kib as f64 / 1024.0,
            most.pss_kib as f64 / 1024.0,
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 100.0 / wall.as_secs_f64(),
        ));
    }

    // The gateway's pooled connections end before PostgreSQL stops (each
    // would report the server's shutdown).
    app.close();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
