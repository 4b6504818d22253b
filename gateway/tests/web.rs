//! Browsers: gRPC-Web on the gateway's own address (HTTP/1.1, as a browser
//! sends it), the web session's refresh token in an HttpOnly cookie that no
//! script can read, and the portal's files beside the services.

use axum::http::{HeaderMap, Method, Request, StatusCode};
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::*;

type Http = Client<HttpConnector, Full<Bytes>>;

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// What a gRPC-Web call answered: the HTTP headers, and the message or the
/// gRPC status code and message.
struct Reply<R> {
    headers: HeaderMap,
    result: Result<R, (i32, String)>,
}

impl<R> Reply<R> {
    fn ok(self) -> (HeaderMap, R) {
        match self.result {
            Ok(r) => (self.headers, r),
            Err((code, message)) => panic!("gRPC status {code}: {message}"),
        }
    }

    fn code(&self) -> i32 {
        match &self.result {
            Ok(_) => 0,
            Err((code, _)) => *code,
        }
    }

    fn set_cookie(&self) -> Option<String> {
        self.headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// One unary gRPC-Web call over HTTP/1.1, binary format.
async fn call<M: Message, R: Message + Default>(
    p: &Platform,
    path: &str,
    message: &M,
    headers: &[(&str, &str)],
) -> Reply<R> {
    let body = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&body);
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}{path}", p.gw().addr))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = http()
        .request(request.body(Full::new(Bytes::from(framed))).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "HTTP status of {path}");
    let (parts, body) = response.into_parts();
    let mut body = body.collect().await.unwrap().to_bytes();
    let mut message = None;
    let mut status = parts
        .headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().parse::<i32>().unwrap());
    let mut status_message = parts
        .headers
        .get("grpc-message")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    while body.remaining() >= 5 {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        let frame = body.split_to(len);
        if flag & 0x80 == 0 {
            message = Some(R::decode(frame).unwrap());
        } else {
            for line in std::str::from_utf8(&frame).unwrap().split("\r\n") {
                if let Some((name, value)) = line.split_once(':') {
                    match name.trim() {
                        "grpc-status" => status = Some(value.trim().parse().unwrap()),
                        "grpc-message" => status_message = value.trim().to_owned(),
                        _ => {}
                    }
                }
            }
        }
    }
    let result = match status {
        Some(0) | None => Ok(message.expect("a message")),
        Some(code) => Err((code, status_message)),
    };
    Reply {
        headers: parts.headers,
        result,
    }
}

const WEB: (&str, &str) = ("x-trackhrs-client", "web");
const UNAUTHENTICATED: i32 = 16;

fn login() -> pb::LoginRequest {
    pb::LoginRequest {
        org_id: "acme".into(),
        email: "olive@acme.test".into(),
        password: PASSWORD.into(),
    }
}

