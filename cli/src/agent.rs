//! `trackhrs agent`: the desktop agent without a window. Observes the X11
//! desktop, commits spans to a local outbox and uploads them to the gateway
//! with the device token from enrollment.

use std::path::PathBuf;
use std::time::Duration;

pub use trackhrs_agent::args::AgentArgs;
use trackhrs_agent::runner::UploadState;

/// Runs the agent until Ctrl-C or SIGTERM.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let (agent, data_dir) = args.start(|| PathBuf::from(".trackhrs-agent"))?;
    tracing::info!(gateway = %args.gateway, data = %data_dir.display(), "agent running");
    let mut status = agent.status();
    let report = async {
        let mut last = UploadState::Starting;
        while status.changed().await.is_ok() {
            let upload = status.borrow().upload.clone();
            if upload != last {
                match &upload {
                    UploadState::Refused { reason } => {
                        tracing::error!(%reason, "uploads stopped: the device token is refused")
                    }
                    UploadState::Retrying { error } => {
                        tracing::warn!(%error, "the gateway is unreachable; spans wait in the outbox")
                    }
                    UploadState::UpToDate { .. }
                        if matches!(last, UploadState::Retrying { .. }) =>
                    {
                        tracing::info!("the outbox is uploaded again")
                    }
                    _ => {}
                }
                last = upload;
            }
        }
    };
    tokio::select! {
        () = crate::shutdown_signal() => {}
        () = report => {}
    }
    tracing::info!("stopping: committing the open span");
    agent.stop(Duration::from_secs(3)).await;
    Ok(())
}
