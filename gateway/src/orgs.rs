//! `trackhrs.org.v1.Organizations`: administration of the caller's own
//! organization. Commands go to the `Organization` aggregate, which checks
//! roles and invariants; queries read the directory read model.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trackhrs_domain::organization::{OrgCommand, Role};
use trackhrs_projections::directory;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::org::v1::organizations_server::Organizations;

use crate::auth::AuthError;
use crate::caller::{self, Caller};
use crate::core::{Core, command_result, derived_id};
use crate::{status, validate};

/// The organizations service.
pub struct OrganizationsService {
    core: Arc<Core>,
}

impl OrganizationsService {
    /// A service over the shared state.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        caller::person(&self.core.auth, request).await
    }

    /// Runs a command of the caller on their org; returns the wire result.
    async fn command(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        command: impl FnOnce(&Caller) -> Result<OrgCommand, Status>,
    ) -> Result<pb::CommandResult, Status> {
        let org = caller.scope(org_id)?;
        let command_id = validate::command_id(command_id)?;
        let command = command(caller)?;
        let executed = self
            .core
            .org_command(&org, &caller.actor(), &command_id, command)
            .await?;
        Ok(command_result(&executed))
    }
}

fn wire_role(name: &str) -> i32 {
    validate::role_from_name(name).map_or(pb::Role::Unspecified, validate::role_to_wire) as i32
}

