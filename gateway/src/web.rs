//! The browser's side of the gateway: the portal's files on the gateway's
//! own address (so gRPC-Web calls are same-origin and no CORS is needed),
//! and the web session's refresh token in an HttpOnly cookie.
//!
//! A browser client marks its identity calls with [`WEB_CLIENT_HEADER`];
//! the session it gets back has no refresh token in the message, which the
//! response sets as a cookie instead, so no script on the page can read it.
//! Refresh and log-out with an empty token take it from that cookie. The
//! cookie's path is the identity service, so no other call carries it.

use std::convert::Infallible;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::metadata::{MetadataMap, MetadataValue};
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// Request header a browser client sends on identity calls.
pub const WEB_CLIENT_HEADER: &str = "x-trackhrs-client";

/// Name of the cookie that holds a web session's refresh token.
pub const REFRESH_COOKIE: &str = "trackhrs_refresh";

/// Path of the refresh cookie: sent only with the identity service's calls.
const COOKIE_PATH: &str = "/trackhrs.org.v1.Identity/";

/// What every portal file is served with: scripts and calls only from the
/// gateway's own origin, never inside a frame.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; \
     img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

/// Whether the call comes from a browser client.
pub(crate) fn is_web(metadata: &MetadataMap) -> bool {
    metadata
        .get(WEB_CLIENT_HEADER)
        .is_some_and(|v| v.as_bytes() == b"web")
}

/// The refresh token of the request's cookie, if it carries one.
pub(crate) fn cookie_token(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

/// Sets the refresh cookie on a response: `token` until `expires_at` (Unix
/// seconds), or, with `None`, an expired empty cookie that removes it.
/// `secure` (a gateway serving TLS) keeps the browser from ever sending it
/// in plaintext.
pub(crate) fn set_cookie(metadata: &mut MetadataMap, token: Option<(&str, i64)>, secure: bool) {
    let attributes = format!(
        "Path={COOKIE_PATH}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    let value = match token {
        Some((token, expires_at)) => {
            let max_age = (expires_at - chrono::Utc::now().timestamp()).max(0);
            format!("{REFRESH_COOKIE}={token}; Max-Age={max_age}; {attributes}")
        }
        None => format!("{REFRESH_COOKIE}=; Max-Age=0; {attributes}"),
    };
    match MetadataValue::try_from(value) {
        Ok(v) => {
            metadata.insert("set-cookie", v);
        }
        Err(_) => tracing::warn!("refresh token is not a valid cookie value; cookie not set"),
    }
}

/// The router's answer to every path that is not a gRPC service: the
/// portal's files for GET and HEAD (when the gateway serves a portal), a
/// gRPC UNIMPLEMENTED for anything else (a call to an unknown service).
pub(crate) async fn fallback(
    portal: Option<PathBuf>,
    request: Request,
) -> Result<Response, Infallible> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let (parts, ()) = tonic::Status::unimplemented("no such service")
            .into_http::<()>()
            .into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let Some(dir) = portal else {
        return Ok((StatusCode::NOT_FOUND, "this gateway serves no portal").into_response());
    };
    let Ok(mut response) = ServeDir::new(dir).oneshot(request).await;
    secure(response.headers_mut());
    Ok(response.map(Body::new))
}

fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("cookie", value.parse().unwrap());
        m
    }

    #[test]
    fn the_refresh_token_is_found_among_other_cookies() {
        let m = with_cookie("a=1; trackhrs_refresh=thr_abc.def; b=2");
        assert_eq!(cookie_token(&m).as_deref(), Some("thr_abc.def"));
        assert_eq!(cookie_token(&with_cookie("trackhrs_refresh=")), None);
        assert_eq!(cookie_token(&with_cookie("other=x")), None);
        assert_eq!(cookie_token(&MetadataMap::new()), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped_to_the_identity_service() {
        let mut m = MetadataMap::new();
        set_cookie(
            &mut m,
            Some(("tok", chrono::Utc::now().timestamp() + 100)),
            false,
        );
        let v = m.get("set-cookie").unwrap().to_str().unwrap().to_owned();
        assert!(v.starts_with("trackhrs_refresh=tok; Max-Age="), "{v}");
        assert!(
            v.contains("HttpOnly") && v.contains("SameSite=Strict") && !v.contains("Secure"),
            "{v}"
        );
        assert!(v.contains("Path=/trackhrs.org.v1.Identity/"), "{v}");
        set_cookie(&mut m, None, false);
        let v = m.get("set-cookie").unwrap().to_str().unwrap();
        assert!(v.starts_with("trackhrs_refresh=; Max-Age=0;"), "{v}");
        // Behind TLS, also Secure (the removal too).
        set_cookie(
            &mut m,
            Some(("tok", chrono::Utc::now().timestamp() + 100)),
            true,
        );
        assert!(
            m.get("set-cookie")
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        set_cookie(&mut m, None, true);
        assert!(
            m.get("set-cookie")
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
    }

    #[test]
    fn only_the_web_marker_makes_a_web_call() {
        let mut m = MetadataMap::new();
        assert!(!is_web(&m));
        m.insert(WEB_CLIENT_HEADER, "web".parse().unwrap());
        assert!(is_web(&m));
        m.insert(WEB_CLIENT_HEADER, "agent".parse().unwrap());
        assert!(!is_web(&m));
    }
}
