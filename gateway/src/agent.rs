//! `trackhrs.agent.v1.AgentSession`: what a device token stands for and the
//! privacy policy the agent must obey, with the org's classification rules.

use tonic::{Request, Response, Status};
use trackhrs_app::{Authenticator, Ingest};
use trackhrs_schemas::agent::v1 as pb;
use trackhrs_schemas::agent::v1::agent_session_server::AgentSession;

use crate::dashboard::rule_to_wire;
use crate::status::status;

/// The agent session service.
pub struct AgentSessionService {
    auth: Authenticator,
    ingest: Ingest,
}

impl AgentSessionService {
    /// A service over the ingest use cases.
    pub fn new(auth: Authenticator, ingest: Ingest) -> Self {
        Self { auth, ingest }
    }
}

#[tonic::async_trait]
impl AgentSession for AgentSessionService {
    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let device = crate::caller::device(&self.auth, &request).await?;
        let policy = self.ingest.policy(device).await.map_err(status)?;
        Ok(Response::new(pb::Policy {
            org_id: policy.device.org_id,
            device_id: policy.device.device_id,
            person_id: policy.device.person_id,
            timezone: policy.timezone,
            capture_titles: policy.capture_titles,
            capture_urls: policy.capture_urls,
            last_batch_seq: policy.last_batch_seq,
            last_span_end_unix_ms: policy.last_span_end_ms.unwrap_or_default(),
            rules_version: policy.rules_version,
            category_rules: policy.rules.iter().map(rule_to_wire).collect(),
            last_timeline_seq: policy.last_timeline_seq,
            accepts_retractions: true,
        }))
    }
}
