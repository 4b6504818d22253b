//! The TrackHrs desktop app: the agent of `trackhrs agent` (X11 capture,
//! offline outbox, uploads, the org's privacy policy) with a window that
//! shows the employee today's time by category, the current activity, the
//! policy in force and the upload state, and a switch to pause capture.
//!
//! Architecture invariant: the window only shows what the agent core says
//! and calls its pause and resume; it records nothing of its own. Reads of
//! the local store run on blocking threads, never on the window's thread.

mod view;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use clap::Parser;
use tauri::{AppHandle, Manager, RunEvent, State};
use trackhrs_agent::args::AgentArgs;
use trackhrs_agent::runner::Agent;

/// The TrackHrs desktop app. Takes the same settings as `trackhrs agent`.
#[derive(Parser)]
#[command(name = "trackhrs-desktop", version)]
struct Args {
    #[command(flatten)]
    agent: AgentArgs,
}

/// The running agent, shared by the window's commands; taken out to stop it
/// when the app exits (after any command using it has finished).
struct App {
    agent: Mutex<Option<Agent>>,
}

impl App {
    fn agent(&self) -> MutexGuard<'_, Option<Agent>> {
        self.agent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

const STOPPING: &str = "the agent is stopping";

/// Local midnight and now, Unix ms.
fn today_bounds() -> (i64, i64) {
    let now = chrono::Local::now();
    let midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(chrono::Local).earliest())
        .map_or(now.timestamp_millis(), |t| t.timestamp_millis());
    (midnight, now.timestamp_millis())
}

/// A Unix ms time as the local time of day.
fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| {
        t.with_timezone(&chrono::Local).format("%H:%M").to_string()
    })
}

/// Everything the window shows. The local store is read on a blocking
/// thread.
#[tauri::command]
async fn view(handle: AppHandle) -> Result<view::View, String> {
    tauri::async_runtime::spawn_blocking(move || {
        let app = handle.state::<App>();
        let guard = app.agent();
        let agent = guard.as_ref().ok_or(STOPPING)?;
        let status = agent.status().borrow().clone();
        let (from, now) = today_bounds();
        let summary = agent.summary(from, now).map_err(|e| e.to_string())?;
        Ok(view::view(&status, &summary, now, clock))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Pauses (true) or resumes (false) capture.
#[tauri::command]
fn set_paused(paused: bool, app: State<'_, App>) -> Result<(), String> {
    let guard = app.agent();
    let agent = guard.as_ref().ok_or(STOPPING)?;
    if paused {
        agent.pause();
    } else {
        agent.resume();
    }
    tracing::info!(paused, "capture switched by the user");
    Ok(())
}

/// The user's data folder for the agent's files.
fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    base.map_or_else(|| PathBuf::from(".trackhrs-agent"), |b| b.join("trackhrs"))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // The agent runs on the runtime Tauri uses for its own async work.
    let (agent, data_dir) =
        tauri::async_runtime::block_on(async { args.agent.start(default_data_dir) })?;
    tracing::info!(gateway = %args.agent.gateway, data = %data_dir.display(), "agent running");
    let app = tauri::Builder::default()
        .manage(App {
            agent: Mutex::new(Some(agent)),
        })
        .invoke_handler(tauri::generate_handler![view, set_paused])
        .setup(|app| {
            // SIGTERM and Ctrl-C close the app as the window's close does,
            // so the open span is committed.
            let handle = app.handle().clone();
            tauri::async_runtime::spawn(async move {
                shutdown_signal().await;
                handle.exit(0);
            });
            Ok(())
        })
        .build(tauri::generate_context!())?;
    app.run(|handle, event| {
        if let RunEvent::Exit = event {
            // Waits for a command still using the agent, then stops it.
            let taken = handle.state::<App>().agent().take();
            if let Some(agent) = taken {
                tauri::async_runtime::block_on(agent.stop(Duration::from_secs(3)));
                tracing::info!("agent stopped");
            }
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
