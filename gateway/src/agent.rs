//! `trackhrs.agent.v1.AgentSession`: what a device token stands for and the
//! privacy policy the agent must obey, with the org's classification rules.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trackhrs_domain::Token;
use trackhrs_domain::activity::DeviceActivity;
use trackhrs_domain::categories::CategoryRule;
use trackhrs_domain::timeline::DeviceTimeline;
use trackhrs_projections::{activity, classifier, directory};
use trackhrs_schemas::agent::v1 as pb;
use trackhrs_schemas::agent::v1::agent_session_server::AgentSession;

use crate::caller;
use crate::core::Core;
use crate::dashboard::rule_to_wire;
use crate::status;

/// The agent session service.
pub struct AgentSessionService {
    core: Arc<Core>,
}

impl AgentSessionService {
    /// A service over the shared state.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

impl AgentSessionService {
    /// The org's rules version and the rules in force (the default rules
    /// while it has none).
    async fn rules(&self, org: &str) -> Result<(u32, Vec<CategoryRule>), Status> {
        let (client, schema, _) = self.core.read_model(activity::NAME, 0).await?;
        let pg: &tokio_postgres::Client = &client;
        let (version, rules) = activity::org_rules(pg, &schema, org)
            .await
            .map_err(|e| status::query(&e))?;
        Ok(if rules.is_empty() {
            (version, classifier::Rules::default_rules())
        } else {
            (version, rules)
        })
    }
}

#[tonic::async_trait]
impl AgentSession for AgentSessionService {
    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let device = caller::device(&self.core.auth, &request).await?;
        let (timeline, raw) = {
            let org = Token::new(&device.org_id)
                .map_err(|_| Status::unauthenticated("invalid credentials"))?;
            let id = Token::new(&device.device_id)
                .map_err(|_| Status::unauthenticated("invalid credentials"))?;
            let store = self.core.commands.store();
            let spans = store.load::<DeviceActivity>(&org, &id);
            let raw = store.load::<DeviceTimeline>(&org, &id);
            let (spans, raw) = tokio::try_join!(spans, raw).map_err(|e| status::store(&e))?;
            (spans.state, raw.state)
        };
        let (client, schema, _) = self.core.directory(0).await?;
        let org = directory::organization(&client, &schema, &device.org_id)
            .await
            .map_err(|e| status::query(&e))?
            .ok_or_else(|| Status::unavailable("the organization is not in the directory yet"))?;
        drop(client);
        // The rules come from the activity read model; while it is not there
        // (being built for the first time, or not run beside this gateway)
        // the policy is answered without them and the agent keeps its own.
        let (rules_version, rules_in_force) = match self.rules(&device.org_id).await {
            Ok(rules) => rules,
            Err(e) => {
                tracing::debug!(error = %e, "GetPolicy answered without the classification rules");
                (0, Vec::new())
            }
        };
        Ok(Response::new(pb::Policy {
            org_id: device.org_id,
            device_id: device.device_id,
            person_id: device.person_id,
            timezone: org.timezone,
            capture_titles: org.capture_titles,
            capture_urls: org.capture_urls,
            last_batch_seq: timeline.last_seq,
            last_span_end_unix_ms: timeline.last_end_ms.unwrap_or_default(),
            rules_version,
            category_rules: rules_in_force.iter().map(rule_to_wire).collect(),
            last_timeline_seq: raw.last_seq,
        }))
    }
}
