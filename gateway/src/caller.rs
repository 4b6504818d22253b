//! Who is calling: the bearer token in the `authorization: Bearer <token>`
//! metadata, checked by the application's authenticator.

use tonic::{Request, Status};
use trackhrs_app::{Authenticator, Caller, DeviceIdentity};

use crate::status::status;

/// The token of an `authorization` header's value.
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, Status> {
    authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token> metadata"))
}

fn bearer<T>(request: &Request<T>) -> Result<&str, Status> {
    bearer_token(
        request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
    )
}

/// Authenticates a person's access token.
pub async fn person<T>(auth: &Authenticator, request: &Request<T>) -> Result<Caller, Status> {
    auth.person(bearer(request)?).await.map_err(status)
}

/// Authenticates a device token.
pub async fn device<T>(
    auth: &Authenticator,
    request: &Request<T>,
) -> Result<DeviceIdentity, Status> {
    auth.device(bearer(request)?).await.map_err(status)
}
