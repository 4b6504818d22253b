//! Identity use cases: sign-up, log-in, refresh, log-out and accepting an
//! invitation. Each ends in a session only for an active member, read from
//! the organization's aggregate.

use std::net::IpAddr;
use std::sync::Arc;

use trackhrs_credentials::Auth;
use trackhrs_credentials::password::{MAX_PASSWORD_CHARS, policy_violation};
use trackhrs_domain::Token;
use trackhrs_domain::organization::{MAX_EMAIL_LEN, OrgCommand, OrgError, Role};

use crate::error::{AppError, ErrorKind};
use crate::org::{OrgCommands, derived_id};

/// A signed-in member's session: who they are and their tokens. Its `Debug`
/// hides the tokens.
pub struct SignedIn {
    /// Their organization.
    pub org: Token,
    /// Their person id.
    pub person: String,
    /// Their current role.
    pub role: Role,
    /// The tokens.
    pub session: trackhrs_credentials::Session,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("org", &self.org)
            .field("person", &self.person)
            .field("role", &self.role)
            .field("session", &self.session)
            .finish()
    }
}

/// A new organization with its first owner (input checked by the caller's
/// adapter, except the password, which is checked here).
pub struct SignUp {
    /// Command id (idempotency key).
    pub command_id: String,
    /// The new organization's id.
    pub org: Token,
    /// Its display name.
    pub org_name: String,
    /// The owner's display name.
    pub owner_name: String,
    /// The owner's e-mail address.
    pub owner_email: String,
    /// The owner's password.
    pub password: String,
    /// Seats bought.
    pub seats: u32,
}

/// Checks a new password against the policy.
fn new_password(field: &str, password: &str, email: &str) -> Result<(), AppError> {
    match policy_violation(password, email) {
        Some(reason) => Err(AppError::invalid(field, reason)),
        None => Ok(()),
    }
}

/// The identity use cases.
#[derive(Clone)]
pub struct Identity {
    credentials: Arc<Auth>,
    orgs: OrgCommands,
    operator_org: Option<Token>,
}

impl Identity {
    pub(crate) fn new(
        credentials: Arc<Auth>,
        orgs: OrgCommands,
        operator_org: Option<Token>,
    ) -> Self {
        Self {
            credentials,
            orgs,
            operator_org,
        }
    }

    /// The member's role, if they are active.
    async fn active_role(&self, org: &Token, person: &str) -> Result<Role, AppError> {
        let state = self.orgs.state(org).await?;
        Token::new(person)
            .ok()
            .and_then(|p| state.active_role(&p))
            .ok_or_else(|| {
                AppError::not_allowed("this member is deactivated or no longer in the organization")
            })
    }

    /// A session for a member who proved who they are, if they are active.
    async fn session_if_active(&self, org: &Token, person: &str) -> Result<SignedIn, AppError> {
        let role = self.active_role(org, person).await?;
        let session = self
            .credentials
            .issue_session(org.as_str(), person, role.name())
            .await?;
        Ok(SignedIn {
            org: org.clone(),
            person: person.to_owned(),
            role,
            session,
        })
    }

    /// Creates an organization and its owner's account, and signs them in.
    /// A retried sign-up keeps the first password: whoever repeats the
    /// command id must know it, proven like a log-in (throttled).
    #[tracing::instrument(skip_all)]
    pub async fn sign_up(
        &self,
        request: SignUp,
        address: Option<IpAddr>,
    ) -> Result<SignedIn, AppError> {
        new_password("password", &request.password, &request.owner_email)?;
        let SignUp {
            command_id,
            org,
            org_name,
            owner_name,
            owner_email,
            password,
            seats,
        } = request;
        // The operator org's owners operate every tenant's read models: it
        // is created deliberately (before gateways name it), never by a
        // stranger's sign-up, and answers as an org that exists.
        if self.operator_org.as_ref() == Some(&org) {
            return Err(OrgError::AlreadyExists.into());
        }
        let owner = derived_id("p", &org, "sign-up", &command_id);
        self.credentials.throttle("sign-up", address).await?;
        let hash = self.credentials.hash_password(password.clone()).await?;
        let command = OrgCommand::Create {
            name: org_name,
            owner: owner.clone(),
            owner_email: owner_email.clone(),
            owner_name,
            seats,
        };
        self.orgs
            .execute(&org, &format!("person:{owner}"), &command_id, command)
            .await?;
        let stored = self
            .credentials
            .put_account_if_absent(org.as_str(), owner.as_str(), &owner_email, &hash)
            .await?;
        if !stored {
            let person = self
                .credentials
                .check_login(org.as_str(), &owner_email, password, address)
                .await?;
            if person != owner.as_str() {
                return Err(AppError::precondition("the organization already exists"));
            }
        }
        self.session_if_active(&org, owner.as_str()).await
    }

    /// Checks an e-mail address and password and signs the member in.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        org: Token,
        email: &str,
        password: String,
        address: Option<IpAddr>,
    ) -> Result<SignedIn, AppError> {
        if email.is_empty() || email.len() > MAX_EMAIL_LEN {
            return Err(AppError::invalid(
                "email",
                format!("must be 1 to {MAX_EMAIL_LEN} bytes"),
            ));
        }
        if password.is_empty() || password.chars().count() > MAX_PASSWORD_CHARS {
            return Err(AppError::invalid(
                "password",
                format!("must be 1 to {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        let person = self
            .credentials
            .check_login(org.as_str(), email, password, address)
            .await?;
        self.session_if_active(&org, &person).await
    }

    /// Spends a refresh token for a new session of the same family. The
    /// token is spent only once the member is known to be active and the
    /// new session is stored with it, so a fault on the way leaves it
    /// usable for a retry.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &str) -> Result<SignedIn, AppError> {
        let (org, person) = self.credentials.refresh_holder(refresh_token).await?;
        let org = Token::new(org)
            .map_err(|_| AppError::new(ErrorKind::Unauthenticated, "invalid credentials"))?;
        let role = self.active_role(&org, &person).await?;
        let session = self
            .credentials
            .rotate_refresh(refresh_token, org.as_str(), &person, role.name())
            .await?;
        Ok(SignedIn {
            org,
            person,
            role,
            session,
        })
    }

    /// Revokes a refresh token.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, refresh_token: &str) -> Result<(), AppError> {
        Ok(self.credentials.revoke_refresh(refresh_token).await?)
    }

    /// Spends an invitation token, sets the member's password and signs
    /// them in.
    #[tracing::instrument(skip_all)]
    pub async fn accept_invitation(
        &self,
        org: Token,
        invitation_token: &str,
        password: String,
        address: Option<IpAddr>,
    ) -> Result<SignedIn, AppError> {
        new_password("password", &password, "")?;
        self.credentials.throttle("invitation", address).await?;
        // A token that cannot be accepted costs no hashing.
        self.credentials
            .check_invitation(org.as_str(), invitation_token)
            .await?;
        let hash = self.credentials.hash_password(password).await?;
        let accepted = self
            .credentials
            .accept_invitation(org.as_str(), invitation_token, &hash)
            .await?;
        self.session_if_active(&org, &accepted.person_id).await
    }
}
