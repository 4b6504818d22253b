//! Who is calling: the access token (people) or the device token (agents)
//! in the `authorization: Bearer <token>` metadata, and the org scope check.

use tonic::{Request, Status};
use trackhrs_domain::Token;
use trackhrs_domain::organization::Role;

use crate::auth::{Auth, DeviceIdentity};
use crate::{status, validate};

/// A person authenticated by an access token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Their organization.
    pub org: Token,
    /// Their person id.
    pub person: Token,
    /// Their role when the token was issued.
    pub role: Role,
}

impl Caller {
    /// The org named by a request, if it is the caller's own. Another org's
    /// id (existing or not, well-formed or not) gets the same
    /// PERMISSION_DENIED, so nothing is revealed about it.
    pub fn scope(&self, org_id: &str) -> Result<Token, Status> {
        if org_id == self.org.as_str() {
            Ok(self.org.clone())
        } else {
            Err(Status::permission_denied(status::NOT_YOURS))
        }
    }

    /// The actor recorded in commits.
    pub fn actor(&self) -> String {
        format!("person:{}", self.person)
    }
}

fn bearer<T>(request: &Request<T>) -> Result<&str, Status> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token> metadata"))
}

/// Authenticates a person's access token.
pub async fn person<T>(auth: &Auth, request: &Request<T>) -> Result<Caller, Status> {
    let claims = auth
        .verify_access(bearer(request)?)
        .await
        .map_err(status::auth)?;
    let org =
        Token::new(&claims.org).map_err(|_| Status::unauthenticated("invalid credentials"))?;
    let person =
        Token::new(&claims.sub).map_err(|_| Status::unauthenticated("invalid credentials"))?;
    let role = validate::role_from_name(&claims.role)
        .ok_or_else(|| Status::unauthenticated("invalid credentials"))?;
    Ok(Caller { org, person, role })
}

/// Authenticates a device token (checked against the shared credential
/// store on every request, so a revocation is seen at once by every replica).
pub async fn device<T>(auth: &Auth, request: &Request<T>) -> Result<DeviceIdentity, Status> {
    auth.authenticate_device(bearer(request)?)
        .await
        .map_err(status::auth)
}
