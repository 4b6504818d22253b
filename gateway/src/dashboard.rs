//! `trackhrs.activity.v1.Activity`: dashboards, a device's raw timelines and
//! the org's classification rules, through the activity use cases.

use chrono::NaiveDate;
use tonic::{Request, Response, Status};
use trackhrs_app::activity::{Breakdown, Dashboard, DashboardSummary, NewRules, TopTitle};
use trackhrs_app::{Activity, Authenticator};
use trackhrs_domain::Token;
use trackhrs_domain::categories::CategoryRule;
use trackhrs_schemas::activity::v1 as pb;
use trackhrs_schemas::activity::v1::activity_server::Activity as ActivityRpc;

use crate::status::status;
use crate::{caller, validate};

/// The activity service.
pub struct ActivityService {
    auth: Authenticator,
    activity: Activity,
}

impl ActivityService {
    /// A service over the activity use cases.
    pub fn new(auth: Authenticator, activity: Activity) -> Self {
        Self { auth, activity }
    }
}

fn date(field: &str, value: &str) -> Result<NaiveDate, Status> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| Status::invalid_argument(format!("{field}: must be a date as YYYY-MM-DD")))
}

/// Rules as a list or as an ActivityWatch export, not both.
fn new_rules(rules: Vec<pb::CategoryRule>, activitywatch_json: String) -> Result<NewRules, Status> {
    match (activitywatch_json.is_empty(), rules.is_empty()) {
        (true, _) => Ok(NewRules::List(
            rules.into_iter().map(rule_from_wire).collect(),
        )),
        (false, true) => Ok(NewRules::ActivityWatch(activitywatch_json)),
        (false, false) => Err(Status::invalid_argument(
            "rules: give either rules or activitywatch_json, not both",
        )),
    }
}

fn rule_from_wire(rule: pb::CategoryRule) -> CategoryRule {
    CategoryRule {
        name: rule.name,
        regex: rule.regex,
        ignore_case: rule.ignore_case,
        score: rule.score,
    }
}

pub(crate) fn rule_to_wire(rule: &CategoryRule) -> pb::CategoryRule {
    pb::CategoryRule {
        name: rule.name.clone(),
        regex: rule.regex.clone(),
        ignore_case: rule.ignore_case,
        score: rule.score,
    }
}

fn breakdowns(list: &[Breakdown]) -> Vec<pb::Breakdown> {
    list.iter()
        .map(|b| pb::Breakdown {
            name: b.name.clone(),
            active_ms: b.active_ms,
            idle_ms: b.idle_ms,
        })
        .collect()
}

/// A dashboard request's range and members, checked.
fn range_and_people(
    r: &pb::GetDashboardRequest,
) -> Result<((NaiveDate, NaiveDate), Vec<Token>), Status> {
    let range = (date("from", &r.from)?, date("to", &r.to)?);
    let people = r
        .person_ids
        .iter()
        .map(|p| validate::id("person_ids", p))
        .collect::<Result<_, _>>()?;
    Ok((range, people))
}

fn top_titles(list: &[TopTitle]) -> Vec<pb::TopTitle> {
    list.iter()
        .map(|t| pb::TopTitle {
            person_id: t.person_id.clone(),
            app: t.app.clone(),
            title: t.title.clone(),
            ms: t.ms,
        })
        .collect()
}

fn summary_to_wire(s: &DashboardSummary) -> pb::DashboardSummary {
    pb::DashboardSummary {
        org_id: s.org_id.clone(),
        timezone: s.timezone.clone(),
        rules_version: s.rules_version,
        classifier_version: s.classifier_version,
        position: s.position,
        members: s
            .members
            .iter()
            .map(|m| pb::MemberTotal {
                person_id: m.person_id.clone(),
                active_ms: m.active_ms,
                idle_ms: m.idle_ms,
                productivity: m.productivity,
                days: m.days,
                removed_ms: m.removed_ms,
            })
            .collect(),
        days: s
            .days
            .iter()
            .map(|d| pb::DayTotal {
                day: d.day.to_string(),
                active_ms: d.active_ms,
                idle_ms: d.idle_ms,
            })
            .collect(),
        categories: breakdowns(&s.categories),
        apps: breakdowns(&s.apps),
        productivity: s.productivity,
    }
}

