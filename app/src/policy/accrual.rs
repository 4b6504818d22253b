//! The accrual job: leave balances grow at period boundaries in each org's
//! time zone. Every replica runs the job; a lease in JetStream KV
//! (`trackhrs_nats::lease`) lets one of them work at a time, and each
//! accrual is recorded once per member, type and boundary by the member's
//! `Leave` aggregate (a second replica, or a retry after a crash, records
//! nothing more).
//!
//! A member accrues from the first day they have a pay rate (the day HR
//! says they started), at every boundary since the leave type was defined:
//! the first day of each month, or of each pay period. At the start of a
//! year the type's carry-over cap takes what is above it.

use std::time::Duration;

use trackhrs_nats::lease::Lease;

use crate::pay::Pay;

/// The lease's name in the lease bucket.
pub const LEASE: &str = "accrual";

/// Runs the job every `every` until the process ends: takes or renews the
/// lease, and while it holds it, accrues what is due in every org.
pub(crate) fn run(mut lease: Lease, pay: Pay, every: Duration) {
    tokio::spawn(async move {
        // The first run one period after start: the read models are being
        // registered meanwhile.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !lease.hold().await {
                continue;
            }
            match pay.accrue_due(&mut lease).await {
                Ok(0) => {}
                Ok(recorded) => tracing::info!(recorded, "leave accrued"),
                Err(e) => tracing::warn!(error = %e, "accrual failed; the next run retries"),
            }
        }
    });
}
