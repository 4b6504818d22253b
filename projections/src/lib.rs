//! The projection runtime: versioned PostgreSQL read models fed from the
//! JetStream event log.
//!
//! Architecture invariant: this crate reads the log through `trackhrs-nats`
//! and writes PostgreSQL; nothing in it decides a command.
//!
//! - [`Projection`]: a name, a version, the subjects it reads, its tables
//!   ([`Projection::migrate`]) and a batch handler ([`Projection::apply`]).
//! - [`catalog`]: the runtime's own schema `trackhrs_catalog` (one row per
//!   projection version: state, checkpoint, counters), versioned schemas
//!   `proj_<name>_v<version>`, [`promote`], [`drop_version`], [`status`],
//!   [`live_schema`] and [`wait_for_position`] (read-your-writes).
//! - [`Supervisor`]: runs a read model in versions: builds the next version
//!   beside the live one when the code changed (or on request: a rebuild),
//!   switches when it has caught up, drops the old one.
//! - [`Runner`]: a durable pull consumer per projection version; batches of up
//!   to N commits or T milliseconds, applied together with the checkpoint in
//!   one PostgreSQL transaction, acknowledged only after it committed.
//! - [`dlq`]: the dead-letter stream `TRACKHRS_DLQ` for messages that cannot
//!   be decoded or applied, with listing and replay.
//! - [`invalidation`]: the core NATS subjects a live projection publishes on
//!   after each commit, for the gateway's query cache.

pub mod activity;
pub mod catalog;
pub use trackhrs_domain::classifier;
pub mod directory;
pub mod dlq;
pub mod erasure;
pub mod error;
pub mod history;
pub mod invalidation;
pub mod pay;
pub mod postgres;
pub mod projection;
pub mod runner;
pub mod supervisor;
pub mod timeline;
pub mod usage;
mod withdrawn;
pub mod work;

pub use catalog::{
    Promoted, VersionInfo, VersionState, VersionStatus, Waited, drop_version, live_schema, migrate,
    promote, register, status, wait_for_position,
};
pub use dlq::{DeadLetter, ReplayReport, list_dead_letters, replay_dead_letters};
pub use error::{ApplyError, ProjectionError};
pub use projection::{Committed, Projection, consumer_name, schema_name, validate_name};
pub use runner::{RunOutcome, Runner, RunnerConfig};
pub use supervisor::{DROP_GRACE, Progress, Rebuilt, Supervise, Supervisor};
