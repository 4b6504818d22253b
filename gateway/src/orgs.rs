//! `trackhrs.org.v1.Organizations`: administration of the caller's own
//! organization, through the administration use cases.

use tonic::{Request, Response, Status};
use trackhrs_app::administration::{Administration, Invitation, NewMember};
use trackhrs_app::{Authenticator, Caller, Outcome};
use trackhrs_domain::organization::{OrgCommand, Role, Settings};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::org::v1::organizations_server::Organizations;

use crate::status::status;
use crate::{caller, validate};

/// The organizations service.
pub struct OrganizationsService {
    auth: Authenticator,
    admin: Administration,
}

impl OrganizationsService {
    /// A service over the administration use cases.
    pub fn new(auth: Authenticator, admin: Administration) -> Self {
        Self { auth, admin }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        caller::person(&self.auth, request).await
    }
}

/// The wire result of a command.
pub(crate) fn command_result(outcome: Outcome) -> pb::CommandResult {
    pb::CommandResult {
        version: outcome.version,
        position: outcome.position,
        duplicate: outcome.duplicate,
    }
}

fn reply(
    outcome: Result<Outcome, trackhrs_app::AppError>,
) -> Result<Response<pb::CommandResult>, Status> {
    Ok(Response::new(command_result(outcome.map_err(status)?)))
}

fn invitation(invitation: Invitation) -> pb::InviteMemberResponse {
    pb::InviteMemberResponse {
        result: Some(command_result(invitation.outcome)),
        person_id: invitation.person.to_string(),
        invitation_token: invitation.token,
        invitation_expires_at: invitation.expires_at,
    }
}

fn wire_role(name: &str) -> i32 {
    Role::from_name(name).map_or(pb::Role::Unspecified, validate::role_to_wire) as i32
}

