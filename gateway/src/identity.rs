//! `trackhrs.org.v1.Identity`: sign-up, log-in, refresh, log-out and
//! accepting an invitation.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trackhrs_domain::organization::{OrgCommand, Role};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::org::v1::identity_server::Identity;

use crate::auth::AuthError;
use crate::core::{Core, derived_id};
use crate::{status, validate};

/// The identity service.
pub struct IdentityService {
    core: Arc<Core>,
}

impl IdentityService {
    /// A service over the shared state.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    async fn session(
        &self,
        org: &str,
        person: &str,
        role: Role,
        family: Option<Vec<u8>>,
    ) -> Result<pb::Session, Status> {
        let session = self
            .core
            .auth
            .issue_session(org, person, validate::role_name(role), family)
            .await
            .map_err(status::auth)?;
        Ok(pb::Session {
            org_id: org.to_owned(),
            person_id: person.to_owned(),
            role: validate::role_to_wire(role) as i32,
            access_token: session.access_token,
            access_expires_at: session.access_expires_at,
            refresh_token: session.refresh_token,
            refresh_expires_at: session.refresh_expires_at,
        })
    }

    /// A session for a member who proved who they are, if they are active.
    async fn session_if_active(
        &self,
        org: &trackhrs_domain::Token,
        person: &str,
        family: Option<Vec<u8>>,
    ) -> Result<pb::Session, Status> {
        match self.core.active_role(org, person).await? {
            Some(role) => self.session(org.as_str(), person, role, family).await,
            None => Err(Status::permission_denied(
                "this member is deactivated or no longer in the organization",
            )),
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let address = request.remote_addr().map(|a| a.ip());
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let org = validate::id("org_id", &r.org_id)?;
        let org_name = validate::name("org_name", &r.org_name)?;
        let owner_name = validate::name("owner_name", &r.owner_name)?;
        let email = validate::email("owner_email", &r.owner_email)?;
        let password = validate::new_password("password", &r.password, &email)?;
        let seats = validate::seats(r.seats)?;
        let owner = derived_id("p", &org, "sign-up", &command_id);
        self.core
            .auth
            .throttle("sign-up", address)
            .await
            .map_err(status::auth)?;
        let hash = self
            .core
            .auth
            .hash_password(password.clone())
            .await
            .map_err(status::auth)?;
        let command = OrgCommand::Create {
            name: org_name,
            owner: owner.clone(),
            owner_email: email.clone(),
            owner_name,
            seats,
        };
        let actor = format!("person:{owner}");
        self.core
            .org_command(&org, &actor, &command_id, command)
            .await?;
        let stored = self
            .core
            .auth
            .put_account_if_absent(org.as_str(), owner.as_str(), &email, &hash)
            .await
            .map_err(status::auth)?;
        if !stored {
            // A retried sign-up keeps the first password: whoever repeats
            // the command id must know it, proven like a log-in (throttled).
            let person = self
                .core
                .auth
                .check_login(org.as_str(), &email, password, address)
                .await
                .map_err(status::auth)?;
            if person != owner.as_str() {
                return Err(Status::failed_precondition(
                    "the organization already exists",
                ));
            }
        }
        Ok(Response::new(
            self.session_if_active(&org, owner.as_str(), None).await?,
        ))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let address = request.remote_addr().map(|a| a.ip());
        let r = request.into_inner();
        let org = validate::id("org_id", &r.org_id)?;
        if r.email.is_empty() || r.email.len() > validate::MAX_EMAIL_LEN {
            return Err(Status::invalid_argument("email: must be 1 to 254 bytes"));
        }
        if r.password.is_empty()
            || r.password.chars().count() > crate::auth::password::MAX_PASSWORD_CHARS
        {
            return Err(Status::invalid_argument(
                "password: must be 1 to 128 characters",
            ));
        }
        let person = self
            .core
            .auth
            .check_login(org.as_str(), &r.email, r.password, address)
            .await
            .map_err(status::auth)?;
        Ok(Response::new(
            self.session_if_active(&org, &person, None).await?,
        ))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let r = request.into_inner();
        let (org, person, family) = self
            .core
            .auth
            .spend_refresh(&r.refresh_token)
            .await
            .map_err(status::auth)?;
        let org =
            trackhrs_domain::Token::new(org).map_err(|_| status::auth(AuthError::BadToken))?;
        Ok(Response::new(
            self.session_if_active(&org, &person, Some(family)).await?,
        ))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        self.core
            .auth
            .revoke_refresh(&request.into_inner().refresh_token)
            .await
            .map_err(status::auth)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let address = request.remote_addr().map(|a| a.ip());
        let r = request.into_inner();
        let org = validate::id("org_id", &r.org_id)?;
        let password = validate::new_password("password", &r.password, "")?;
        self.core
            .auth
            .throttle("invitation", address)
            .await
            .map_err(status::auth)?;
        // A token that cannot be accepted costs no hashing.
        self.core
            .auth
            .check_invitation(org.as_str(), &r.invitation_token)
            .await
            .map_err(status::auth)?;
        let hash = self
            .core
            .auth
            .hash_password(password)
            .await
            .map_err(status::auth)?;
        let accepted = self
            .core
            .auth
            .accept_invitation(org.as_str(), &r.invitation_token, &hash)
            .await
            .map_err(status::auth)?;
        Ok(Response::new(
            self.session_if_active(&org, &accepted.person_id, None)
                .await?,
        ))
    }
}