/// `name=value` of a `set-cookie` header, as a browser sends it back.
fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_keeps_its_refresh_token_in_an_http_only_cookie() {
    let p = Platform::start().await;
    p.sign_up("acme", 5).await;
    const LOGIN: &str = "/trackhrs.org.v1.Identity/Login";
    const REFRESH: &str = "/trackhrs.org.v1.Identity/Refresh";
    const LOGOUT: &str = "/trackhrs.org.v1.Identity/Logout";

    // A browser's log-in: the refresh token is in the cookie, not the message.
    let reply = call::<_, pb::Session>(&p, LOGIN, &login(), &[WEB]).await;
    let set = reply.set_cookie().expect("a cookie is set");
    let (_, session) = reply.ok();
    assert!(session.refresh_token.is_empty());
    assert!(!session.access_token.is_empty());
    assert!(
        set.starts_with("trackhrs_refresh=") && set.len() > 40,
        "{set}"
    );
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/trackhrs.org.v1.Identity/",
    ] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    let first = cookie_of(&set);

    // The access token works over gRPC-Web.
    let bearer = format!("Bearer {}", session.access_token);
    let (_, org) = call::<_, pb::Organization>(
        &p,
        "/trackhrs.org.v1.Organizations/GetOrganization",
        &pb::GetOrganizationRequest {
            org_id: "acme".into(),
            min_position: 0,
        },
        &[("authorization", &bearer)],
    )
    .await
    .ok();
    assert_eq!(org.org_id, "acme");

    // Refresh with the cookie: a new session and a new cookie; the old one
    // is spent.
    let empty = pb::RefreshRequest {
        refresh_token: String::new(),
    };
    let reply = call::<_, pb::Session>(&p, REFRESH, &empty, &[WEB, ("cookie", &first)]).await;
    let second = cookie_of(&reply.set_cookie().expect("a new cookie"));
    let (_, refreshed) = reply.ok();
    assert!(refreshed.refresh_token.is_empty());
    assert_eq!(refreshed.person_id, session.person_id);
    assert_ne!(second, first);
    let spent = call::<_, pb::Session>(&p, REFRESH, &empty, &[WEB, ("cookie", &first)]).await;
    assert_eq!(spent.code(), UNAUTHENTICATED);
    // Without a cookie, or from a client that is not a browser, an empty
    // token is no token.
    let none = call::<_, pb::Session>(&p, REFRESH, &empty, &[WEB]).await;
    assert_eq!(none.code(), UNAUTHENTICATED);
    let not_web = call::<_, pb::Session>(&p, REFRESH, &empty, &[("cookie", &second)]).await;
    assert_eq!(not_web.code(), UNAUTHENTICATED);

    // Log-out revokes the cookie's token and removes the cookie.
    let reply = call::<_, pb::LogoutResponse>(
        &p,
        LOGOUT,
        &pb::LogoutRequest {
            refresh_token: String::new(),
        },
        &[WEB, ("cookie", &second)],
    )
    .await;
    let cleared = reply.set_cookie().expect("the cookie is cleared");
    assert!(
        cleared.starts_with("trackhrs_refresh=; Max-Age=0"),
        "{cleared}"
    );
    reply.ok();
    let after = call::<_, pb::Session>(&p, REFRESH, &empty, &[WEB, ("cookie", &second)]).await;
    assert_eq!(after.code(), UNAUTHENTICATED);
    // A log-out that fails (here: a cookie that holds no token) still
    // removes the cookie, so the next page load is not signed in again.
    let failed = call::<_, pb::LogoutResponse>(
        &p,
        LOGOUT,
        &pb::LogoutRequest {
            refresh_token: String::new(),
        },
        &[WEB, ("cookie", "trackhrs_refresh=not-a-token")],
    )
    .await;
    assert_ne!(failed.code(), 0, "a malformed token was accepted");
    let cleared = failed
        .set_cookie()
        .expect("the cookie is cleared on failure too");
    assert!(
        cleared.starts_with("trackhrs_refresh=; Max-Age=0"),
        "{cleared}"
    );

    // Other clients over gRPC-Web get their refresh token in the message
    // and no cookie, as over gRPC.
    let reply = call::<_, pb::Session>(&p, LOGIN, &login(), &[]).await;
    assert!(reply.set_cookie().is_none());
    assert!(!reply.ok().1.refresh_token.is_empty());

    // A refused call keeps its code and message over gRPC-Web.
    let mut wrong = login();
    wrong.password = "not the password at all".into();
    let refused = call::<_, pb::Session>(&p, LOGIN, &wrong, &[WEB]).await;
    assert_eq!(refused.code(), UNAUTHENTICATED);
    assert!(refused.set_cookie().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_origins_get_no_cors_answer_and_files_come_with_a_strict_policy() {
    let p = Platform::start().await;
    // A preflight from another origin is not answered with CORS headers, so
    // a page elsewhere cannot call the gateway from a browser.
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri(format!(
            "http://{}/trackhrs.org.v1.Identity/Login",
            p.gw().addr
        ))
        .header("origin", "https://elsewhere.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-grpc-web")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = http().request(preflight).await.unwrap();
    assert!(!response.status().is_success(), "{}", response.status());
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // Paths that are not services are the portal's files, each with the
    // content security policy (a missing file is a 404 of the same kind).
    let get = Request::builder()
        .uri(format!("http://{}/no-such-file.js", p.gw().addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = http().request(get).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let policy = response
        .headers()
        .get("content-security-policy")
        .expect("a content security policy")
        .to_str()
        .unwrap();
    assert!(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"));

    // A gRPC-Web call to a service that does not exist is UNIMPLEMENTED.
    let missing = call::<_, pb::Session>(&p, "/trackhrs.nothing.v1.None/Call", &login(), &[]).await;
    assert_eq!(missing.code(), 12);
}
