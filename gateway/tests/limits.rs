//! Limits that keep one attacker, client or fault from starving or logging
//! out everyone else: the log-in throttle per account and client (behind
//! trusted proxies, IPv6 by /64, with backoff, keyed hashes), log-ins that
//! hold no database connection while they hash, the credential janitor,
//! refresh that spends and issues atomically, and the gateway's own limits
//! (device token before the body, decode limit, timeouts, streams, calls).

use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Code;
use tonic::codegen::http;
use tonic::transport::Channel;
use trackhrs_app::AppConfig;
use trackhrs_credentials::AuthConfig;
use trackhrs_gateway::Options as GatewayOptions;
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::{Span, UploadBatchRequest};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::org::v1::identity_client::IdentityClient;
use trackhrs_testkit::*;

const OLIVE: &str = "olive@acme.test";

fn login_from(from: &str, email: &str, password: &str) -> tonic::Request<pb::LoginRequest> {
    let mut request = tonic::Request::new(pb::LoginRequest {
        org_id: "acme".into(),
        email: email.into(),
        password: password.into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", from.parse().unwrap());
    request
}

/// A platform whose one gateway believes the X-Forwarded-For of callers on
/// loopback (the tests), as it would a TLS proxy's.
async fn behind_a_proxy(config: AppConfig) -> Platform {
    let mut p = Platform::start_with(config.clone(), 0).await;
    p.add_replica_with(
        config,
        GatewayOptions {
            trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
            ..GatewayOptions::default()
        },
    )
    .await;
    p
}

/// The platform's settings with these log-in limits.
fn throttled(account_failures: u32, address_attempts: u32) -> AppConfig {
    AppConfig {
        auth: AuthConfig {
            account_failures,
            address_attempts,
            ..AuthConfig::default()
        },
        ..AppConfig::default()
    }
}

/// `times` wrong passwords for olive from `from`.
async fn fail(id: &mut IdentityClient<Channel>, from: &str, times: usize) {
    for _ in 0..times {
        assert_code(
            id.login(login_from(from, OLIVE, "wrong password 123"))
                .await,
            Code::Unauthenticated,
            "a wrong password",
        );
    }
}

/// The right password from `from` is refused: blocked for `seconds`.
async fn blocked_for(id: &mut IdentityClient<Channel>, from: &str, seconds: u64) {
    let blocked = assert_code(
        id.login(login_from(from, OLIVE, PASSWORD)).await,
        Code::ResourceExhausted,
        "the guessing client, even with the right password",
    );
    assert!(
        blocked
            .message()
            .contains(&format!("try again in {seconds} seconds")),
        "{}",
        blocked.message()
    );
}

fn hex_sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_one_client_do_not_lock_out_another() {
    let p = behind_a_proxy(AppConfig {
        auth: AuthConfig {
            account_failures: 3,
            account_window: Duration::from_secs(5),
            address_attempts: 1000,
            ..AuthConfig::default()
        },
        ..AppConfig::default()
    })
    .await;
    p.sign_up("acme", 3).await;
    let mut id = p.gw().identity();
    // Someone guesses from one client until it is blocked ...
    fail(&mut id, "203.0.113.5", 3).await;
    blocked_for(&mut id, "203.0.113.5", 5).await;
    // ... and the owner, elsewhere, still gets in.
    id.login(login_from("198.51.100.7", OLIVE, PASSWORD))
        .await
        .expect("the owner from another client");

    // An IPv6 client is its /64: another address inside it is blocked too,
    // another /64 is not.
    fail(&mut id, "2001:db8:1:2::1", 3).await;
    assert_code(
        id.login(login_from("2001:db8:1:2:ffff::99", OLIVE, PASSWORD))
            .await,
        Code::ResourceExhausted,
        "another address in the guessing /64",
    );
    id.login(login_from("2001:db8:1:3::1", OLIVE, PASSWORD))
        .await
        .expect("another /64");

    // Each block lasts twice the one before.
    tokio::time::sleep(Duration::from_millis(5100)).await;
    fail(&mut id, "203.0.113.5", 3).await;
    blocked_for(&mut id, "203.0.113.5", 10).await;

    // The throttle's keys are keyed hashes: not the digest of anything a
    // reader of the table could guess.
    let pg = p.db.connect().await.unwrap();
    let keys: Vec<String> = pg
        .query("SELECT key FROM auth.login_throttle", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!keys.is_empty());
    for guessable in [
        format!("account:acme:{OLIVE}"),
        format!("account:acme:{OLIVE}:203.0.113.5"),
        "address:log-in:203.0.113.5".to_owned(),
    ] {
        assert!(
            !keys.contains(&hex_sha256(&guessable)),
            "a throttle key is the plain digest of {guessable:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_address_from_an_untrusted_peer_is_not_believed() {
    let p = Platform::start_with(throttled(2, 1000), 1).await;
    p.sign_up("acme", 3).await;
    let mut id = p.gw().identity();
    for i in 0..2 {
        assert_code(
            id.login(login_from(
                &format!("203.0.113.{i}"),
                OLIVE,
                "wrong password 123",
            ))
            .await,
            Code::Unauthenticated,
            "a wrong password",
        );
    }
    // Rotating the header does not make a new client.
    assert_code(
        id.login(login_from("203.0.113.77", OLIVE, PASSWORD)).await,
        Code::ResourceExhausted,
        "the same peer with another forged address",
    );
}

fn batch(seq: u64, start: i64) -> UploadBatchRequest {
    UploadBatchRequest {
        batch_id: format!("storm-{seq}"),
        device_batch_seq: seq,
        spans: (0..10)
            .map(|i| Span {
                start_unix_ms: start + i * 1_000,
                end_unix_ms: start + (i + 1) * 1_000,
                app: "code".into(),
                title: String::new(),
                url: None,
                active: true,
            })
            .collect(),
        retractions: vec![],
    }
}

fn now_ms() -> i64 {
    trackhrs_credentials::now_secs() * 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_go_on_while_wrong_passwords_are_hashed() {
    let p = Platform::start_with(throttled(100_000, 100_000), 1).await;
    let owner = p.sign_up("acme", 3).await;
    let device = p.enroll(&owner, "laptop").await;
    // Log-ins wait their turn to hash (four at a time). While each waited
    // holding a pooled connection, these (100 at a time, their
    // connection's stream limit) kept the replica's 8 busy and an upload's
    // device-token lookup queued behind them for seconds. (40 at a time
    // delayed it about 0.4 s here: the hashes are quick on this machine.)
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm: Vec<_> = (0..200)
        .map(|i| {
            let mut id = p.gw().identity();
            let done = done.clone();
            tokio::spawn(async move {
                let mut answered = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = id
                        .login(login_from(
                            "203.0.113.9",
                            OLIVE,
                            &format!("wrong password {i}"),
                        ))
                        .await;
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The agent's own connection (the storm's holds its 100 streams).
    let agent = Channel::from_shared(format!("http://{}", p.gw().addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut ingest = AgentIngestClient::new(agent);
    let start = now_ms() - 3_600_000;
    for seq in 1..=20u64 {
        // An agent's deadline.
        let mut request = authed(
            &device.device_token,
            batch(seq, start + seq as i64 * 10_000),
        );
        request.set_timeout(Duration::from_secs(1));
        ingest
            .upload_batch(request)
            .await
            .unwrap_or_else(|e| panic!("upload {seq} failed during the log-in storm: {e}"));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    // The storm was on while the uploads went.
    let mut answered = 0;
    for task in storm {
        answered += task.await.unwrap();
    }
    assert!(answered >= 40, "only {answered} log-ins were answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_deletes_what_nothing_needs_and_keeps_the_rest() {
    let p = Platform::start_with(
        AppConfig {
            janitor_every: Duration::from_millis(300),
            ..AppConfig::default()
        },
        1,
    )
    .await;
    p.sign_up("acme", 3).await;
    let pg = p.db.connect().await.unwrap();
    pg.batch_execute(
        "INSERT INTO auth.login_throttle (key, window_start, count) VALUES
             ('idle', now() - interval '2 days', 3),
             ('recent', now() - interval '1 hour', 3);
         INSERT INTO auth.login_throttle (key, window_start, count, strikes, blocked_until) VALUES
             ('blocked', now() - interval '2 days', 0, 6, now() + interval '1 hour');
         INSERT INTO auth.refresh_tokens (token_hash, org_id, person_id, issued_at, expires_at, revoked_at, family) VALUES
             ('\\x01', 'acme', 'p1', now() - interval '40 days', now() - interval '10 days', now() - interval '35 days', '\\x01'),
             ('\\x02', 'acme', 'p1', now() - interval '35 days', now() - interval '5 days', NULL, '\\x01'),
             ('\\x03', 'acme', 'p1', now() - interval '40 days', now() - interval '10 days', now() - interval '20 days', '\\x03'),
             ('\\x04', 'acme', 'p1', now() - interval '20 days', now() + interval '10 days', NULL, '\\x03');",
    )
    .await
    .unwrap();
    let left = async || -> (Vec<String>, Vec<Vec<u8>>) {
        let keys = pg
            .query(
                "SELECT key FROM auth.login_throttle WHERE key IN ('idle', 'recent', 'blocked') ORDER BY key",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let tokens = pg
            .query(
                "SELECT token_hash FROM auth.refresh_tokens WHERE org_id = 'acme' AND person_id = 'p1' \
                 ORDER BY token_hash",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        (keys, tokens)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (keys, tokens) = left().await;
        if keys.len() == 2 && tokens.len() == 2 {
            // Idle counts go; a live block stays. A family whose every token
            // expired goes; a spent token whose family lives stays, so a copy
            // of it presented again still revokes the family.
            assert_eq!(keys, ["blocked", "recent"]);
            assert_eq!(tokens, [vec![3u8], vec![4u8]]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the janitor left {keys:?} and {tokens:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn refresh(token: &str) -> pb::RefreshRequest {
    pb::RefreshRequest {
        refresh_token: token.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_fails_on_the_way_leaves_its_token_usable() {
    let mut p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;
    let mut id = p.gw().identity();
    // The member's state is read from the event store: with NATS down the
    // refresh fails after the token was found ...
    p.nats.kill();
    let failed = id.refresh(refresh(&owner.refresh_token)).await;
    assert!(failed.is_err(), "a refresh with NATS down succeeded");
    p.nats.restart().await.unwrap();
    // ... and the client's retry is a retry, not a theft.
    let deadline = Instant::now() + Duration::from_secs(30);
    let session = loop {
        match id.refresh(refresh(&owner.refresh_token)).await {
            Ok(session) => break session.into_inner(),
            Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the retried refresh was refused: {e}"),
        }
    };
    id.refresh(refresh(&session.refresh_token))
        .await
        .expect("the new session's token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_refreshes_of_one_token_no_successor_stays_alive() {
    let p = Platform::start().await;
    p.sign_up("acme", 3).await;
    for round in 0..20 {
        let session = p
            .gw()
            .identity()
            .login(login_from("203.0.113.1", OLIVE, PASSWORD))
            .await
            .unwrap()
            .into_inner();
        let (mut first, mut second) = (p.gw().identity(), p.gw().identity());
        let (a, b) = tokio::join!(
            first.refresh(refresh(&session.refresh_token)),
            second.refresh(refresh(&session.refresh_token)),
        );
        let winners: Vec<pb::Session> = [a, b]
            .into_iter()
            .filter_map(|r| r.ok().map(|s| s.into_inner()))
            .collect();
        assert!(winners.len() <= 1, "round {round}: both refreshes won");
        // One token presented twice is a copy: its family goes, the
        // winner's new token with it.
        for winner in winners {
            assert_code(
                p.gw()
                    .identity()
                    .refresh(refresh(&winner.refresh_token))
                    .await,
                Code::Unauthenticated,
                "the successor of a token refreshed twice",
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_from_before_families_still_refreshes() {
    let mut p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;
    let pg = p.db.connect().await.unwrap();
    // The table as it was before the family column was filled in.
    pg.batch_execute(
        "ALTER TABLE auth.refresh_tokens ALTER COLUMN family DROP NOT NULL;
         UPDATE auth.refresh_tokens SET family = NULL;
         COMMENT ON SCHEMA auth IS NULL;",
    )
    .await
    .unwrap();
    // A replica of this version migrates it as it opens.
    p.add_replica(AppConfig::default()).await;
    let fresh = p.replicas[1].identity();
    let session = fresh
        .clone()
        .refresh(refresh(&owner.refresh_token))
        .await
        .expect("an old refresh token")
        .into_inner();
    fresh
        .clone()
        .refresh(refresh(&session.refresh_token))
        .await
        .expect("its successor");
    let nulls: i64 = pg
        .query_one(
            "SELECT count(*) FROM auth.refresh_tokens WHERE family IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nulls, 0);
}

/// A raw HTTP/2 connection to the gateway, to send what a tonic client
/// would not: headers, then a body that stalls.
async fn h2_connection(addr: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send.ready().await.unwrap()
}

/// Starts an upload with `token` and sends only the first `sent` bytes of
/// a body that announces `announced` bytes; returns the response future
/// and the stream (kept open: dropping it would end the call).
async fn stalled_upload(
    send: &mut h2::client::SendRequest<Bytes>,
    token: &str,
    announced: u32,
    sent: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::builder()
        .method("POST")
        .uri("http://gateway/trackhrs.agent.v1.AgentIngest/UploadBatch")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&announced.to_be_bytes());
    frame.resize(sent, 0x0a);
    body.send_data(Bytes::from(frame), false).unwrap();
    (response, body)
}

/// The grpc-status of a response (in its headers when it has no body).
fn grpc_status(response: &http::Response<h2::RecvStream>) -> Option<String> {
    response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_checks_the_device_token_before_it_reads_the_body() {
    let mut p = Platform::start_with(AppConfig::default(), 0).await;
    p.add_replica_with(
        AppConfig::default(),
        GatewayOptions {
            request_timeout: Duration::from_secs(2),
            ..GatewayOptions::default()
        },
    )
    .await;
    let owner = p.sign_up("acme", 3).await;
    let device = p.enroll(&owner, "laptop").await;
    let mut send = h2_connection(p.gw().addr).await;

    // A made-up token with a body that never comes: answered at once.
    let bogus = format!("thd_{}", "A".repeat(43));
    let (response, _body) = stalled_upload(&mut send, &bogus, 200_000, 1024).await;
    let response = tokio::time::timeout(Duration::from_secs(1), response)
        .await
        .expect("a bad token waited for the body")
        .unwrap();
    assert_eq!(grpc_status(&response).as_deref(), Some("16"));
    // The server's settings arrived with it: a bounded number of streams.
    assert!(
        send.current_max_send_streams() <= 100,
        "the gateway allows {} streams per connection",
        send.current_max_send_streams()
    );

    // A good token with a body that stalls: cancelled at the request
    // timeout, not held open for ever.
    let started = Instant::now();
    let (response, _body) = stalled_upload(&mut send, &device.device_token, 200_000, 1024).await;
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("a stalled body was waited for beyond the request timeout")
        .unwrap();
    assert_eq!(grpc_status(&response).as_deref(), Some("1"));
    assert!(started.elapsed() >= Duration::from_secs(2));

    // A message larger than twice the batch limit is not read at all.
    let before = p.last_sequence().await;
    let mut ingest = AgentIngestClient::new(p.gw().channel.clone());
    let mut huge = batch(1, now_ms() - 3_600_000);
    huge.spans[0].title = "x".repeat(600 * 1024);
    let refused = assert_code(
        ingest
            .upload_batch(authed(&device.device_token, huge))
            .await,
        Code::OutOfRange,
        "a 600 KiB upload",
    );
    assert!(
        refused.message().contains("too large"),
        "{}",
        refused.message()
    );
    assert_eq!(p.last_sequence().await, before, "something was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_gateway_limit_are_refused_at_once() {
    let mut p = Platform::start_with(AppConfig::default(), 0).await;
    p.add_replica_with(
        AppConfig::default(),
        GatewayOptions {
            max_calls: 1,
            ..GatewayOptions::default()
        },
    )
    .await;
    let owner = p.sign_up("acme", 3).await;
    let device = p.enroll(&owner, "laptop").await;
    let mut send = h2_connection(p.gw().addr).await;
    // One call in flight (its body stalled) ...
    let (_response, _body) = stalled_upload(&mut send, &device.device_token, 200_000, 1024).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... and the next one, on another connection, is turned away, to be
    // tried again (an agent keeps its batch); health checks still answer.
    let mut health = tonic_health::pb::health_client::HealthClient::new(p.gw().channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a health check beyond the limit");
    let started = Instant::now();
    assert_code(
        p.gw()
            .orgs()
            .get_organization(authed(
                &owner.access_token,
                pb::GetOrganizationRequest {
                    org_id: "acme".into(),
                    min_position: 0,
                },
            ))
            .await,
        Code::Unavailable,
        "a call beyond the limit",
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_device_is_held_to_its_quota_and_its_org_to_the_orgs() {
    use trackhrs_app::ingest::quota::Rate;
    let size = prost::Message::encoded_len(&batch(1, now_ms() - 3_600_000)) as f64;
    // Two batches per device, four and a half per org; nothing refills.
    let config = AppConfig {
        ingest: trackhrs_app::IngestConfig {
            max_batch_bytes: 2 * size as usize,
            device_quota: Rate {
                bytes_per_sec: 0.01,
                burst_bytes: 2.5 * size,
            },
            org_quota: Rate {
                bytes_per_sec: 0.01,
                burst_bytes: 4.5 * size,
            },
            ..Default::default()
        },
        ..AppConfig::default()
    };
    let p = Platform::start_with(config, 1).await;
    let owner = p.sign_up("acme", 5).await;
    let mut ingest = AgentIngestClient::new(p.gw().channel.clone());
    let start = now_ms() - 3_600_000;
    let mut upload = async |device: &pb::EnrollDeviceResponse, seq: u64| {
        ingest
            .upload_batch(authed(
                &device.device_token,
                batch(seq, start + seq as i64 * 20_000),
            ))
            .await
    };
    let a = p.enroll(&owner, "a").await;
    let b = p.enroll(&owner, "b").await;
    let c = p.enroll(&owner, "c").await;
    upload(&a, 1).await.unwrap();
    upload(&a, 2).await.unwrap();
    let before = p.last_sequence().await;
    let refused = assert_code(
        upload(&a, 3).await,
        Code::ResourceExhausted,
        "a third batch",
    );
    assert!(
        refused
            .message()
            .starts_with("this device uploads faster than allowed"),
        "{}",
        refused.message()
    );
    let wait: u64 = refused
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 60, "retry after {wait} s");
    assert_eq!(
        p.last_sequence().await,
        before,
        "a refused batch was stored"
    );
    // Another device of the org goes on, until the org's quota is used.
    upload(&b, 1).await.unwrap();
    upload(&b, 2).await.unwrap();
    let refused = assert_code(
        upload(&c, 1).await,
        Code::ResourceExhausted,
        "the org's fifth batch",
    );
    assert!(
        refused
            .message()
            .starts_with("this organization's devices upload faster than allowed"),
        "{}",
        refused.message()
    );
    // Another org is not held back by this one.
    let other = p.sign_up("globex", 3).await;
    let d = p.enroll(&other, "d").await;
    upload(&d, 1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_names_at_most_a_thousand_people() {
    use trackhrs_schemas::activity::v1 as apb;
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;
    let mut activity = trackhrs_schemas::activity::v1::activity_client::ActivityClient::new(
        p.gw().channel.clone(),
    );
    let ask = |n: usize| {
        authed(
            &owner.access_token,
            apb::GetDashboardRequest {
                org_id: "acme".into(),
                from: "2026-11-02".into(),
                to: "2026-11-02".into(),
                person_ids: (0..n).map(|i| format!("p{i}")).collect(),
                min_position: 0,
            },
        )
    };
    let refused = assert_code(
        activity.get_dashboard(ask(1001)).await,
        Code::InvalidArgument,
        "1,001 people",
    );
    assert!(
        refused.message().starts_with("person_ids: at most 1000"),
        "{}",
        refused.message()
    );
    activity
        .get_dashboard(ask(1000))
        .await
        .expect("1,000 people");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_runs_too_long_is_cancelled() {
    use trackhrs_projections::{activity, live_schema, timeline};
    use trackhrs_schemas::activity::v1 as apb;
    let config = AppConfig {
        read_timeout: Duration::from_secs(1),
        ..AppConfig::default()
    };
    let p = Platform::start_with(config, 1).await;
    let owner = p.sign_up("acme", 3).await;
    let device = p.enroll(&owner, "laptop").await;
    let mut client = apb::activity_client::ActivityClient::new(p.gw().channel.clone());
    let dashboard = || {
        let mut r = authed(
            &owner.access_token,
            apb::GetDashboardRequest {
                org_id: "acme".into(),
                from: "2026-11-02".into(),
                to: "2026-11-02".into(),
                person_ids: Vec::new(),
                min_position: 0,
            },
        );
        r.set_timeout(Duration::from_secs(20));
        r
    };
    let device_timeline = || {
        let mut r = authed(
            &owner.access_token,
            apb::GetDeviceTimelineRequest {
                org_id: "acme".into(),
                device_id: device.device_id.clone(),
                from_unix_ms: 1_700_000_000_000,
                to_unix_ms: 1_700_000_000_000 + 3_600_000,
                min_position: 0,
            },
        );
        r.set_timeout(Duration::from_secs(20));
        r
    };

    // Another session holds the tables the reads need: each read waits
    // until the read timeout cancels it, not until the client gives up.
    let mut pg = p.db.connect().await.unwrap();
    let activity_schema = live_schema(&pg, activity::NAME).await.unwrap().unwrap();
    let timeline_schema = live_schema(&pg, timeline::NAME).await.unwrap().unwrap();
    let lock = pg.transaction().await.unwrap();
    lock.batch_execute(&format!(
        "LOCK TABLE {activity_schema}.org_state, {timeline_schema}.events IN ACCESS EXCLUSIVE MODE"
    ))
    .await
    .unwrap();
    let started = Instant::now();
    let cancelled = assert_code(
        client.get_dashboard(dashboard()).await,
        Code::DeadlineExceeded,
        "a dashboard behind a lock",
    );
    assert!(
        cancelled.message().contains("read timeout"),
        "{}",
        cancelled.message()
    );
    let cancelled = assert_code(
        client.get_device_timeline(device_timeline()).await,
        Code::DeadlineExceeded,
        "a timeline behind a lock",
    );
    assert!(
        cancelled.message().contains("read timeout"),
        "{}",
        cancelled.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // Once the tables are free, both answer.
    lock.rollback().await.unwrap();
    client
        .get_dashboard(dashboard())
        .await
        .expect("the dashboard");
    client
        .get_device_timeline(device_timeline())
        .await
        .expect("the timeline");
}
