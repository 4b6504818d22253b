//! `Activity.GetDeviceTimeline`: a device's raw ActivityWatch timelines from
//! the `timeline` read model, for the people who may see its member's time.

use tonic::Status;
use trackhrs_domain::organization::Role;
use trackhrs_projections::{directory, timeline};
use trackhrs_schemas::activity::v1 as pb;

use crate::caller::Caller;
use crate::core::Core;
use crate::{status, validate};

/// Longest range of one query.
pub const MAX_RANGE_MS: i64 = 31 * 24 * 3_600_000;
/// Most events in one answer.
pub const MAX_EVENTS: usize = 10_000;

/// The device's events overlapping the asked range.
pub async fn device_timeline(
    core: &Core,
    caller: &Caller,
    r: pb::GetDeviceTimelineRequest,
) -> Result<pb::DeviceTimeline, Status> {
    let org = caller.scope(&r.org_id)?;
    validate::id("device_id", &r.device_id)?;
    if r.to_unix_ms <= r.from_unix_ms {
        return Err(Status::invalid_argument(
            "to_unix_ms: must be after from_unix_ms",
        ));
    }
    if r.to_unix_ms.saturating_sub(r.from_unix_ms) > MAX_RANGE_MS {
        return Err(Status::invalid_argument(
            "to_unix_ms: a query covers at most 31 days",
        ));
    }
    let (dir, dir_schema, _) = core.directory(0).await?;
    let role = core
        .directory_role(&dir, &dir_schema, &org, &caller.person)
        .await?;
    let device = directory::devices(&dir, &dir_schema, org.as_str(), None)
        .await
        .map_err(|e| status::query(&e))?
        .into_iter()
        .find(|d| d.device_id == r.device_id)
        .ok_or_else(|| Status::not_found("no such device in this organization"))?;
    drop(dir);
    if role == Role::Employee && device.person_id != caller.person.as_str() {
        return Err(Status::permission_denied(
            "employees see only their own devices",
        ));
    }
    let (client, schema, position) = core.read_model(timeline::NAME, r.min_position).await?;
    let range = (
        r.from_unix_ms.saturating_mul(1000),
        r.to_unix_ms.saturating_mul(1000),
    );
    let pg: &tokio_postgres::Client = &client;
    let mut rows = timeline::device_events(
        pg,
        &schema,
        org.as_str(),
        &r.device_id,
        range,
        MAX_EVENTS as i64 + 1,
    )
    .await
    .map_err(|e| status::query(&e))?;
    let truncated = rows.len() > MAX_EVENTS;
    rows.truncate(MAX_EVENTS);
    Ok(pb::DeviceTimeline {
        device_id: r.device_id,
        position,
        truncated,
        events: rows
            .into_iter()
            .map(|row| pb::RawEvent {
                bucket_id: row.bucket,
                bucket_type: row.bucket_type,
                client: row.client,
                event_key: row.key,
                version: row.version as u64,
                start_unix_us: row.start_us,
                end_unix_us: row.end_us,
                data_json: row.data.map(|d| d.to_string()).unwrap_or_default(),
            })
            .collect(),
    })
}
