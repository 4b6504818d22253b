//! The budget policy: when the work read model commits project time of an
//! organization, each of its projects with a budget in hours is told the
//! time booked on it (`RecordBookedTime`), and the `Project` aggregate
//! records the 80 % and 100 % marks crossed since (once per crossing; no
//! commit when nothing crossed).
//!
//! It follows the work projection's invalidations (core NATS, published
//! after each committed batch) on every replica: two replicas telling a
//! project the same time record a mark once, as the aggregate decides on
//! its own state. An invalidation missed in a disconnect is made up by the
//! org's next one.

use std::collections::BTreeSet;

use futures::StreamExt as _;
use trackhrs_projections::invalidation;

use crate::work::Work;

/// Follows the work projection's invalidations until the connection
/// closes, checking the budgets of each org they name (several
/// invalidations of one org waiting are checked once).
pub(crate) fn follow(client: async_nats::Client, work: Work) {
    tokio::spawn(async move {
        let subject = invalidation::org_wildcard(trackhrs_projections::work::NAME);
        let mut messages = match client.subscribe(subject.clone()).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::error!(subject, error = %e, "cannot follow the work projection");
                return;
            }
        };
        while let Some(first) = messages.next().await {
            let mut orgs = BTreeSet::new();
            orgs.insert(first.subject.to_string());
            while let Some(Some(more)) = futures::FutureExt::now_or_never(messages.next()) {
                orgs.insert(more.subject.to_string());
            }
            for subject in orgs {
                let Some(org) = subject.rsplit('.').next() else {
                    continue;
                };
                if let Err(e) = work.record_budgets(org).await {
                    tracing::warn!(error = %e, "budget check failed; the next invalidation retries");
                }
            }
        }
    });
}