fn dashboard_to_wire(d: &Dashboard) -> pb::Dashboard {
    pb::Dashboard {
        org_id: d.org_id.clone(),
        timezone: d.timezone.clone(),
        rules_version: d.rules_version,
        classifier_version: d.classifier_version,
        position: d.position,
        days: d
            .days
            .iter()
            .map(|m| pb::MemberDay {
                person_id: m.person_id.clone(),
                day: m.day.to_string(),
                active_ms: m.active_ms,
                idle_ms: m.idle_ms,
                productivity: m.productivity,
                categories: breakdowns(&m.categories),
                apps: breakdowns(&m.apps),
                removed_ms: m.removed_ms,
            })
            .collect(),
        top_titles: top_titles(&d.top_titles),
    }
}

#[tonic::async_trait]
impl ActivityRpc for ActivityService {
    async fn get_dashboard(
        &self,
        request: Request<pb::GetDashboardRequest>,
    ) -> Result<Response<pb::Dashboard>, Status> {
        let caller = caller::person(&self.auth, &request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let (range, people) = range_and_people(&r)?;
        let dashboard = self
            .activity
            .dashboard(&caller, &r.org_id, range, people, r.min_position)
            .await
            .map_err(status)?;
        Ok(Response::new(dashboard_to_wire(&dashboard)))
    }

    async fn get_dashboard_summary(
        &self,
        request: Request<pb::GetDashboardRequest>,
    ) -> Result<Response<pb::DashboardSummary>, Status> {
        let caller = caller::person(&self.auth, &request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let (range, people) = range_and_people(&r)?;
        let summary = self
            .activity
            .summary(&caller, &r.org_id, range, people, r.min_position)
            .await
            .map_err(status)?;
        Ok(Response::new(summary_to_wire(&summary)))
    }

    async fn get_device_timeline(
        &self,
        request: Request<pb::GetDeviceTimelineRequest>,
    ) -> Result<Response<pb::DeviceTimeline>, Status> {
        let caller = caller::person(&self.auth, &request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let device = validate::id("device_id", &r.device_id)?;
        let view = self
            .activity
            .device_timeline(
                &caller,
                &r.org_id,
                device,
                (r.from_unix_ms, r.to_unix_ms),
                r.min_position,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeviceTimeline {
            device_id: view.device_id,
            position: view.position,
            truncated: view.truncated,
            events: view
                .events
                .into_iter()
                .map(|e| pb::RawEvent {
                    bucket_id: e.row.bucket,
                    bucket_type: e.row.bucket_type,
                    client: e.row.client,
                    event_key: e.row.key,
                    version: e.row.version as u64,
                    start_unix_us: e.row.start_us,
                    end_unix_us: e.row.end_us,
                    data_json: e.row.data.map(|d| d.to_string()).unwrap_or_default(),
                    category: e.category,
                })
                .collect(),
        }))
    }

    async fn set_category_rules(
        &self,
        request: Request<pb::SetCategoryRulesRequest>,
    ) -> Result<Response<pb::SetCategoryRulesResponse>, Status> {
        let caller = caller::person(&self.auth, &request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let command_id = validate::command_id(&r.command_id)?;
        let rules = new_rules(r.rules, r.activitywatch_json)?;
        let (outcome, categories) = self
            .activity
            .set_rules(&caller, &r.org_id, &command_id, rules)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SetCategoryRulesResponse {
            version: outcome.version,
            position: outcome.position,
            duplicate: outcome.duplicate,
            categories,
        }))
    }

    async fn preview_category_rules(
        &self,
        request: Request<pb::PreviewCategoryRulesRequest>,
    ) -> Result<Response<pb::RulesPreview>, Status> {
        let caller = caller::person(&self.auth, &request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let rules = new_rules(r.rules, r.activitywatch_json)?;
        let preview = self
            .activity
            .preview_rules(&caller, &r.org_id, rules, chrono::Utc::now())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RulesPreview {
            from: preview.from.to_string(),
            to: preview.to.to_string(),
            rules_version: preview.rules_version,
            categories: preview
                .categories
                .into_iter()
                .map(|(name, (current_ms, proposed_ms))| pb::CategoryShift {
                    name,
                    current_ms,
                    proposed_ms,
                })
                .collect(),
            moved_ms: preview.moved_ms,
            total_ms: preview.total_ms,
        }))
    }

    async fn get_category_rules(
        &self,
        request: Request<pb::GetCategoryRulesRequest>,
    ) -> Result<Response<pb::CategoryRules>, Status> {
        let caller = caller::person(&self.auth, &request).await?;
        let r = request.into_inner();
        let rules = self
            .activity
            .rules(&caller, &r.org_id, r.min_position)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CategoryRules {
            rules_version: rules.version,
            rules: rules.rules.iter().map(rule_to_wire).collect(),
            activitywatch_json: rules.activitywatch_json,
        }))
    }
}
