//! The TrackHrs domain: aggregates, their commands, events and invariants.
//!
//! Architecture invariant: this crate is pure. It does no I/O, reads no clock,
//! draws no random numbers and depends on no async runtime, database or NATS
//! client (the test `tests/tests/layering.rs` fails if it ever does). Time and ids
//! are passed in with the commands.

pub mod activity;
pub mod aggregate;
pub mod attribution;
pub mod categories;
pub mod classifier;
pub mod erasure;
pub mod ids;
pub mod leave;
pub mod money;
pub mod organization;
pub mod payroll;
pub mod permissions;
pub mod personal;
pub mod project;
pub mod testing;
pub mod timeline;
pub mod timesheet;
pub mod week;

pub use aggregate::{Aggregate, DomainEvent, UpcastError};
pub use ids::{IdError, PersonId, Token};
pub use personal::PersonalData;
