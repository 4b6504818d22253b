//! Secrets and personal data never reach the logs: every log line the
//! gateway, the command handler, the event store, the projections and the
//! libraries under them write at TRACE level (through the product's log
//! filter) during sign-up, log-in, invitation, enrollment, refresh and an
//! upload that is projected is captured and searched for the passwords and
//! tokens, and for the names, e-mail addresses, titles and URLs.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::{GetPolicyRequest, Span, UploadBatchRequest};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Whatever the spec asks for, even tokio-postgres's statement log.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_filter(trackhrs_platform::log_filter(
                    "trace,tokio_postgres::query=trace",
                )),
        )
        .init();

    let p = Platform::start().await;
    let owner = p.sign_up("acme", 5).await;
    let invited = p
        .gw()
        .orgs()
        .invite_member(authed(
            &owner.access_token,
            pb::InviteMemberRequest {
                command_id: "invite-bob".into(),
                org_id: "acme".into(),
                email: "bob.quux@acme.test".into(),
                name: "Bobbington Quux".into(),
                role: pb::Role::Employee as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let bob_password = "bob's own long passphrase";
    let bob = p
        .gw()
        .identity()
        .accept_invitation(pb::AcceptInvitationRequest {
            org_id: "acme".into(),
            invitation_token: invited.invitation_token.clone(),
            password: bob_password.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let device = p.enroll(&bob, "laptop").await;
    p.gw()
        .agent()
        .get_policy(authed(&device.device_token, GetPolicyRequest {}))
        .await
        .unwrap();
    let refreshed = p
        .gw()
        .identity()
        .refresh(pb::RefreshRequest {
            refresh_token: bob.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // A failed log-in with a wrong password is logged nowhere either.
    let wrong = "a wrong but long password";
    let _ = p
        .gw()
        .identity()
        .login(pb::LoginRequest {
            org_id: "acme".into(),
            email: "bob.quux@acme.test".into(),
            password: wrong.into(),
        })
        .await;
    // A span with a title and a URL, applied by every read model.
    let now = trackhrs_credentials::now_secs() * 1000;
    let title = "Quarterly layoffs plan.docx";
    let url = "https://intranet.example/layoffs-2027";
    AgentIngestClient::new(p.gw().channel.clone())
        .upload_batch(authed(
            &device.device_token,
            UploadBatchRequest {
                batch_id: "b-1".into(),
                device_batch_seq: 1,
                spans: vec![Span {
                    start_unix_ms: now - 600_000,
                    end_unix_ms: now - 300_000,
                    app: "firefox".into(),
                    title: title.into(),
                    url: Some(url.into()),
                    active: true,
                }],
                retractions: vec![],
            },
        ))
        .await
        .unwrap();
    p.caught_up().await;
    let pg = p.db.connect().await.unwrap();
    for name in [
        trackhrs_projections::activity::NAME,
        trackhrs_projections::timeline::NAME,
    ] {
        let position = p.last_sequence().await;
        trackhrs_projections::wait_for_position(&pg, name, position, Duration::from_secs(10))
            .await
            .unwrap();
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.lines().count() > 50,
        "too little was logged to prove anything:\n{logs}"
    );
    for (what, secret) in [
        ("owner password", PASSWORD),
        ("member password", bob_password),
        ("wrong password", wrong),
        ("access token", owner.access_token.as_str()),
        ("refresh token", owner.refresh_token.as_str()),
        ("rotated refresh token", refreshed.refresh_token.as_str()),
        ("invitation token", invited.invitation_token.as_str()),
        ("device token", device.device_token.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
    }
    assert!(
        !logs.contains("$argon2id$"),
        "a password hash appears in the logs"
    );
    for (what, personal) in [
        ("owner's name", "Olive Owner"),
        ("owner's e-mail address", "olive@acme.test"),
        ("member's name", "Bobbington Quux"),
        ("member's e-mail address", "bob.quux@acme.test"),
        ("window title", title),
        ("URL", url),
    ] {
        assert!(!logs.contains(personal), "the {what} appears in the logs");
    }
    for row in pg
        .query("SELECT secret FROM auth.signing_keys", &[])
        .await
        .unwrap()
    {
        let secret: Vec<u8> = row.get(0);
        let shown = format!("{secret:?}");
        assert!(
            !logs.contains(&shown[1..shown.len() - 1]),
            "a signing key appears in the logs"
        );
    }
}