#[tonic::async_trait]
impl Organizations for OrganizationsService {
    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let found = self
            .admin
            .organization(&caller, &r.org_id, r.min_position)
            .await
            .map_err(status)?;
        let row = found.value;
        let settings = Settings {
            timezone: row.timezone,
            work_week: row
                .work_week
                .iter()
                .filter_map(|d| serde_json::from_value(serde_json::Value::String(d.clone())).ok())
                .collect(),
            capture_titles: row.capture_titles,
            capture_urls: row.capture_urls,
        };
        Ok(Response::new(pb::Organization {
            org_id: row.org_id,
            name: row.name,
            seats: row.seats,
            active_members: row.active_members,
            settings: Some(validate::settings_to_wire(&settings)),
            position: found.position,
        }))
    }

    async fn change_settings(
        &self,
        request: Request<pb::ChangeSettingsRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let command_id = validate::command_id(&r.command_id)?;
        let settings = validate::settings(r.settings)?;
        reply(
            self.admin
                .execute(&caller, &r.org_id, &command_id, |actor| {
                    OrgCommand::ChangeSettings { actor, settings }
                })
                .await,
        )
    }

    async fn change_seats(
        &self,
        request: Request<pb::ChangeSeatsRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let command_id = validate::command_id(&r.command_id)?;
        let seats = validate::seats(r.seats)?;
        reply(
            self.admin
                .execute(&caller, &r.org_id, &command_id, |actor| {
                    OrgCommand::ChangeSeats { actor, seats }
                })
                .await,
        )
    }

    async fn invite_member(
        &self,
        request: Request<pb::InviteMemberRequest>,
    ) -> Result<Response<pb::InviteMemberResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let command_id = validate::command_id(&r.command_id)?;
        let new = NewMember {
            email: validate::email("email", &r.email)?,
            name: validate::name("name", &r.name)?,
            role: validate::role(r.role)?,
        };
        let invited = self
            .admin
            .invite(&caller, &r.org_id, &command_id, new)
            .await
            .map_err(status)?;
        Ok(Response::new(invitation(invited)))
    }

    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<Response<pb::InviteMemberResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let person = validate::id("person_id", &r.person_id)?;
        let sent = self
            .admin
            .resend_invitation(&caller, &r.org_id, person)
            .await
            .map_err(status)?;
        Ok(Response::new(invitation(sent)))
    }

    async fn change_role(
        &self,
        request: Request<pb::ChangeRoleRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let command_id = validate::command_id(&r.command_id)?;
        let member = validate::id("person_id", &r.person_id)?;
        let role = validate::role(r.role)?;
        reply(
            self.admin
                .execute(&caller, &r.org_id, &command_id, |actor| {
                    OrgCommand::ChangeRole {
                        actor,
                        member,
                        role,
                    }
                })
                .await,
        )
    }

    async fn deactivate_member(
        &self,
        request: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let member = validate::id("person_id", &r.person_id)?;
        let command_id = validate::command_id(&r.command_id)?;
        reply(
            self.admin
                .deactivate(&caller, &r.org_id, &command_id, member)
                .await,
        )
    }

    async fn reactivate_member(
        &self,
        request: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let command_id = validate::command_id(&r.command_id)?;
        let member = validate::id("person_id", &r.person_id)?;
        reply(
            self.admin
                .execute(&caller, &r.org_id, &command_id, |actor| {
                    OrgCommand::Reactivate { actor, member }
                })
                .await,
        )
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let page = validate::page(&r.after, r.limit)?;
        let found = self
            .admin
            .members(&caller, &r.org_id, &page, r.min_position)
            .await
            .map_err(status)?;
        let members = found
            .value
            .rows
            .into_iter()
            .map(|m| pb::Member {
                role: wire_role(&m.row.role),
                person_id: m.row.person_id,
                email: m.row.email.unwrap_or_default(),
                name: m.row.name.unwrap_or_default(),
                active: m.row.active,
                invitation_pending: m.invitation_pending,
            })
            .collect();
        Ok(Response::new(pb::ListMembersResponse {
            members,
            position: found.position,
            next_after: found.value.next_after.unwrap_or_default(),
        }))
    }

    async fn list_history(
        &self,
        request: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let filter = validate::history_filter(&r)?;
        let found = self
            .admin
            .history(&caller, &r.org_id, &filter, r.min_position)
            .await
            .map_err(status)?;
        let entries = found
            .value
            .entries
            .into_iter()
            .map(|e| pb::HistoryEntry {
                position: e.position,
                recorded_at_micros: e.recorded_at_micros,
                actor: e.actor,
                event_type: e.event_type,
                person_id: e.person_id.unwrap_or_default(),
                device_id: e.device_id.unwrap_or_default(),
                detail: e.detail,
            })
            .collect();
        Ok(Response::new(pb::ListHistoryResponse {
            entries,
            next_before: found.value.next_before.unwrap_or(0),
            position: found.position,
        }))
    }

    async fn enroll_device(
        &self,
        request: Request<pb::EnrollDeviceRequest>,
    ) -> Result<Response<pb::EnrollDeviceResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let command_id = validate::command_id(&r.command_id)?;
        let name = validate::name("name", &r.name)?;
        let enrolled = self
            .admin
            .enroll_device(&caller, &r.org_id, &command_id, name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::EnrollDeviceResponse {
            result: Some(command_result(enrolled.outcome)),
            device_id: enrolled.device.to_string(),
            device_token: enrolled.token,
        }))
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let page = validate::page(&r.after, r.limit)?;
        let person = if r.person_id.is_empty() {
            None
        } else {
            Some(validate::id("person_id", &r.person_id)?)
        };
        let found = self
            .admin
            .devices(
                &caller,
                &r.org_id,
                person.as_ref().map(|p| p.as_str()),
                &page,
                r.min_position,
            )
            .await
            .map_err(status)?;
        let devices = found
            .value
            .rows
            .into_iter()
            .map(|d| pb::Device {
                device_id: d.device_id,
                person_id: d.person_id,
                name: d.name.unwrap_or_default(),
                revoked: d.revoked,
            })
            .collect();
        Ok(Response::new(pb::ListDevicesResponse {
            devices,
            position: found.position,
            next_after: found.value.next_after.unwrap_or_default(),
        }))
    }

    async fn revoke_device(
        &self,
        request: Request<pb::RevokeDeviceRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id).map_err(status)?;
        let device = validate::id("device_id", &r.device_id)?;
        let command_id = validate::command_id(&r.command_id)?;
        reply(
            self.admin
                .revoke_device(&caller, &r.org_id, &command_id, device)
                .await,
        )
    }
}
