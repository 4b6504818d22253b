//! The request a use case runs for: its id and the flow it belongs to, set
//! by the adapter around the whole request and recorded in every commit it
//! causes (the commit's causation and correlation ids).

use std::future::Future;

use trackhrs_nats::CommitMeta;

tokio::task_local! {
    static CURRENT: RequestIds;
}

/// Ids of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIds {
    /// This request (a commit's causation id).
    pub request_id: String,
    /// The business flow it belongs to (a commit's correlation id): the
    /// caller's own when it sent one, else the request's.
    pub correlation_id: String,
}

/// Runs `future` as the request `ids`.
pub async fn scope<F: Future>(ids: RequestIds, future: F) -> F::Output {
    CURRENT.scope(ids, future).await
}

/// `meta` with the current request's ids as causation and correlation, when
/// there is a current request.
pub(crate) fn stamp(meta: CommitMeta) -> CommitMeta {
    match CURRENT.try_with(|ids| (ids.correlation_id.clone(), ids.request_id.clone())) {
        Ok((correlation, causation)) => meta.with_flow(correlation, causation),
        Err(_) => meta,
    }
}
