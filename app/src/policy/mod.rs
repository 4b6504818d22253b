//! Policies: reactions to events that consume the log, each idempotent by
//! the event's position (run by the projection runtime, so the checkpoint
//! moves in the transaction that carries out the reaction), and reactions
//! to a read model's commits ([`budget`]), and scheduled jobs
//! ([`accrual`], [`janitor`]).

pub mod accrual;
pub mod budget;
pub mod janitor;
pub mod revocation;

pub use revocation::Revocation;
