//! The event store on NATS JetStream.
//!
//! Architecture invariant: this crate is the only one that speaks JetStream's
//! event-log protocol. Domain events go in as domain types and come out as
//! domain types (or as generic [`RecordedEvent`]s for tools); the protobuf
//! envelope and the sealing of personal data never leak out.
//!
//! - [`provision`] creates or updates the streams and buckets, and refuses a
//!   server older than [`MIN_SERVER_VERSION`] or an event stream that could
//!   lose events; [`verify`] checks the same without changing anything.
//! - [`EventStore`] appends commits with optimistic concurrency and idempotent
//!   command ids, and loads aggregates through an in-process state cache,
//!   snapshots and batched direct gets.
//! - [`reader`] reads the whole log in stream order, with each commit's
//!   global stream sequence (a projection's checkpoint).
//! - [`keys`] holds per-person data keys outside the log; erasing a person's
//!   key erases their personal data everywhere (crypto-shredding).

pub mod codec;
pub mod config;
mod direct;
pub mod error;
pub mod group;
pub mod keys;
pub mod lease;
pub mod provision;
pub mod reader;
pub mod store;

pub use codec::{DecodedCommit, RecordedEvent, TypedCommit, decode_typed};
pub use config::{EVENT_SUBJECT_PREFIX, StoreConfig};
pub use error::StoreError;
pub use keys::KeyStore;
pub use provision::{MIN_SERVER_VERSION, check_lossless, check_server_version, provision, verify};
pub use store::{Appended, CommitMeta, EventStore, Loaded};
