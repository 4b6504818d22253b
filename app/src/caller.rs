//! Who is calling: a person behind an access token, or a device behind its
//! device token; and the org scope check every request makes.

use std::sync::Arc;

use trackhrs_credentials::Auth;
pub use trackhrs_credentials::DeviceIdentity;
use trackhrs_domain::Token;
use trackhrs_domain::organization::Role;

use crate::error::{AppError, ErrorKind, NOT_YOURS};

/// A person authenticated by an access token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Their organization.
    pub org: Token,
    /// Their person id.
    pub person: Token,
}

impl Caller {
    /// The org named by a request, if it is the caller's own. Another org's
    /// id (existing or not, well-formed or not) gets the same answer, so
    /// nothing is revealed about it.
    pub fn scope(&self, org_id: &str) -> Result<Token, AppError> {
        if org_id == self.org.as_str() {
            Ok(self.org.clone())
        } else {
            Err(AppError::not_allowed(NOT_YOURS))
        }
    }

    /// The actor recorded in commits.
    pub fn actor(&self) -> String {
        format!("person:{}", self.person)
    }
}

/// Checks bearer tokens against the credential store.
#[derive(Clone)]
pub struct Authenticator {
    credentials: Arc<Auth>,
}

fn bad_credentials() -> AppError {
    AppError::new(ErrorKind::Unauthenticated, "invalid credentials")
}

impl Authenticator {
    pub(crate) fn new(credentials: Arc<Auth>) -> Self {
        Self { credentials }
    }

    /// The person an access token stands for.
    pub async fn person(&self, token: &str) -> Result<Caller, AppError> {
        let claims = self.credentials.verify_access(token).await?;
        let org = Token::new(&claims.org).map_err(|_| bad_credentials())?;
        let person = Token::new(&claims.sub).map_err(|_| bad_credentials())?;
        // The token's role is checked for form only: queries and commands
        // use the member's current role.
        Role::from_name(&claims.role).ok_or_else(bad_credentials)?;
        Ok(Caller { org, person })
    }

    /// The device a device token stands for (checked against the shared
    /// credential store on every request, so a revocation is seen at once by
    /// every replica).
    pub async fn device(&self, token: &str) -> Result<DeviceIdentity, AppError> {
        Ok(self.credentials.authenticate_device(token).await?)
    }
}