#[tonic::async_trait]
impl Organizations for OrganizationsService {
    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let org = caller.scope(&r.org_id)?;
        let (client, schema, position) = self.core.directory(r.min_position).await?;
        self.core
            .directory_role(&client, &schema, &org, &caller.person)
            .await?;
        let row = directory::organization(&client, &schema, org.as_str())
            .await
            .map_err(|e| status::query(&e))?
            .ok_or_else(|| Status::unavailable("the organization is not in the directory yet"))?;
        let settings = trackhrs_domain::organization::Settings {
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
            position,
        }))
    }

    async fn change_settings(
        &self,
        request: Request<pb::ChangeSettingsRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let result = self
            .command(&caller, &r.org_id, &r.command_id, |c| {
                Ok(OrgCommand::ChangeSettings {
                    actor: c.person.clone(),
                    settings: validate::settings(r.settings)?,
                })
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn change_seats(
        &self,
        request: Request<pb::ChangeSeatsRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let result = self
            .command(&caller, &r.org_id, &r.command_id, |c| {
                Ok(OrgCommand::ChangeSeats {
                    actor: c.person.clone(),
                    seats: validate::seats(r.seats)?,
                })
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn invite_member(
        &self,
        request: Request<pb::InviteMemberRequest>,
    ) -> Result<Response<pb::InviteMemberResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let org = caller.scope(&r.org_id)?;
        let command_id = validate::command_id(&r.command_id)?;
        let email = validate::email("email", &r.email)?;
        let member = derived_id("p", &org, "invite", &command_id);
        let result = self
            .command(&caller, &r.org_id, &command_id, |c| {
                Ok(OrgCommand::InviteMember {
                    actor: c.person.clone(),
                    member: member.clone(),
                    email: email.clone(),
                    name: validate::name("name", &r.name)?,
                    role: validate::role(r.role)?,
                })
            })
            .await?;
        let (token, expires) = self
            .core
            .auth
            .put_invitation(org.as_str(), member.as_str(), &email)
            .await
            .map_err(status::auth)?;
        Ok(Response::new(pb::InviteMemberResponse {
            result: Some(result),
            person_id: member.to_string(),
            invitation_token: token,
            invitation_expires_at: expires,
        }))
    }

    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<Response<pb::InviteMemberResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let org = caller.scope(&r.org_id)?;
        let (client, schema, position) = self.core.directory(0).await?;
        let role = self
            .core
            .directory_role(&client, &schema, &org, &caller.person)
            .await?;
        if !matches!(role, Role::Owner | Role::Admin) {
            return Err(Status::permission_denied(
                "only owners and admins send invitations",
            ));
        }
        let person = validate::id("person_id", &r.person_id)?;
        let member = directory::members(&client, &schema, org.as_str())
            .await
            .map_err(|e| status::query(&e))?
            .into_iter()
            .find(|m| m.person_id == person.as_str() && m.active)
            .ok_or_else(|| Status::failed_precondition("no active member with this id"))?;
        if self
            .core
            .auth
            .has_account(org.as_str(), person.as_str())
            .await
            .map_err(status::auth)?
        {
            return Err(Status::failed_precondition(
                "this member accepted their invitation already",
            ));
        }
        let email = member
            .email
            .ok_or_else(|| Status::failed_precondition("this member's data was erased"))?;
        let (token, expires) = self
            .core
            .auth
            .put_invitation(org.as_str(), person.as_str(), &email)
            .await
            .map_err(status::auth)?;
        Ok(Response::new(pb::InviteMemberResponse {
            result: Some(pb::CommandResult {
                version: 0,
                position,
                duplicate: false,
            }),
            person_id: person.to_string(),
            invitation_token: token,
            invitation_expires_at: expires,
        }))
    }

    async fn change_role(
        &self,
        request: Request<pb::ChangeRoleRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let result = self
            .command(&caller, &r.org_id, &r.command_id, |c| {
                Ok(OrgCommand::ChangeRole {
                    actor: c.person.clone(),
                    member: validate::id("person_id", &r.person_id)?,
                    role: validate::role(r.role)?,
                })
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn deactivate_member(
        &self,
        request: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id)?;
        let member = validate::id("person_id", &r.person_id)?;
        let result = self
            .command(&caller, &r.org_id, &r.command_id, |c| {
                Ok(OrgCommand::Deactivate {
                    actor: c.person.clone(),
                    member: member.clone(),
                })
            })
            .await?;
        // The aggregate revoked the member's devices in the same commit; their
        // tokens stop working now, on every replica. A retried command id
        // comes through here again, so a crash before this line is repaired
        // by the client's retry.
        self.core
            .auth
            .revoke_person(caller.org.as_str(), member.as_str())
            .await
            .map_err(status::auth)?;
        Ok(Response::new(result))
    }

    async fn reactivate_member(
        &self,
        request: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let result = self
            .command(&caller, &r.org_id, &r.command_id, |c| {
                Ok(OrgCommand::Reactivate {
                    actor: c.person.clone(),
                    member: validate::id("person_id", &r.person_id)?,
                })
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let org = caller.scope(&r.org_id)?;
        let (client, schema, position) = self.core.directory(r.min_position).await?;
        if self
            .core
            .directory_role(&client, &schema, &org, &caller.person)
            .await?
            == Role::Employee
        {
            return Err(Status::permission_denied(
                "employees cannot list the organization's members",
            ));
        }
        let members = directory::members(&client, &schema, org.as_str())
            .await
            .map_err(|e| status::query(&e))?
            .into_iter()
            .map(|m| pb::Member {
                role: wire_role(&m.role),
                person_id: m.person_id,
                email: m.email.unwrap_or_default(),
                name: m.name.unwrap_or_default(),
                active: m.active,
            })
            .collect();
        Ok(Response::new(pb::ListMembersResponse { members, position }))
    }

    async fn enroll_device(
        &self,
        request: Request<pb::EnrollDeviceRequest>,
    ) -> Result<Response<pb::EnrollDeviceResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let org = caller.scope(&r.org_id)?;
        let command_id = validate::command_id(&r.command_id)?;
        let device = derived_id("d", &org, "device", &command_id);
        let result = self
            .command(&caller, &r.org_id, &command_id, |c| {
                Ok(OrgCommand::EnrollDevice {
                    actor: c.person.clone(),
                    device: device.clone(),
                    name: validate::name("name", &r.name)?,
                })
            })
            .await?;
        let token = match self
            .core
            .auth
            .put_device_token(org.as_str(), device.as_str(), caller.person.as_str())
            .await
        {
            Ok(token) => token,
            Err(AuthError::Revoked) => {
                return Err(Status::failed_precondition("this device was revoked"));
            }
            Err(e) => return Err(status::auth(e)),
        };
        // A deactivation may have revoked the device between the command and
        // the token: then the token must not live.
        if !self.core.device_active(&org, &device).await? {
            self.core
                .auth
                .revoke_device(org.as_str(), device.as_str())
                .await
                .map_err(status::auth)?;
            return Err(Status::failed_precondition("this device was revoked"));
        }
        Ok(Response::new(pb::EnrollDeviceResponse {
            result: Some(result),
            device_id: device.to_string(),
            device_token: token,
        }))
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let org = caller.scope(&r.org_id)?;
        let (client, schema, position) = self.core.directory(r.min_position).await?;
        let role = self
            .core
            .directory_role(&client, &schema, &org, &caller.person)
            .await?;
        let own_only = !matches!(role, Role::Owner | Role::Admin | Role::Auditor);
        let person = own_only.then(|| caller.person.as_str());
        let devices = directory::devices(&client, &schema, org.as_str(), person)
            .await
            .map_err(|e| status::query(&e))?
            .into_iter()
            .map(|d| pb::Device {
                device_id: d.device_id,
                person_id: d.person_id,
                name: d.name.unwrap_or_default(),
                revoked: d.revoked,
            })
            .collect();
        Ok(Response::new(pb::ListDevicesResponse { devices, position }))
    }

    async fn revoke_device(
        &self,
        request: Request<pb::RevokeDeviceRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.scope(&r.org_id)?;
        let device = validate::id("device_id", &r.device_id)?;
        let result = self
            .command(&caller, &r.org_id, &r.command_id, |c| {
                Ok(OrgCommand::RevokeDevice {
                    actor: c.person.clone(),
                    device: device.clone(),
                })
            })
            .await?;
        self.core
            .auth
            .revoke_device(caller.org.as_str(), device.as_str())
            .await
            .map_err(status::auth)?;
        Ok(Response::new(result))
    }
}
