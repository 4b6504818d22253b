//! `trackhrs.ops.v1.Operations`: read-model versions, dead letters and their
//! replay, through the operations use cases.

use tonic::{Request, Response, Status};
use trackhrs_app::{Authenticator, Operations};
use trackhrs_schemas::ops::v1 as pb;
use trackhrs_schemas::ops::v1::operations_server::Operations as OperationsRpc;

use crate::caller;
use crate::status::status;

/// The operations service.
pub struct OperationsService {
    auth: Authenticator,
    operations: Operations,
}

impl OperationsService {
    /// A service over the operations use cases.
    pub fn new(auth: Authenticator, operations: Operations) -> Self {
        Self { auth, operations }
    }
}

/// A read model's name as given: empty means none.
fn projection(name: &str) -> Result<Option<&str>, Status> {
    if name.is_empty() {
        return Ok(None);
    }
    let valid = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(Some(name))
    } else {
        Err(Status::invalid_argument(
            "projection: must be a read model's name (a-z, 0-9, _)",
        ))
    }
}

#[tonic::async_trait]
impl OperationsRpc for OperationsService {
    async fn list_projections(
        &self,
        request: Request<pb::ListProjectionsRequest>,
    ) -> Result<Response<pb::ListProjectionsResponse>, Status> {
        let caller = caller::person(&self.auth, &request).await?;
        let found = self.operations.projections(&caller).await.map_err(status)?;
        let stream_last_sequence = found
            .iter()
            .map(|v| v.stream_last_sequence)
            .max()
            .unwrap_or(0);
        let versions = found
            .into_iter()
            .map(|v| pb::ProjectionVersion {
                state: v.info.state.as_str().to_owned(),
                name: v.info.name,
                version: v.info.version,
                position: v.info.position,
                lag: v.lag,
                pending_messages: v
                    .pending_messages
                    .map_or(-1, |p| i64::try_from(p).unwrap_or(i64::MAX)),
                events_applied: v.info.events_applied,
                commits_applied: v.info.commits_applied,
                dead_letters: v.info.dead_letters,
                updated_at_micros: v.info.updated_at_micros,
            })
            .collect();
        Ok(Response::new(pb::ListProjectionsResponse {
            versions,
            stream_last_sequence,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let caller = caller::person(&self.auth, &request).await?;
        let name = projection(&request.get_ref().projection)?;
        let letters = self
            .operations
            .dead_letters(&caller, name)
            .await
            .map_err(status)?
            .into_iter()
            .map(|l| pb::DeadLetter {
                dlq_sequence: l.dlq_sequence,
                projection: l.projection,
                version: l.version,
                subject: l.subject,
                stream_sequence: l.stream_sequence,
                reason: l.reason,
            })
            .collect();
        Ok(Response::new(pb::ListDeadLettersResponse { letters }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        let caller = caller::person(&self.auth, &request).await?;
        let name = projection(&request.get_ref().projection)?
            .ok_or_else(|| Status::invalid_argument("projection: required"))?;
        let report = self
            .operations
            .replay(&caller, name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            replayed: u32::try_from(report.replayed).unwrap_or(u32::MAX),
            already_applied: u32::try_from(report.already_applied).unwrap_or(u32::MAX),
            still_failing: report
                .still_failing
                .into_iter()
                .map(|(dlq_sequence, reason)| pb::StillFailing {
                    dlq_sequence,
                    reason,
                })
                .collect(),
        }))
    }

    async fn list_org_usage(
        &self,
        request: Request<pb::ListOrgUsageRequest>,
    ) -> Result<Response<pb::ListOrgUsageResponse>, Status> {
        let caller = caller::person(&self.auth, &request).await?;
        let r = request.get_ref();
        let limit = match r.limit {
            0 => 100,
            n if n <= 1000 => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit: {n} is more than 1000"
                )));
            }
        };
        let found = self
            .operations
            .usage(&caller, limit, r.min_position)
            .await
            .map_err(status)?;
        let orgs = found
            .value
            .into_iter()
            .map(|o| pb::OrgUsage {
                org_id: o.org_id,
                messages: o.messages,
                bytes: o.bytes,
                kinds: o
                    .kinds
                    .into_iter()
                    .map(|k| pb::KindUsage {
                        aggregate: k.aggregate,
                        messages: k.messages,
                        bytes: k.bytes,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListOrgUsageResponse {
            orgs,
            position: found.position,
        }))
    }
}
