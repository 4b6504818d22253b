//! The desktop agent's core, what every front end (headless `trackhrs
//! agent`, the Tauri app, the ActivityWatch-compatible API) shares:
//!
//! - [`args`]: the agent's command-line flags, shared by `trackhrs agent`
//!   and the desktop app;
//! - [`aw`]: ActivityWatch's buckets, events and REST API on loopback;
//! - [`heartbeat`]: observations merged into spans with ActivityWatch's
//!   heartbeat semantics (merge only identical data, only within the
//!   pulsetime after the last end);
//! - [`outbox`]: spans committed to a local SQLite file before anything is
//!   uploaded, grouped into batches with a stable id and a per-device
//!   sequence, removed only after the gateway acknowledged them; with them,
//!   retractions of time the employee deleted (once spans cover it);
//! - [`privacy`]: the org's policy, applied before anything is stored or
//!   sent;
//! - [`recorder`]: observations to committed spans, safe against clock jumps,
//!   with ActivityWatch's AFK semantics;
//! - [`runner`]: the running agent (capture thread, uploader, policy
//!   refresh, pause), shared by `trackhrs agent` and the desktop app;
//! - [`sync`]: uploading the outbox's batches to the gateway's gRPC ingest
//!   with exponential backoff and jitter;
//! - [`today`]: the employee's own view of their time by category, from the
//!   local store, classified with the org's rules.
//!
//! Architecture invariant: the agent talks to the platform only through the
//! gRPC API of `trackhrs-schemas`; it depends on no server-side crate (the
//! pure domain's classifier is shared, so the employee's view classifies as
//! the dashboards do).

pub mod args;
pub mod aw;
pub mod capture;
pub mod heartbeat;
pub mod outbox;
pub mod privacy;
pub mod private;
pub mod recorder;
pub mod runner;
pub mod sync;
pub mod today;

/// Locks `mutex`, also after a thread panicked while holding it: what the
/// agent keeps behind its locks stays consistent (SQLite commits or rolls
/// back; the rest are plain values).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
