//! The janitor: every replica deletes, every so often, the credentials
//! nothing needs any more ([`trackhrs_credentials::Auth::sweep`]). The
//! deletes are idempotent, so replicas need no lease between them.

use std::sync::Arc;
use std::time::Duration;

use trackhrs_credentials::Auth;

/// Sweeps every `every` (the first one `every` after start) until the
/// process ends.
pub(crate) fn run(credentials: Arc<Auth>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match credentials.sweep().await {
                Ok(swept) => tracing::debug!(
                    throttle = swept.throttle,
                    refresh_tokens = swept.refresh_tokens,
                    "credentials swept"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "the credential sweep failed; the next one retries")
                }
            }
        }
    });
}
