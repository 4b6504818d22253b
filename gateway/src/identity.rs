//! `trackhrs.org.v1.Identity`: sign-up, log-in, refresh, log-out and
//! accepting an invitation. A browser's session keeps its refresh token in
//! a cookie ([`crate::web`]).

use tonic::{Request, Response, Status};
use trackhrs_app::identity::{self, SignUp, SignedIn};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::org::v1::identity_server::Identity;

use crate::forwarded::TrustedProxies;
use crate::status::status;
use crate::{validate, web};

/// The identity service.
pub struct IdentityService {
    identity: identity::Identity,
    /// The gateway serves TLS: browser cookies are `Secure`.
    secure_cookies: bool,
    /// Whose `X-Forwarded-For` tells the client's address.
    proxies: TrustedProxies,
}

impl IdentityService {
    /// A service over the identity use cases.
    pub fn new(
        identity: identity::Identity,
        secure_cookies: bool,
        proxies: TrustedProxies,
    ) -> Self {
        Self {
            identity,
            secure_cookies,
            proxies,
        }
    }
}

/// The session as the caller gets it: for a browser (`web`), the refresh
/// token goes into the cookie instead of the message.
fn session(
    signed_in: Result<SignedIn, trackhrs_app::AppError>,
    web: bool,
    secure: bool,
) -> Result<Response<pb::Session>, Status> {
    let s = signed_in.map_err(status)?;
    let mut message = pb::Session {
        org_id: s.org.to_string(),
        person_id: s.person,
        role: validate::role_to_wire(s.role) as i32,
        access_token: s.session.access_token,
        access_expires_at: s.session.access_expires_at,
        refresh_token: s.session.refresh_token,
        refresh_expires_at: s.session.refresh_expires_at,
    };
    if !web {
        return Ok(Response::new(message));
    }
    let token = std::mem::take(&mut message.refresh_token);
    let expires_at = message.refresh_expires_at;
    let mut response = Response::new(message);
    web::set_cookie(response.metadata_mut(), Some((&token, expires_at)), secure);
    Ok(response)
}

/// The refresh token of a call: the message's, else (from a browser) the
/// cookie's.
fn refresh_token(metadata: &tonic::metadata::MetadataMap, given: String) -> String {
    if given.is_empty() && web::is_web(metadata) {
        web::cookie_token(metadata).unwrap_or_default()
    } else {
        given
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let address = self.proxies.client(&request);
        let web = web::is_web(request.metadata());
        let r = request.into_inner();
        let sign_up = SignUp {
            command_id: validate::command_id(&r.command_id)?,
            org: validate::id("org_id", &r.org_id)?,
            org_name: validate::name("org_name", &r.org_name)?,
            owner_name: validate::name("owner_name", &r.owner_name)?,
            owner_email: validate::email("owner_email", &r.owner_email)?,
            password: r.password,
            seats: validate::seats(r.seats)?,
        };
        session(
            self.identity.sign_up(sign_up, address).await,
            web,
            self.secure_cookies,
        )
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let address = self.proxies.client(&request);
        let web = web::is_web(request.metadata());
        let r = request.into_inner();
        let org = validate::id("org_id", &r.org_id)?;
        session(
            self.identity
                .login(org, &r.email, r.password, address)
                .await,
            web,
            self.secure_cookies,
        )
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let web = web::is_web(request.metadata());
        let (metadata, _, r) = request.into_parts();
        let token = refresh_token(&metadata, r.refresh_token);
        session(
            self.identity.refresh(&token).await,
            web,
            self.secure_cookies,
        )
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let web = web::is_web(request.metadata());
        let (metadata, _, r) = request.into_parts();
        let token = refresh_token(&metadata, r.refresh_token);
        // A browser loses its cookie whatever happens: a log-out that could
        // not revoke the token must not leave it for the next page load.
        if let Err(e) = self.identity.logout(&token).await {
            let mut refused = status(e);
            if web {
                web::set_cookie(refused.metadata_mut(), None, self.secure_cookies);
            }
            return Err(refused);
        }
        let mut response = Response::new(pb::LogoutResponse {});
        if web {
            web::set_cookie(response.metadata_mut(), None, self.secure_cookies);
        }
        Ok(response)
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let address = self.proxies.client(&request);
        let web = web::is_web(request.metadata());
        let r = request.into_inner();
        let org = validate::id("org_id", &r.org_id)?;
        session(
            self.identity
                .accept_invitation(org, &r.invitation_token, r.password, address)
                .await,
            web,
            self.secure_cookies,
        )
    }
}
