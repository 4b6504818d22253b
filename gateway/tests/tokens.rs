//! Access, refresh and device tokens: expired, tampered, wrongly signed,
//! revoked and rotated tokens, revocation seen by every replica, and the
//! log-in throttle.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::Code;
use trackhrs_app::AppConfig;
use trackhrs_credentials::{AuthConfig, Claims, now_secs};
use trackhrs_schemas::agent::v1::GetPolicyRequest;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::*;

fn get_org(token: &str) -> tonic::Request<pb::GetOrganizationRequest> {
    authed(
        token,
        pb::GetOrganizationRequest {
            org_id: "acme".into(),
            min_position: 0,
        },
    )
}

async fn current_key(p: &Platform) -> (String, Vec<u8>) {
    let pg = p.db.connect().await.unwrap();
    let row = pg
        .query_one(
            "SELECT kid, secret FROM auth.signing_keys WHERE retired_at IS NULL \
             ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let kid: String = row.get(0);
    let secret = trackhrs_harness::test_kek()
        .unwrap(
            &trackhrs_credentials::keys::slot(&kid),
            row.get::<_, &[u8]>(1),
        )
        .unwrap()
        .to_vec();
    (kid, secret)
}

fn sign(kid: &str, secret: &[u8], claims: &Claims) -> String {
    let header = Header {
        kid: Some(kid.into()),
        ..Header::new(Algorithm::HS256)
    };
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_access_tokens_are_refused() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;
    let mut orgs = p.gw().orgs();
    orgs.get_organization(get_org(&owner.access_token))
        .await
        .unwrap();

    let (kid, secret) = current_key(&p).await;
    let claims = Claims {
        sub: owner.person_id.clone(),
        org: "acme".into(),
        role: "owner".into(),
        iat: now_secs(),
        exp: now_secs() + 600,
    };
    // Our own signing, to show the forgeries below fail for their flaw alone.
    let genuine = sign(&kid, &secret, &claims);
    orgs.get_organization(get_org(&genuine)).await.unwrap();

    let expired = sign(
        &kid,
        &secret,
        &Claims {
            iat: now_secs() - 3600,
            exp: now_secs() - 60,
            ..claims.clone()
        },
    );
    let wrong_key = sign(&kid, b"not the server's secret, 32 bytes", &claims);
    let unknown_kid = sign("nokey", &secret, &claims);
    // Tampered: the payload says auditor -> owner of another org, the
    // signature is the original one.
    let parts: Vec<&str> = owner.access_token.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["org"] = "other".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap()),
        parts[2]
    );
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    for (what, token) in [
        ("expired", expired.as_str()),
        ("wrongly signed", &wrong_key),
        ("unknown key id", &unknown_kid),
        ("tampered", &tampered),
        ("unsigned", &unsigned),
        ("garbage", "not-a-token"),
        ("a refresh token", &owner.refresh_token),
    ] {
        let status = assert_code(
            orgs.get_organization(get_org(token)).await,
            Code::Unauthenticated,
            what,
        );
        if what == "expired" {
            assert!(status.message().contains("expired"), "{}", status.message());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_verify_until_retired() {
    let p = Platform::start_with(AppConfig::default(), 2).await;
    let owner = p.sign_up("acme", 3).await;
    let (old_kid, _) = current_key(&p).await;
    let keys = p.replicas[0].app.credentials().keys();
    let new_kid = keys.rotate().await.unwrap();
    assert_ne!(new_kid, old_kid);
    // Replica 0 signs with the new key; replica 1 has never seen it and
    // learns it from the shared store on first use.
    let session = p
        .gw()
        .identity()
        .login(pb::LoginRequest {
            org_id: "acme".into(),
            email: "olive@acme.test".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let header = jsonwebtoken::decode_header(&session.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    p.replicas[1]
        .orgs()
        .get_organization(get_org(&session.access_token))
        .await
        .unwrap();
    // The token signed before the rotation still verifies ...
    p.replicas[1]
        .orgs()
        .get_organization(get_org(&owner.access_token))
        .await
        .unwrap();
    // ... until its key is retired.
    assert!(keys.retire(&old_kid).await.unwrap());
    assert_code(
        p.gw()
            .orgs()
            .get_organization(get_org(&owner.access_token))
            .await,
        Code::Unauthenticated,
        "token of a retired key",
    );
    assert!(
        keys.retire(&new_kid).await.is_err(),
        "the last key cannot be retired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_take_effect_on_every_replica() {
    let p = Platform::start_with(AppConfig::default(), 2).await;
    let owner = p.sign_up("acme", 3).await;
    let device = p.enroll(&owner, "laptop").await;
    for replica in &p.replicas {
        replica
            .agent()
            .get_policy(authed(&device.device_token, GetPolicyRequest {}))
            .await
            .unwrap();
    }
    p.replicas[0]
        .orgs()
        .revoke_device(authed(
            &owner.access_token,
            pb::RevokeDeviceRequest {
                command_id: "revoke-laptop".into(),
                org_id: "acme".into(),
                device_id: device.device_id.clone(),
            },
        ))
        .await
        .unwrap();
    // The very next request, on the other replica, is refused.
    assert_code(
        p.replicas[1]
            .agent()
            .get_policy(authed(&device.device_token, GetPolicyRequest {}))
            .await,
        Code::Unauthenticated,
        "revoked device on replica 1",
    );

    // Refresh tokens are single-use and revocable by log-out.
    let refreshed = p.replicas[1]
        .identity()
        .refresh(pb::RefreshRequest {
            refresh_token: owner.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_code(
        p.replicas[0]
            .identity()
            .refresh(pb::RefreshRequest {
                refresh_token: owner.refresh_token.clone(),
            })
            .await,
        Code::Unauthenticated,
        "spent refresh token",
    );
    p.replicas[0]
        .identity()
        .logout(pb::LogoutRequest {
            refresh_token: refreshed.refresh_token.clone(),
        })
        .await
        .unwrap();
    assert_code(
        p.replicas[1]
            .identity()
            .refresh(pb::RefreshRequest {
                refresh_token: refreshed.refresh_token,
            })
            .await,
        Code::Unauthenticated,
        "refresh token after log-out",
    );
}

fn throttled_config() -> AppConfig {
    AppConfig {
        auth: AuthConfig {
            account_failures: 3,
            address_attempts: 12,
            ..AuthConfig::default()
        },
        ..AppConfig::default()
    }
}

fn login(email: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        org_id: "acme".into(),
        email: email.into(),
        password: password.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_throttled_per_account_and_per_address() {
    let p = Platform::start_with(throttled_config(), 1).await;
    p.sign_up("acme", 3).await;
    let mut id = p.gw().identity();
    for _ in 0..3 {
        assert_code(
            id.login(login("olive@acme.test", "wrong password 123"))
                .await,
            Code::Unauthenticated,
            "wrong password",
        );
    }
    // The account is locked for this client for its window, even with the
    // right password (other clients: `limits.rs`).
    let status = assert_code(
        id.login(login("OLIVE@acme.test", PASSWORD)).await,
        Code::ResourceExhausted,
        "fourth attempt on the account",
    );
    assert!(
        status.message().contains("too many log-in attempts"),
        "{}",
        status.message()
    );
    // Other accounts from the same address go on until the address limit
    // (12 attempts in its window; 4 were made).
    for i in 0..8 {
        assert_code(
            id.login(login(&format!("nobody{i}@acme.test"), "wrong password 123"))
                .await,
            Code::Unauthenticated,
            "unknown account",
        );
    }
    assert_code(
        id.login(login("someone@acme.test", "wrong password 123"))
            .await,
        Code::ResourceExhausted,
        "thirteenth attempt from one address",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_timing_does_not_reveal_whether_an_email_exists() {
    let generous = AppConfig {
        auth: AuthConfig {
            account_failures: 100,
            address_attempts: 100,
            ..AuthConfig::default()
        },
        ..AppConfig::default()
    };
    let p = Platform::start_with(generous, 1).await;
    p.sign_up("acme", 3).await;
    let mut id = p.gw().identity();
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..6 {
        let started = Instant::now();
        let status = id
            .login(login("olive@acme.test", "wrong password 123"))
            .await;
        known.push(started.elapsed());
        assert_code(status, Code::Unauthenticated, "known e-mail");
        let started = Instant::now();
        let status = id
            .login(login(&format!("ghost{i}@acme.test"), "wrong password 123"))
            .await;
        unknown.push(started.elapsed());
        let status = assert_code(status, Code::Unauthenticated, "unknown e-mail");
        assert_eq!(status.message(), "wrong e-mail address or password");
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[3], unknown[3]);
    // Both verify an argon2id hash (tens of milliseconds); without the dummy
    // hash an unknown e-mail would answer in about a millisecond, 20 to 50
    // times faster. Other tests share the two cores, so the bound is loose.
    assert!(
        k > Duration::from_millis(5),
        "known-email log-in took {k:?}"
    );
    assert!(
        u * 4 > k && k * 4 > u,
        "median log-in time differs: known {k:?}, unknown {u:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_revokes_its_whole_family() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;
    let mut id = p.gw().identity();
    let refresh = |token: &str| pb::RefreshRequest {
        refresh_token: token.into(),
    };
    let second = id
        .refresh(refresh(&owner.refresh_token))
        .await
        .unwrap()
        .into_inner();
    // Someone kept a copy of the first token and presents it again ...
    assert_code(
        id.refresh(refresh(&owner.refresh_token)).await,
        Code::Unauthenticated,
        "a spent refresh token",
    );
    // ... so the newest token of that chain no longer works either.
    assert_code(
        id.refresh(refresh(&second.refresh_token)).await,
        Code::Unauthenticated,
        "the newest token of a reused family",
    );
    // Another log-in is another family, untouched.
    let other = id
        .login(login("olive@acme.test", PASSWORD))
        .await
        .unwrap()
        .into_inner();
    id.refresh(refresh(&other.refresh_token)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_do_not_slip_past_the_account_limit() {
    let p = Platform::start_with(
        AppConfig {
            auth: AuthConfig {
                account_failures: 3,
                address_attempts: 1000,
                ..AuthConfig::default()
            },
            ..AppConfig::default()
        },
        1,
    )
    .await;
    p.sign_up("acme", 3).await;
    let guesses: Vec<_> = (0..12)
        .map(|i| {
            let mut id = p.gw().identity();
            tokio::spawn(async move {
                id.login(login("olive@acme.test", &format!("wrong guess number {i}")))
                    .await
            })
        })
        .collect();
    let mut checked = 0;
    for guess in guesses {
        let status = guess.await.unwrap().unwrap_err();
        match status.code() {
            Code::Unauthenticated => checked += 1,
            Code::ResourceExhausted => {}
            other => panic!("unexpected {other:?}: {}", status.message()),
        }
    }
    assert!(
        checked <= 3,
        "{checked} passwords were checked, the limit is 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_in_the_log_revokes_the_token_even_without_the_gateway() {
    use trackhrs_domain::Token;
    use trackhrs_domain::organization::{OrgCommand, Organization};
    use trackhrs_nats::CommitMeta;
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;
    let device = p.enroll(&owner, "laptop").await;
    // The command is stored but the gateway never gets to revoke the token
    // (as if it died right after the append).
    trackhrs_commands::CommandHandler::new(p.store.clone())
        .execute::<Organization>(
            &Token::new("acme").unwrap(),
            &Token::new("org").unwrap(),
            OrgCommand::RevokeDevice {
                actor: Token::new(&owner.person_id).unwrap(),
                device: Token::new(&device.device_id).unwrap(),
            },
            &CommitMeta::new(
                "revoke-behind-the-gateway",
                "test",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_micros() as i64,
            ),
        )
        .await
        .unwrap();
    // The revocation policy applies the revocation to the credential store.
    let refused = trackhrs_harness::wait_until(Duration::from_secs(10), || {
        let mut agent = p.gw().agent();
        let token = device.device_token.clone();
        async move {
            match agent.get_policy(authed(&token, GetPolicyRequest {})).await {
                Err(status) if status.code() == Code::Unauthenticated => Some(()),
                _ => None,
            }
        }
    })
    .await;
    assert!(
        refused.is_some(),
        "the device token outlived its revocation in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_beyond_the_log_is_refused_at_once() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;
    let started = Instant::now();
    let status = assert_code(
        p.gw()
            .orgs()
            .get_organization(authed(
                &owner.access_token,
                pb::GetOrganizationRequest {
                    org_id: "acme".into(),
                    min_position: u64::MAX,
                },
            ))
            .await,
        Code::InvalidArgument,
        "min_position beyond the log",
    );
    assert!(status.message().starts_with("min_position:"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it waited for a position that cannot come"
    );
}
